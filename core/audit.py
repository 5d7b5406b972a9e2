"""The one append-only, tamper-evident audit trail used by every domain package.

Each event carries ``prev_hash`` (the hash of the event before it) and its own ``hash``
over its content and ``prev_hash``; changing, removing or reordering any row breaks the
chain from that row on, which ``verify_chain`` reports.
"""
import hashlib
import json
from dataclasses import dataclass

import sqlalchemy as sa

from core.extensions import db
from core.timeutil import UTCDateTime, utcnow

GENESIS_HASH = "0" * 64
# Arbitrary constant for PostgreSQL's advisory lock that serialises appends to the chain.
_CHAIN_LOCK_KEY = 7_214_001


class AuditEvent(db.Model):
    """One transition of one subject: who, in which role, when, from, to, and why."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_subject", "subject_type", "subject_id", "id"),)

    id = db.Column(db.Integer, primary_key=True)
    at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    actor_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    actor_role = db.Column(db.String(32), nullable=True)
    subject_type = db.Column(db.String(40), nullable=False)
    subject_id = db.Column(db.Integer, nullable=False)
    action = db.Column(db.String(40), nullable=False)
    from_state = db.Column(db.String(40), nullable=True)
    to_state = db.Column(db.String(40), nullable=True)
    comment = db.Column(db.Text, nullable=False, default="")
    data = db.Column(db.Text, nullable=False, default="{}")
    prev_hash = db.Column(db.String(64), nullable=False)
    hash = db.Column(db.String(64), nullable=False, unique=True)

    def content_digest(self) -> str:
        """Return the SHA-256 over this event's content and the previous hash."""
        payload = json.dumps(
            [self.prev_hash, self.at.isoformat(), self.actor_id, self.actor_role,
             self.subject_type, self.subject_id, self.action, self.from_state,
             self.to_state, self.comment, self.data],
            ensure_ascii=False, separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _lock_chain() -> None:
    """Serialise appends so two transactions never link to the same predecessor.

    PostgreSQL: a transaction-scoped advisory lock. SQLite serialises writers already,
    but a deferred transaction reads before it writes, so we take the write lock first.
    """
    bind = db.session.get_bind()
    if bind.dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})
    elif bind.dialect.name == "sqlite":
        # A no-op write takes SQLite's RESERVED lock before we read the chain head.
        db.session.execute(sa.text("UPDATE audit_events SET id = id WHERE 0"))


def record_event(*, subject_type: str, subject_id: int, action: str, actor=None,
                 from_state: str | None = None, to_state: str | None = None,
                 comment: str = "", data: dict | None = None) -> AuditEvent:
    """Append one event to the chain in the caller's transaction (the caller commits)."""
    db.session.flush()
    _lock_chain()
    last_hash = db.session.scalar(
        sa.select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
    ) or GENESIS_HASH
    event = AuditEvent(
        at=utcnow(),
        actor_id=getattr(actor, "id", None),
        actor_role=getattr(actor, "role", None),
        subject_type=subject_type,
        subject_id=subject_id,
        action=action,
        from_state=from_state,
        to_state=to_state,
        comment=comment or "",
        data=json.dumps(data or {}, ensure_ascii=False, sort_keys=True),
        prev_hash=last_hash,
    )
    event.hash = event.content_digest()
    db.session.add(event)
    db.session.flush()
    return event


def history_of(subject_type: str, subject_id: int) -> list[AuditEvent]:
    """Return a subject's events, oldest first."""
    return list(db.session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.subject_type == subject_type, AuditEvent.subject_id == subject_id)
        .order_by(AuditEvent.id)
    ))


@dataclass
class ChainReport:
    """Result of verifying the chain: ``broken_at`` is the first bad event id, if any."""

    checked: int
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(batch_size: int = 5000) -> ChainReport:
    """Walk the whole chain in id order and report the first broken link."""
    expected_prev = GENESIS_HASH
    checked = 0
    last_id = 0
    while True:
        rows = list(db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch_size)
        ))
        if not rows:
            return ChainReport(checked=checked)
        for event in rows:
            if event.prev_hash != expected_prev:
                return ChainReport(checked, event.id, "与前一条记录的哈希不衔接（记录被删除或插入）")
            if event.content_digest() != event.hash:
                return ChainReport(checked, event.id, "记录内容与其哈希不符（记录被修改）")
            expected_prev = event.hash
            checked += 1
            last_id = event.id
        db.session.expunge_all()
