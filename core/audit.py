"""The one append-only, tamper-evident audit trail used by every domain package.

An event is written in the caller's transaction (``record_event``), unsealed. After that
transaction commits, the sealer links committed events into the chain in the order it finds
them: each gets its place ``seq``, ``prev_hash`` (the hash of the event sealed before it) and its
own ``hash`` over its content and ``prev_hash``. Changing, removing or reordering any sealed row
breaks the chain from that row on, which ``verify_chain`` reports.

Why seal after commit: appending under the chain's lock inside the business transaction made
every audited write in the system (every order) queue on one lock while it still held its own row
locks. Now only the sealer takes the chain lock, in a short transaction of its own, and one seal
links everything that committed meanwhile. Where the sealer runs (``AUDIT_SEAL_MODE``):
``inline``, right after each commit in the same thread (SQLite's default: writers queue anyway,
and tests see a sealed chain at once); ``background``, a thread per process woken by commits,
sealing every ``AUDIT_SEAL_DELAY_MS`` at most (PostgreSQL's default). Events a dead process left
unsealed are sealed by the next seal anywhere, and by ``audit verify`` / ``audit seal``.
"""
import atexit
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import orm

from core.extensions import db
from core.timeutil import UTCDateTime, utcnow

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Arbitrary constant for PostgreSQL's advisory lock that serialises sealers (never a business
# transaction).
_CHAIN_LOCK_KEY = 7_214_001
# Events sealed per statement batch.
SEAL_BATCH = 1000
# Background mode: how long a woken sealer waits so the commits of that moment join one seal.
# Every process runs a sealer and each wake-up costs a few statements whether or not another
# process already sealed; at 20 ms, four busy workers spent ~0.7 ms of CPU per order on them
# (docs/benchmarks.md). A fifth of a second is still "at once" for anyone reading the trail.
DEFAULT_SEAL_DELAY_MS = 200


class AuditEvent(db.Model):
    """One transition of one subject: who, in which role, when, from, to, and why."""

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.Index("ix_audit_events_subject", "subject_type", "subject_id", "id"),
        # The sealer's work list: only the few rows not yet linked.
        sa.Index("ix_audit_events_unsealed", "id", postgresql_where=sa.text("seq IS NULL"),
                 sqlite_where=sa.text("seq IS NULL")),
    )

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
    # Set by the sealer: the place in the chain (1, 2, ...) and the links. NULL until sealed.
    seq = db.Column(db.BigInteger, nullable=True, unique=True)
    prev_hash = db.Column(db.String(64), nullable=True)
    hash = db.Column(db.String(64), nullable=True, unique=True)

    @property
    def sealed(self) -> bool:
        return self.seq is not None

    def content_digest(self) -> str:
        """Return the SHA-256 over this event's content and the previous hash."""
        return _digest(self.prev_hash, self)


