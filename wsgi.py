"""Entry point for ``flask --app wsgi`` and ``gunicorn wsgi:app``.

A setting the service cannot run with (core.config.ConfigError: a bad DATABASE_URL, a database
that does not answer, a Stripe key without its webhook secret) stops the start with one line on
stderr and exit status 1, instead of a server that answers every request with a 500.
"""
import sys

from core.app import create_app
from core.config import ConfigError, check_database
from core.extensions import db


def _create_checked_app():
    app = create_app()
    with app.app_context():
        check_database(db.engine)
    return app


try:
    app = _create_checked_app()
except ConfigError as error:
    print(f"湘西香伴无法启动：{error}", file=sys.stderr)
    raise SystemExit(1) from None
