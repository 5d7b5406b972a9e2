"""/healthz and request ids (issue #13, operations)."""
import logging

import sqlalchemy as sa

from core.extensions import db


def test_healthz_is_ok_on_a_migrated_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["checks"] == {"database": "ok", "schema": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_says_unavailable_when_the_schema_is_behind(client):
    [version] = db.session.scalars(sa.text("SELECT version_num FROM alembic_version")).all()
    db.session.execute(sa.text("UPDATE alembic_version SET version_num = 'older'"))
    db.session.commit()
    try:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["schema"] == "outdated"
    finally:
        db.session.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": version})
        db.session.commit()


def test_healthz_says_unavailable_when_the_database_does_not_answer(client, monkeypatch):
    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "scalars", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "checks": {"database": "unavailable"},
                                   "duration_ms": response.get_json()["duration_ms"]}


def test_every_response_carries_a_request_id_and_a_sane_given_one_is_kept(client):
    fresh = client.get("/healthz").headers["X-Request-Id"]
    assert len(fresh) == 24 and fresh != client.get("/healthz").headers["X-Request-Id"]
    assert client.get("/api/v1/villages", headers={"X-Request-Id": "lb-7f3a9c21"}).headers["X-Request-Id"] == "lb-7f3a9c21"
    hostile = client.get("/", headers={"X-Request-Id": "x\" onload=alert(1) " + "a" * 80})
    assert hostile.headers["X-Request-Id"] != "x\" onload=alert(1) " + "a" * 80
    assert client.get("/no/such/page").headers.get("X-Request-Id")  # errors too


def test_log_lines_written_during_a_request_carry_its_id(client, caplog, monkeypatch):
    """The failed health check logs its traceback; the record names the request it belongs to."""
    from core.operations import RequestIdFilter

    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "scalars", broken)
    id_filter = RequestIdFilter()
    caplog.handler.addFilter(id_filter)
    try:
        with caplog.at_level(logging.ERROR, logger="core.operations"):
            client.get("/healthz", headers={"X-Request-Id": "trace-12345678"})
    finally:
        caplog.handler.removeFilter(id_filter)
    [record] = [r for r in caplog.records if r.name == "core.operations"]
    assert record.request_id == "trace-12345678" and record.exc_info