def _digest(prev_hash: str, event) -> str:
    """SHA-256 over ``prev_hash`` and an event's content (an ORM object or a Core row)."""
    payload = json.dumps(
        [prev_hash, event.at.isoformat(), event.actor_id, event.actor_role,
         event.subject_type, event.subject_id, event.action, event.from_state,
         event.to_state, event.comment, event.data],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _event_row(*, subject_type: str, subject_id: int, action: str, actor=None,
               from_state: str | None = None, to_state: str | None = None,
               comment: str = "", data: dict | None = None) -> dict:
    """The column values of a new, unsealed event."""
    return {
        "at": utcnow(),
        "actor_id": getattr(actor, "id", None),
        "actor_role": getattr(actor, "role", None),
        "subject_type": subject_type,
        "subject_id": subject_id,
        "action": action,
        "from_state": from_state,
        "to_state": to_state,
        "comment": comment or "",
        "data": json.dumps(data or {}, ensure_ascii=False, sort_keys=True),
    }


def record_event(*, subject_type: str, subject_id: int, action: str, actor=None,
                 from_state: str | None = None, to_state: str | None = None,
                 comment: str = "", data: dict | None = None) -> AuditEvent:
    """Add one event in the caller's transaction (the caller commits); it is sealed into the
    chain after that commit. No lock is taken here."""
    event = AuditEvent(**_event_row(subject_type=subject_type, subject_id=subject_id, action=action, actor=actor,
                                    from_state=from_state, to_state=to_state, comment=comment, data=data))
    db.session.add(event)
    db.session.info["audit_unsealed"] = True
    return event


_INSERT_EVENT = sa.insert(AuditEvent.__table__)  # built once: every order writes one


def insert_event(*, subject_type: str, subject_id: int, action: str, actor=None,
                 from_state: str | None = None, to_state: str | None = None,
                 comment: str = "", data: dict | None = None) -> None:
    """``record_event`` for hot paths: the same row, written at once with a Core INSERT on the
    session's connection (no ORM object, no flush). Sealed after the caller's commit all the same."""
    db.session.connection().execute(
        _INSERT_EVENT,
        _event_row(subject_type=subject_type, subject_id=subject_id, action=action, actor=actor,
                   from_state=from_state, to_state=to_state, comment=comment, data=data))
    db.session.info["audit_unsealed"] = True


# ---------------------------------------------------------------- sealing

def seal_pending(engine: sa.Engine | None = None) -> int:
    """Link every committed, unsealed event into the chain; return how many were sealed.

    One short transaction per batch of ``SEAL_BATCH``, under the chain lock (PostgreSQL: an
    advisory lock; SQLite: the database write lock), so two sealers never give two events the
    same place. Safe to call from anywhere, any time, any number of times at once.
    """
    engine = engine or db.engine
    table = AuditEvent.__table__
    sealed = 0
    while True:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})
            elif engine.dialect.name == "sqlite":
                # A no-op write takes SQLite's write lock before we read the chain head.
                connection.execute(sa.text("UPDATE audit_events SET id = id WHERE 0"))
            rows = connection.execute(
                sa.select(table).where(table.c.seq.is_(None)).order_by(table.c.id).limit(SEAL_BATCH)).all()
            if not rows:
                return sealed
            head = connection.execute(
                sa.select(table.c.seq, table.c.hash).where(table.c.seq.is_not(None))
                .order_by(table.c.seq.desc()).limit(1)).first()
            seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
            links = []
            for row in rows:
                seq += 1
                digest = _digest(prev_hash, row)
                links.append({"row_id": row.id, "new_seq": seq, "new_prev": prev_hash, "new_hash": digest})
                prev_hash = digest
            connection.execute(
                table.update().where(table.c.id == sa.bindparam("row_id"))
                .values(seq=sa.bindparam("new_seq"), prev_hash=sa.bindparam("new_prev"),
                        hash=sa.bindparam("new_hash")), links)
        sealed += len(rows)
        if len(rows) < SEAL_BATCH:
            return sealed


def _anything_unsealed(engine: sa.Engine) -> bool:
    """Whether any committed event waits to be sealed (no transaction, no lock)."""
    table = AuditEvent.__table__
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return connection.execute(sa.select(table.c.id).where(table.c.seq.is_(None)).limit(1)).first() is not None


