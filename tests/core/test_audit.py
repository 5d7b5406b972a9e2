"""The audit trail is append-only in use and tamper-evident in storage."""
import sqlalchemy as sa

from core.audit import AuditEvent, record_event, verify_chain
from core.extensions import db


def _append(n, actor=None):
    for i in range(n):
        record_event(subject_type="thing", subject_id=i, action="touch", actor=actor,
                     from_state="a", to_state="b", comment=f"第{i}次")
    db.session.commit()


def test_chain_links_each_event_to_the_previous(make):
    _append(5, actor=make.user())
    events = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    report = verify_chain()
    assert report.ok and report.checked == 5


def test_modified_row_is_detected_at_that_row():
    _append(5)
    third = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id).offset(2).limit(1)).one()
    db.session.execute(sa.update(AuditEvent).where(AuditEvent.id == third.id).values(comment="改过了"))
    db.session.commit()
    report = verify_chain()
    assert not report.ok
    assert report.broken_at == third.id
    assert report.checked == 2


def test_deleted_row_is_detected_at_the_next_row():
    _append(4)
    ids = db.session.scalars(sa.select(AuditEvent.id).order_by(AuditEvent.id)).all()
    db.session.execute(sa.delete(AuditEvent).where(AuditEvent.id == ids[1]))
    db.session.commit()
    assert verify_chain().broken_at == ids[2]


def test_cli_audit_verify_reports_ok_and_broken(runner):
    _append(3)
    ok = runner.invoke(args=["audit", "verify"])
    assert ok.exit_code == 0 and "完整" in ok.output
    db.session.execute(sa.update(AuditEvent).where(AuditEvent.subject_id == 1).values(actor_role="admin"))
    db.session.commit()
    broken = runner.invoke(args=["audit", "verify"])
    assert broken.exit_code == 1
    assert "断裂" in broken.output


def test_replay_clock_moves_every_reader_of_the_time_and_restores_the_real_one():
    from datetime import datetime, timedelta, timezone

    from core.timeutil import SHANGHAI, replay_clock, shanghai_today, utcnow

    moment = datetime(2025, 3, 1, 9, 30, tzinfo=SHANGHAI)
    with replay_clock(moment):
        assert abs(utcnow() - moment) < timedelta(seconds=5)
        assert shanghai_today().isoformat() == "2025-03-01"
    assert abs(utcnow() - datetime.now(timezone.utc)) < timedelta(seconds=5)
