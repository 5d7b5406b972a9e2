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


# ---------------------------------------------------------------- signed checkpoints
#
# The chain proves that no row was changed *unless the whole chain after it was recomputed*,
# which whoever owns the database can do. A checkpoint closes that gap: the chain's head (last
# id, its hash, how many events) signed with an Ed25519 key that lives outside the database,
# published or filed elsewhere. ``verify_checkpoint`` then proves the database still holds that
# exact history up to the checkpoint; a rewritten chain has other hashes and fails.

CHECKPOINT_VERSION = 1


def checkpoint_payload(last_id: int, last_hash: str, count: int, at: str) -> bytes:
    """The exact bytes a checkpoint signs (canonical JSON)."""
    return json.dumps({"v": CHECKPOINT_VERSION, "last_id": last_id, "last_hash": last_hash, "count": count,
                       "at": at}, sort_keys=True, separators=(",", ":")).encode()


def make_checkpoint(private_key_pem: bytes) -> dict:
    """Sign the chain's current head; return the checkpoint (to be written to a file kept elsewhere)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    head = db.session.execute(sa.select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).first()
    last_id, last_hash = (head.id, head.hash) if head else (0, GENESIS_HASH)
    count = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.id <= last_id))
    at = utcnow().isoformat()
    signature = key.sign(checkpoint_payload(last_id, last_hash, count, at))
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"v": CHECKPOINT_VERSION, "last_id": last_id, "last_hash": last_hash, "count": count, "at": at,
            "signature": signature.hex(), "key_id": hashlib.sha256(public).hexdigest()[:16]}


def verify_checkpoint(checkpoint: dict, public_key_pem: bytes) -> str | None:
    """None when the database still holds the checkpointed history; else why not (Chinese).

    The signature must verify under ``public_key_pem`` (kept outside the database), and the
    event at the checkpoint's id must have its hash, with as many events up to it.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    try:
        payload = checkpoint_payload(int(checkpoint["last_id"]), str(checkpoint["last_hash"]),
                                     int(checkpoint["count"]), str(checkpoint["at"]))
        serialization.load_pem_public_key(public_key_pem).verify(bytes.fromhex(checkpoint["signature"]), payload)
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return "检查点签名无效（不是用该公钥签发的，或检查点文件被改动）"
    last_id = int(checkpoint["last_id"])
    if last_id == 0:
        return None
    held = db.session.scalar(sa.select(AuditEvent.hash).where(AuditEvent.id == last_id))
    if held != checkpoint["last_hash"]:
        return f"记录 #{last_id} 的哈希与 {checkpoint['at']} 的检查点不符：该时间点之前的审计记录被改写"
    count = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.id <= last_id))
    if count != int(checkpoint["count"]):
        return f"截至记录 #{last_id} 应有 {checkpoint['count']} 条，现有 {count} 条：审计记录被删除或插入"
    return None


def new_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (private PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public