class _BackgroundSealer:
    """One thread per process that seals soon after commits, many commits in one seal."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.pid: int | None = None
        self.engine: sa.Engine | None = None
        self.delay = DEFAULT_SEAL_DELAY_MS / 1000
        self.failures = 0
        # Seals asked for and seals covered: at exit there is nothing to do when they match.
        self.requested = 0
        self.covered = 0
        self.exit_hook_pid: int | None = None

    def request(self, engine: sa.Engine, delay: float) -> None:
        """Ask for a seal soon (after this process's commit)."""
        self.engine, self.delay = engine, delay
        with self.lock:
            self.requested += 1
            if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
                # A forked worker inherits no thread: start its own.
                self.pid = os.getpid()
                self.wake = threading.Event()
                self.thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)
                self.thread.start()
                if self.exit_hook_pid != self.pid:
                    atexit.register(self.flush)
                    self.exit_hook_pid = self.pid
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(self.delay)  # let the commits of the next few milliseconds join this seal
            self.wake.clear()
            asked = self.requested
            try:
                # Most wake-ups find another process's sealer already done: one autocommit read
                # (the partial index) instead of a locked transaction to learn that.
                if _anything_unsealed(self.engine):
                    seal_pending(self.engine)
            except Exception:
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.exception("audit events not sealed (%d failed attempts); retrying, nothing is lost",
                                  self.failures)
                time.sleep(min(0.1 * 2 ** min(self.failures, 6), 5))
                self.wake.set()
            else:
                self.failures = 0
                self.covered = asked

    def flush(self) -> None:
        """Seal what is left, at exit (best effort: the next seal anywhere picks up the rest)."""
        if self.pid == os.getpid() and self.engine is not None and self.covered != self.requested:
            try:
                seal_pending(self.engine)
            except Exception:
                log.warning("audit events left unsealed at exit; the next seal links them", exc_info=True)


# One sealer per engine (an app has one; tests and tools may hold several).
_sealers: dict[sa.Engine, _BackgroundSealer] = {}
_sealers_lock = threading.Lock()


def _background_sealer(engine: sa.Engine) -> _BackgroundSealer:
    with _sealers_lock:
        sealer = _sealers.get(engine)
        if sealer is None:
            sealer = _sealers[engine] = _BackgroundSealer()
        return sealer


def seal_mode(app, engine: sa.Engine) -> str:
    """``inline`` or ``background`` (see the module docstring)."""
    mode = app.config.get("AUDIT_SEAL_MODE") or os.environ.get("AUDIT_SEAL_MODE")
    return mode or ("background" if engine.dialect.name == "postgresql" else "inline")


def seal_delay_seconds(app) -> float:
    """``AUDIT_SEAL_DELAY_MS`` (app config, else environment, else the default) in seconds; 0 is a
    setting (seal at once), not "unset"."""
    delay_ms = app.config.get("AUDIT_SEAL_DELAY_MS")
    if delay_ms is None:
        delay_ms = os.environ.get("AUDIT_SEAL_DELAY_MS") or DEFAULT_SEAL_DELAY_MS
    return float(delay_ms) / 1000


def _seal_after_commit(session: orm.Session) -> None:
    """Session hook: a transaction that added audit events committed; get them sealed.

    Never raises: the business transaction is committed already, and an error here would reach
    the caller as if it had failed. Whatever is not sealed now is sealed by the next seal.
    """
    if not session.info.pop("audit_unsealed", False):
        return
    try:
        from flask import current_app

        app = current_app._get_current_object()
        engine = session.get_bind()
        if seal_mode(app, engine) == "inline":
            seal_pending(engine)
        else:
            _background_sealer(engine).request(engine, seal_delay_seconds(app))
    except Exception:
        log.exception("audit events not sealed after commit; the next seal links them")


def _forget_after_rollback(session: orm.Session, previous) -> None:
    # A savepoint's rollback leaves the outer transaction's events to be sealed at its commit.
    if not previous.nested:
        session.info.pop("audit_unsealed", None)


sa.event.listen(orm.Session, "after_commit", _seal_after_commit)
sa.event.listen(orm.Session, "after_soft_rollback", _forget_after_rollback)


def history_of(subject_type: str, subject_id: int) -> list[AuditEvent]:
    """Return a subject's events, oldest first."""
    return list(db.session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.subject_type == subject_type, AuditEvent.subject_id == subject_id)
        .order_by(AuditEvent.id)
    ))


