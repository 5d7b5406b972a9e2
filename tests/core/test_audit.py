"""The audit trail is append-only in use and tamper-evident in storage."""
import threading
import time

import pytest
import sqlalchemy as sa

from core.audit import GENESIS_HASH, AuditEvent, record_event, seal_pending, verify_chain
from core.extensions import db
from core.timeutil import utcnow
from tests.concurrency import run_parallel, skip_unless_postgres


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


# ---------------------------------------------------------------- sealing after commit (issue #13)

def test_an_event_is_sealed_only_after_its_transaction_commits():
    event = record_event(subject_type="thing", subject_id=1, action="touch")
    db.session.flush()
    assert event.seq is None and event.hash is None  # no chain lock inside the business transaction
    db.session.commit()
    db.session.refresh(event)
    assert event.seq == 1 and event.prev_hash == GENESIS_HASH and event.hash == event.content_digest()


def test_a_rolled_back_event_never_enters_the_chain():
    record_event(subject_type="thing", subject_id=1, action="touch")
    db.session.rollback()
    _append(2)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 2
    assert verify_chain().checked == 2


def test_events_left_unsealed_are_reported_then_sealed_by_audit_verify(runner):
    _append(2)
    # What a process that died between its commit and the seal leaves behind.
    db.session.execute(sa.insert(AuditEvent.__table__).values(
        at=utcnow(), subject_type="thing", subject_id=9, action="touch", comment="", data="{}"))
    db.session.commit()
    report = verify_chain()
    assert report.ok and report.checked == 2 and report.unsealed == 1
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0 and "已校验 3 条" in result.output, result.output
    assert verify_chain().unsealed == 0


def test_the_background_sealer_links_commits_soon_after(app):
    # A long delay, so the five commits and the first check surely happen before the seal
    # (even on a loaded CI machine).
    app.config.update(AUDIT_SEAL_MODE="background", AUDIT_SEAL_DELAY_MS=3000)
    try:
        for i in range(5):
            record_event(subject_type="thing", subject_id=i, action="touch")
            db.session.commit()
        # Committed, not linked yet: the sealer waits a moment so later commits join its seal.
        assert verify_chain().unsealed == 5
        assert any(t.name == "audit-sealer" and t.is_alive() for t in threading.enumerate())
        deadline = time.monotonic() + 20
        while verify_chain().unsealed and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        app.config.update(AUDIT_SEAL_MODE="inline", AUDIT_SEAL_DELAY_MS=None)
    report = verify_chain()
    assert report.ok and report.checked == 5 and report.unsealed == 0


@pytest.mark.parametrize("setting, delay", [(None, 0.2), (0, 0.0), (50, 0.05), ("75", 0.075)])
def test_the_background_sealers_delay_is_the_setting_and_zero_means_at_once(app, monkeypatch, setting, delay):
    from core.audit import seal_delay_seconds

    monkeypatch.delenv("AUDIT_SEAL_DELAY_MS", raising=False)
    monkeypatch.setitem(app.config, "AUDIT_SEAL_DELAY_MS", setting)
    assert seal_delay_seconds(app) == delay


@pytest.mark.parametrize("failing", ["seal_pending", "seal_mode"])
def test_a_failing_seal_never_fails_the_committed_action(monkeypatch, caplog, failing):
    """Neither the seal itself nor choosing how to seal (config, thread start) may turn a
    committed action into an error for its caller."""
    import core.audit

    def broken(*args, **kwargs):
        raise RuntimeError("database went away between commit and seal")

    monkeypatch.setattr(core.audit, failing, broken)
    record_event(subject_type="order", subject_id=1, action="paid")
    db.session.commit()  # does not raise: the payment is recorded
    assert "not sealed after commit" in caplog.text
    monkeypatch.undo()
    assert verify_chain().unsealed == 1
    assert seal_pending() == 1 and verify_chain().checked == 1


def test_swapped_places_are_detected():
    _append(4)
    second, third = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq).offset(1).limit(2)).all()
    places = second.seq, third.seq
    second.seq, third.seq = -1, -2  # through a free value: seq is unique
    db.session.flush()
    second.seq, third.seq = places[1], places[0]
    db.session.commit()
    report = verify_chain()
    assert not report.ok and report.broken_at == third.id


def test_audited_transactions_do_not_wait_for_each_other(app):
    """The old chain lock made every audited transaction wait for any other one still open; now
    a transaction holding its event uncommitted does not delay another's commit."""
    skip_unless_postgres()
    holding = threading.Event()
    release = threading.Event()

    def slow():
        record_event(subject_type="order", subject_id=1, action="placed")
        db.session.flush()
        holding.set()
        release.wait(10)
        db.session.commit()
        return "slow"

    def quick():
        holding.wait(10)
        began = time.monotonic()
        record_event(subject_type="order", subject_id=2, action="placed")
        db.session.commit()
        waited = time.monotonic() - began
        release.set()
        return waited

    slow_result, waited = run_parallel(app, [slow, quick])
    assert slow_result == "slow"
    assert waited < 5, f"the second transaction waited {waited:.1f} s for the first"
    report = verify_chain()
    assert report.ok and report.checked == 2
    # Sealed in commit order: the quick one first.
    assert [e.subject_id for e in db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq))] == [2, 1]


def test_parallel_sealers_never_give_two_events_one_place(app):
    skip_unless_postgres()
    _append(3)
    db.session.execute(sa.insert(AuditEvent.__table__), [
        {"at": utcnow(), "subject_type": "thing", "subject_id": i, "action": "touch", "comment": "", "data": "{}"}
        for i in range(200)])
    db.session.commit()
    results = run_parallel(app, [seal_pending] * 4)
    assert sum(results) == 200
    report = verify_chain()
    assert report.ok and report.checked == 203 and report.unsealed == 0
