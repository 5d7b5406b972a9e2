"""What operators need from a running app: a health check and a request id on every log line.

``GET /healthz`` answers 200 when the database answers a query and its schema is at the
migration head this code expects, else 503 with what is wrong (a load balancer takes the
instance out; a deploy that forgot ``flask --app wsgi setup`` shows up at once). It needs no
sign-in and says nothing a stranger could use beyond "ok" or the failing part.

Every request gets an id: the caller's ``X-Request-Id`` when it is a sane token (a proxy's or a
client's, so one id follows a request across systems), else a fresh random one. It is sent back
in ``X-Request-Id`` and stamped on every log record written while the request runs, so the
traceback of a 500 can be found from what the user's browser saw.
"""
import functools
import logging
import re
import secrets
import time
from pathlib import Path

import sqlalchemy as sa
from flask import Blueprint, Flask, g, has_request_context, jsonify, request

from core.extensions import db

bp = Blueprint("operations", __name__)

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def request_id() -> str | None:
    """The current request's id (None outside a request)."""
    return g.get("request_id") if has_request_context() else None


def _assign_request_id() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _SANE_ID.match(given) else secrets.token_hex(12)


def _send_request_id(response):
    if request_id():
        response.headers[REQUEST_ID_HEADER] = request_id()
    return response


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record ("-" outside a request), for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id() or "-"
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr with the request id in every line (servers; tests keep pytest's capture)."""
    root = logging.getLogger()
    if not any(isinstance(f, RequestIdFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(level)


@functools.cache
def expected_heads() -> frozenset[str]:
    """The migration head(s) this code was written for (read once from ``migrations/``)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


@bp.get("/healthz")
def healthz():
    """200 ``{"status": "ok", ...}`` when the database answers and is migrated; else 503."""
    started = time.perf_counter()
    checks = {}
    try:
        versions = set(db.session.scalars(sa.text("SELECT version_num FROM alembic_version")))
        checks["database"] = "ok"
        checks["schema"] = "ok" if versions == expected_heads() else "outdated"
    except Exception:  # noqa: BLE001 - any failure to answer is "unavailable", logged with its id
        logging.getLogger(__name__).exception("health check: database unavailable")
        checks["database"] = "unavailable"
    finally:
        db.session.rollback()  # end the read at once (SQLite's next writer must not wait for it)
    healthy = all(value == "ok" for value in checks.values()) and "schema" in checks
    body = {"status": "ok" if healthy else "unavailable", "checks": checks,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1)}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if healthy else 503


def init_app(app: Flask) -> None:
    """Register ``/healthz`` and the request-id hooks (first, so every later hook logs with it)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _assign_request_id)
    app.after_request(_send_request_id)
    app.register_blueprint(bp)
