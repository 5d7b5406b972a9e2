"""Signed audit checkpoints (issue #13): a database owner who rewrites the history and recomputes
the whole chain passes ``audit verify`` alone, but not ``audit verify --checkpoint``."""
import json

import sqlalchemy as sa

from core.audit import AuditEvent, GENESIS_HASH, record_event, verify_chain
from core.extensions import db


def _append(n, start=0):
    for i in range(start, start + n):
        record_event(subject_type="order", subject_id=i, action="paid", from_state="pending_payment",
                     to_state="paid", comment=f"第{i}笔")
    db.session.commit()


def _rewrite_history(new_comment: str) -> None:
    """What a database owner could do: change an old event, renumber the places and recompute
    every hash after it."""
    events = list(db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)))
    events[1].comment = new_comment
    previous = GENESIS_HASH
    for place, event in enumerate(events, start=1):
        event.seq = place
        event.prev_hash = previous
        event.hash = event.content_digest()
        previous = event.hash
    db.session.commit()


def _keys(runner, tmp_path):
    private, public = tmp_path / "audit.key", tmp_path / "audit.pub"
    result = runner.invoke(args=["audit", "keygen", "--private", str(private), "--public", str(public)])
    assert result.exit_code == 0, result.output
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    return private, public


def test_a_rewritten_chain_passes_the_hash_check_but_fails_the_checkpoint(runner, tmp_path):
    private, public = _keys(runner, tmp_path)
    _append(5)
    checkpoint = tmp_path / "checkpoint-2026-12-06.json"
    made = runner.invoke(args=["audit", "checkpoint", "--key", str(private), "--out", str(checkpoint)])
    assert made.exit_code == 0, made.output
    _append(3, start=5)  # later events do not disturb an earlier checkpoint
    ok = runner.invoke(args=["audit", "verify", "--checkpoint", str(checkpoint), "--public-key", str(public)])
    assert ok.exit_code == 0 and "一致" in ok.output, ok.output

    _rewrite_history("这笔其实没付款")
    assert verify_chain().ok  # the recomputed chain is self-consistent...
    caught = runner.invoke(args=["audit", "verify", "--checkpoint", str(checkpoint), "--public-key", str(public)])
    assert caught.exit_code == 1 and "被改写" in caught.output  # ...but not the history that was signed


def test_a_forged_or_edited_checkpoint_is_refused(runner, tmp_path):
    private, public = _keys(runner, tmp_path)
    _append(3)
    checkpoint = tmp_path / "cp.json"
    runner.invoke(args=["audit", "checkpoint", "--key", str(private), "--out", str(checkpoint)])
    body = json.loads(checkpoint.read_text())
    body["count"] = 2
    checkpoint.write_text(json.dumps(body))
    edited = runner.invoke(args=["audit", "verify", "--checkpoint", str(checkpoint), "--public-key", str(public)])
    assert edited.exit_code == 1 and "签名无效" in edited.output
    other_private, _ = tmp_path / "other.key", tmp_path / "other.pub"
    runner.invoke(args=["audit", "keygen", "--private", str(other_private), "--public", str(tmp_path / "other.pub")])
    foreign = tmp_path / "foreign.json"
    runner.invoke(args=["audit", "checkpoint", "--key", str(other_private), "--out", str(foreign)])
    refused = runner.invoke(args=["audit", "verify", "--checkpoint", str(foreign), "--public-key", str(public)])
    assert refused.exit_code == 1 and "签名无效" in refused.output


def test_deleting_events_before_the_checkpoint_is_caught(runner, tmp_path):
    private, public = _keys(runner, tmp_path)
    _append(4)
    checkpoint = tmp_path / "cp.json"
    runner.invoke(args=["audit", "checkpoint", "--key", str(private), "--out", str(checkpoint)])
    first = db.session.scalar(sa.select(sa.func.min(AuditEvent.id)))
    db.session.execute(sa.delete(AuditEvent).where(AuditEvent.id == first))
    db.session.commit()
    _rewrite_history("")  # renumber and re-link what is left, as a careful forger would
    assert verify_chain().ok
    caught = runner.invoke(args=["audit", "verify", "--checkpoint", str(checkpoint), "--public-key", str(public)])
    assert caught.exit_code == 1 and "被改写" in caught.output