@dataclass
class ChainReport:
    """Result of verifying the chain: ``broken_at`` is the first bad event id, if any;
    ``unsealed`` counts events committed but not linked yet (nothing to check on them yet)."""

    checked: int
    broken_at: int | None = None
    reason: str = ""
    unsealed: int = 0

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(batch_size: int = 5000) -> ChainReport:
    """Walk the sealed chain in its order and report the first broken link."""
    table = AuditEvent.__table__
    expected_prev = GENESIS_HASH
    checked = 0
    while True:
        rows = db.session.execute(
            sa.select(table).where(table.c.seq > checked).order_by(table.c.seq).limit(batch_size)).all()
        if not rows:
            unsealed = db.session.scalar(sa.select(sa.func.count()).select_from(table).where(table.c.seq.is_(None)))
            return ChainReport(checked=checked, unsealed=unsealed)
        for event in rows:
            if event.seq != checked + 1 or event.prev_hash != expected_prev:
                return ChainReport(checked, event.id, "与前一条记录的哈希不衔接（记录被删除或插入）")
            if _digest(event.prev_hash, event) != event.hash:
                return ChainReport(checked, event.id, "记录内容与其哈希不符（记录被修改）")
            expected_prev = event.hash
            checked += 1


# ---------------------------------------------------------------- signed checkpoints
#
# The chain proves that no row was changed *unless the whole chain after it was recomputed*,
# which whoever owns the database can do. A checkpoint closes that gap: the chain's head (its
# last place, that event's hash, how many events) signed with an Ed25519 key that lives outside
# the database, published or filed elsewhere. ``verify_checkpoint`` then proves the database
# still holds that exact history up to the checkpoint; a rewritten chain has other hashes and fails.

CHECKPOINT_VERSION = 2  # 2: positions are the sealed order ``seq`` (1 counted event ids)


def checkpoint_payload(last_seq: int, last_hash: str, count: int, at: str) -> bytes:
    """The exact bytes a checkpoint signs (canonical JSON)."""
    return json.dumps({"v": CHECKPOINT_VERSION, "last_seq": last_seq, "last_hash": last_hash, "count": count,
                       "at": at}, sort_keys=True, separators=(",", ":")).encode()


def make_checkpoint(private_key_pem: bytes) -> dict:
    """Seal what has committed, then sign the chain's head; return the checkpoint (to be written
    to a file kept elsewhere)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    seal_pending()
    head = db.session.execute(sa.select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq.is_not(None))
                              .order_by(AuditEvent.seq.desc()).limit(1)).first()
    last_seq, last_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    count = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.seq <= last_seq))
    at = utcnow().isoformat()
    signature = key.sign(checkpoint_payload(last_seq, last_hash, count, at))
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"v": CHECKPOINT_VERSION, "last_seq": last_seq, "last_hash": last_hash, "count": count, "at": at,
            "signature": signature.hex(), "key_id": hashlib.sha256(public).hexdigest()[:16]}


def verify_checkpoint(checkpoint: dict, public_key_pem: bytes) -> str | None:
    """None when the database still holds the checkpointed history; else why not (Chinese).

    The signature must verify under ``public_key_pem`` (kept outside the database), and the
    event at the checkpoint's place must have its hash, with as many events up to it.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    if checkpoint.get("v") != CHECKPOINT_VERSION:
        return f"检查点版本 {checkpoint.get('v')!r} 不受支持（应为 {CHECKPOINT_VERSION}），请重新签发"
    try:
        payload = checkpoint_payload(int(checkpoint["last_seq"]), str(checkpoint["last_hash"]),
                                     int(checkpoint["count"]), str(checkpoint["at"]))
        serialization.load_pem_public_key(public_key_pem).verify(bytes.fromhex(checkpoint["signature"]), payload)
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return "检查点签名无效（不是用该公钥签发的，或检查点文件被改动）"
    last_seq = int(checkpoint["last_seq"])
    if last_seq == 0:
        return None
    held = db.session.scalar(sa.select(AuditEvent.hash).where(AuditEvent.seq == last_seq))
    if held != checkpoint["last_hash"]:
        return f"第 {last_seq} 条记录的哈希与 {checkpoint['at']} 的检查点不符：该时间点之前的审计记录被改写"
    count = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.seq <= last_seq))
    if count != int(checkpoint["count"]):
        return f"截至第 {last_seq} 条应有 {checkpoint['count']} 条，现有 {count} 条：审计记录被删除或插入"
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
