"""Notifications: an outbox written with the event that causes it, an in-app inbox, and delivery
channels (e-mail today) drained by a worker.

Writing: a service calls ``notify(users, kind, title, body, link)`` *inside* its transaction,
before its commit, so a notice exists exactly when its event does (a rolled-back decision leaves
no notice behind, a committed one always has one). Each notice is one ``notifications`` row per
recipient (the in-app inbox) plus one ``notification_deliveries`` row per channel that should
carry it (status ``pending``). Nothing is sent while the request runs: the network must never
hold a transaction open nor fail a decision.

Sending: ``flask --app wsgi notifications send`` (cron, every minute; ``--loop`` to stay up) calls
``send_pending``, which for each configured channel *claims* due deliveries (status ``sending``,
attempts + 1, a lease in ``next_attempt_at``) and commits, then hands each to its channel outside
any transaction and records the outcome: ``sent`` (never picked again, so a rerun after a
success sends nothing twice), ``pending`` again with exponential backoff after a temporary
failure, ``failed`` after a permanent one or ``NOTIFICATION_MAX_ATTEMPTS`` tries. On PostgreSQL
the claim reads with ``FOR UPDATE SKIP LOCKED`` so parallel workers take disjoint rows; on both
databases the claim is a compare-and-set on the status, so two workers never claim one row. A
claim's token is the ``attempts`` value it wrote: right before sending each row the worker renews
its lease only if the row still carries its token, and records the outcome on the same condition,
so a batch that outlived its lease (another worker re-claimed the rest) sends nothing twice. A
worker that dies between the SMTP server accepting a message and recording it leaves the row
``sending``; once its lease ends it is tried again (at least once, the only safe choice then).
Each pass first erases sensitive notices (one-time links) that expired or have nothing left to
send, even with no channel configured.

Channels: a ``Channel`` has a ``name`` and ``deliver(notification, user)``; it raises
``TemporaryDeliveryError`` (tried again later) or ``PermanentDeliveryError`` (given up at once).
``register_channel`` adds one to the registry; ``notify`` queues a delivery on every registered
channel whose ``wants(notification, user)`` says yes and that the call did not exclude. To add SMS
or WeChat (模板消息) later: write a class with ``name = "sms"``, its ``wants`` (e.g. the user has
a verified mobile number and the kind has an approved SMS template) and a ``deliver`` that calls
the provider with the template id and the notice's fields, then ``register_channel(SmsChannel())``
in ``core.app``; no table changes (``notification_deliveries.channel`` is free text).

Reminders: daily producers (a certificate due for renewal, a canteen behind its share) live in
their own packages and are registered with ``register_reminder``; ``notifications remind`` runs
them. A reminder passes ``dedupe_key``: one notice per recipient and key ever (unique index), so
running the command twice, or twice a day, sends nothing twice.
"""
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from core.db import transaction
from core.extensions import db
from core.models import Role, User
from core.timeutil import UTCDateTime, utcnow

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
DELIVERY_STATUSES = (PENDING, SENDING, SENT, FAILED)
#: What a delivered password-reset notice keeps once its e-mail is gone: the link is a secret.
SCRUBBED_BODY = "（此邮件含一次性链接，发送后不再保存其内容）"


class Notification(db.Model):
    """One notice to one user: what the inbox lists and what each channel delivers."""

    __tablename__ = "notifications"
    __table_args__ = (
        sa.Index("ix_notifications_user_unread", "user_id", "read_at", "id"),
        # One reminder per recipient and period, however often the reminder command runs.
        sa.UniqueConstraint("user_id", "dedupe_key", name="uq_notifications_user_dedupe"),
    )

    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    kind = db.Column(db.String(40), nullable=False)
    title = db.Column(db.String(200), nullable=False)
    body = db.Column(db.Text, nullable=False, default="")
    #: A path on this site (``/certifications/12``) the notice points to; e-mails make it absolute.
    link = db.Column(db.String(500), nullable=True)
    #: Shown in the inbox; False for e-mail-only messages (a password-reset link).
    in_app = db.Column(db.Boolean, nullable=False, default=True, server_default=sa.true())
    #: Body and link are erased once every delivery is over (they carry a one-time secret).
    sensitive = db.Column(db.Boolean, nullable=False, default=False, server_default=sa.false())
    dedupe_key = db.Column(db.String(120), nullable=True)
    #: Not delivered after this moment (a reset link that no longer works is not worth sending).
    expires_at = db.Column(UTCDateTime, nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    read_at = db.Column(UTCDateTime, nullable=True)

    user = db.relationship("User")
    deliveries = db.relationship("NotificationDelivery", back_populates="notification",
                                 cascade="all, delete-orphan", lazy="selectin")


class NotificationDelivery(db.Model):
    """The state of one notice on one channel (``email`` ...): the worker's queue."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("notification_id", "channel", name="uq_notification_deliveries_notification_channel"),
        sa.CheckConstraint(sa.column("status").in_(DELIVERY_STATUSES), name="status_known"),
        sa.Index("ix_notification_deliveries_due", "channel", "status", "next_attempt_at"),
    )

    id = db.Column(db.Integer, primary_key=True)
    notification_id = db.Column(db.Integer, db.ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False)
    channel = db.Column(db.String(20), nullable=False)
    status = db.Column(db.String(10), nullable=False, default=PENDING)
    attempts = db.Column(db.Integer, nullable=False, default=0)
    #: When a pending delivery is due; while ``sending``, when the claim lapses (worker died).
    next_attempt_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    last_error = db.Column(db.String(500), nullable=True)
    sent_at = db.Column(UTCDateTime, nullable=True)

    notification = db.relationship("Notification", back_populates="deliveries")


# ---------------------------------------------------------------- channels

class TemporaryDeliveryError(Exception):
    """The channel could not deliver now (server down, 4xx): try again later."""


class PermanentDeliveryError(Exception):
    """The channel will never deliver this one (address refused, 5xx): give up."""


class Channel:
    """A way to carry a notice to a person (e-mail; later SMS, WeChat template messages)."""

    #: Stored in ``notification_deliveries.channel``.
    name = ""

    def wants(self, notification: Notification, user: User) -> bool:
        """Whether this notice should go to ``user`` on this channel (queued at ``notify``)."""
        return True

    def configured(self) -> bool:
        """Whether the worker can deliver now (settings present); unconfigured channels wait."""
        return True

    def deliver(self, notification: "Outgoing", user: "Recipient") -> None:
        """Deliver a copy of the notice (``Outgoing``) to ``user`` (``Recipient``), or raise
        ``TemporaryDeliveryError`` / ``PermanentDeliveryError`` (any other exception counts as temporary)."""
        raise NotImplementedError


_CHANNELS: dict[str, Channel] = {}


def register_channel(channel: Channel) -> None:
    """Add (or replace) a delivery channel in the registry."""
    _CHANNELS[channel.name] = channel


# ---------------------------------------------------------------- writing (inside the caller's transaction)

def notify(recipients: User | Iterable[User], kind: str, title: str, body: str, link: str | None = None, *,
           dedupe_key: str | None = None, in_app: bool = True, sensitive: bool = False,
           only_channels: Iterable[str] | None = None, expires_at: datetime | None = None) -> list[Notification]:
    """Queue a notice for each active recipient in the caller's transaction (the caller commits).

    :param recipients: a user or users (duplicates and deactivated accounts are skipped).
    :param kind: a short code (``certification_decision`` ...), for filtering and templates.
    :param title: Chinese, the inbox line and the e-mail subject.
    :param body: Chinese text.
    :param link: a path on this site, e.g. ``/certifications/12``.
    :param dedupe_key: at most one notice per recipient with this key, ever: recipients that
        already have one are skipped (reminders).
    :param in_app: False for e-mail-only messages.
    :param sensitive: erase body and link once delivered (one-time secrets).
    :param only_channels: restrict delivery to these channel names (default: every registered one).
    :param expires_at: deliveries still waiting at this moment are dropped (``failed``), not sent.
    """
    unique: list[User] = []
    for user in [recipients] if isinstance(recipients, User) else recipients:
        if user is not None and user.is_active and all(user.id != other.id for other in unique):
            unique.append(user)
    if dedupe_key and unique:
        db.session.flush()
        already = set(db.session.scalars(sa.select(Notification.user_id).where(
            Notification.dedupe_key == dedupe_key, Notification.user_id.in_([u.id for u in unique]))))
        unique = [u for u in unique if u.id not in already]
    allowed = set(only_channels) if only_channels is not None else None
    now = utcnow()
    created = []
    for user in unique:
        notice = Notification(user_id=user.id, user=user, kind=kind, title=title[:200], body=body, link=link,
                              in_app=in_app, sensitive=sensitive, dedupe_key=dedupe_key, expires_at=expires_at,
                              created_at=now)
        for channel in _CHANNELS.values():
            if (allowed is None or channel.name in allowed) and channel.wants(notice, user):
                notice.deliveries.append(NotificationDelivery(channel=channel.name, status=PENDING, attempts=0,
                                                              next_attempt_at=now))
        db.session.add(notice)
        created.append(notice)
    return created


def active_users(role: Role, *, county: str | None = None, cooperative_ids: Iterable[int] | None = None,
                 budget_unit_id: int | None = None) -> list[User]:
    """Active accounts of ``role``, narrowed to a county, cooperatives or a budget unit: the usual
    recipients of a notice (``notify(active_users(Role.FINANCE), ...)``)."""
    query = sa.select(User).where(User.role == role.value, User.is_active.is_(True))
    if county is not None:
        query = query.where(User.county == county)
    if cooperative_ids is not None:
        query = query.where(User.cooperative_id.in_(list(cooperative_ids)))
    if budget_unit_id is not None:
        query = query.where(User.budget_unit_id == budget_unit_id)
    return list(db.session.scalars(query.order_by(User.id)))


# ---------------------------------------------------------------- the inbox

def inbox_query(user: User, *, unread_only: bool = False) -> sa.Select:
    """``user``'s in-app notices, newest first."""
    query = sa.select(Notification).where(Notification.user_id == user.id, Notification.in_app.is_(True))
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    return query.order_by(Notification.id.desc())


def list_inbox(user: User, *, unread_only: bool = False, offset: int = 0, limit: int = 50) -> tuple[list, int]:
    """A page of ``user``'s notices and how many there are in all."""
    query = inbox_query(user, unread_only=unread_only)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery()))
    return list(db.session.scalars(query.offset(offset).limit(limit))), int(total or 0)


def unread_count(user: User | None) -> int:
    """How many in-app notices ``user`` has not read (0 when signed out)."""
    if user is None:
        return 0
    return int(db.session.scalar(sa.select(sa.func.count(Notification.id)).where(
        Notification.user_id == user.id, Notification.in_app.is_(True), Notification.read_at.is_(None))) or 0)


def get_own(user: User, notification_id: int) -> Notification:
    """One of ``user``'s in-app notices.

    :raise NotFound: absent or someone else's (404 either way: ids tell nothing).
    """
    from core.errors import NotFound

    notice = db.session.get(Notification, notification_id)
    if notice is None or notice.user_id != user.id or not notice.in_app:
        raise NotFound("消息不存在")
    return notice


def mark_read(user: User, notification_id: int) -> Notification:
    """Mark one of ``user``'s notices read (again: unchanged).

    :raise NotFound: not ``user``'s.
    """
    with transaction():
        notice = get_own(user, notification_id)
        if notice.read_at is None:
            notice.read_at = utcnow()
    return notice


def mark_all_read(user: User) -> int:
    """Mark every unread notice of ``user`` read; return how many were."""
    with transaction():
        result = db.session.execute(
            sa.update(Notification)
            .where(Notification.user_id == user.id, Notification.in_app.is_(True), Notification.read_at.is_(None))
            .values(read_at=utcnow()).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


# ---------------------------------------------------------------- the worker

@dataclass
class SendReport:
    """What one pass did, per outcome."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    #: Claims another worker took over after our lease ran out (it sends them, not us).
    skipped: int = 0
    #: Sensitive notices whose body and link were erased (expired or nothing left to send).
    scrubbed: int = 0
    waiting_channels: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.sent + self.retried + self.failed


def max_attempts() -> int:
    """Tries before a delivery is ``failed`` (``NOTIFICATION_MAX_ATTEMPTS``)."""
    return max(1, int(current_app.config.get("NOTIFICATION_MAX_ATTEMPTS", 6)))


def retry_delay(attempts: int) -> timedelta:
    """Wait before try ``attempts + 1``: ``NOTIFICATION_RETRY_SECONDS`` doubled per try, at most a day."""
    base = max(1, int(current_app.config.get("NOTIFICATION_RETRY_SECONDS", 60)))
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 24 * 3600))


#: How long a claimed delivery is the claimer's before another worker may take it (worker died).
CLAIM_LEASE = timedelta(minutes=10)


def _due(channel: str, now: datetime):
    return sa.and_(NotificationDelivery.channel == channel,
                   NotificationDelivery.status.in_((PENDING, SENDING)),
                   NotificationDelivery.next_attempt_at <= now)


class Claim(NamedTuple):
    """A delivery this worker claimed: ``attempts`` after the claim is the claim's token (each
    claim raises it by one), so a later claim by another worker is told apart from ours."""

    id: int
    attempts: int


def claim_deliveries(channel: str, *, limit: int = 50, now: datetime | None = None) -> list[Claim]:
    """Take up to ``limit`` due deliveries of ``channel`` for this worker and commit the claim.

    PostgreSQL skips rows another worker is claiming (``FOR UPDATE SKIP LOCKED``); the update is a
    compare-and-set on status and due time as well, so on any database a row is claimed once.
    """
    now = now or utcnow()
    query = (sa.select(NotificationDelivery.id, NotificationDelivery.attempts).where(_due(channel, now))
             .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id).limit(limit))
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = []
    with transaction():
        for delivery_id, attempts in list(db.session.execute(query)):
            result = db.session.execute(
                sa.update(NotificationDelivery)
                .where(NotificationDelivery.id == delivery_id, NotificationDelivery.attempts == attempts,
                       _due(channel, now))
                .values(status=SENDING, attempts=attempts + 1, next_attempt_at=now + CLAIM_LEASE)
                .execution_options(synchronize_session=False))
            if result.rowcount == 1:
                claimed.append(Claim(delivery_id, attempts + 1))
    return claimed


def _ours(claim: Claim):
    """The row is still in the state our claim left it (nobody re-claimed it after our lease)."""
    return sa.and_(NotificationDelivery.id == claim.id, NotificationDelivery.status == SENDING,
                   NotificationDelivery.attempts == claim.attempts)


def renew_claim(claim: Claim, now: datetime) -> bool:
    """Right before sending, extend the lease of one claimed delivery if it is still ours.

    A batch may take longer than the lease (each SMTP step may wait its timeout); a row whose
    lease ran out meanwhile may have been claimed by another worker, which then sends it: skip it.
    """
    with transaction():
        result = db.session.execute(sa.update(NotificationDelivery).where(_ours(claim))
                                    .values(next_attempt_at=now + CLAIM_LEASE)
                                    .execution_options(synchronize_session=False))
    return result.rowcount == 1


def _record(claim: Claim, *, status: str, now: datetime, error: str | None = None,
            next_attempt_at: datetime | None = None) -> bool:
    """Write a claimed delivery's outcome, only while the claim is still ours; say whether it was."""
    values = {"status": status, "last_error": (error or None) and error[:500]}
    if status == SENT:
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    with transaction():
        result = db.session.execute(sa.update(NotificationDelivery).where(_ours(claim))
                                    .values(**values).execution_options(synchronize_session=False))
        if result.rowcount == 1 and status in (SENT, FAILED):
            _scrub_if_done(claim.id)
    return result.rowcount == 1


def scrub_sensitive(now: datetime | None = None, *, user_id: int | None = None, kinds: Iterable[str] | None = None,
                    reason: str = "已过有效期，未发送") -> int:
    """Erase the body and link of sensitive notices that can no longer go out or no longer work
    (caller commits); return how many.

    Without ``user_id``: the notices past ``expires_at`` (their waiting deliveries become
    ``failed``) and those with nothing left to deliver, so a link does not sit in the table while
    no channel is configured or the server keeps refusing. With ``user_id``: that user's notices
    (of ``kinds``) at once, whatever their state, because their secret was revoked (a password link
    closed by a password change); deliveries not yet sent are dropped with ``reason``.
    """
    now = now or utcnow()
    open_ = NotificationDelivery.status.in_((PENDING, SENDING))
    query = sa.select(Notification.id).where(Notification.sensitive.is_(True), Notification.link.is_not(None))
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
        if kinds is not None:
            query = query.where(Notification.kind.in_(list(kinds)))
    else:
        waiting = sa.select(NotificationDelivery.id).where(NotificationDelivery.notification_id == Notification.id, open_)
        query = query.where(sa.or_(Notification.expires_at <= now, ~waiting.exists()))
    ids = list(db.session.scalars(query))
    if not ids:
        return 0
    # A worker holding one of these claims finds the row no longer ``sending`` and records nothing.
    db.session.execute(sa.update(NotificationDelivery)
                       .where(NotificationDelivery.notification_id.in_(ids), open_)
                       .values(status=FAILED, last_error=reason).execution_options(synchronize_session=False))
    db.session.execute(sa.update(Notification).where(Notification.id.in_(ids))
                       .values(body=SCRUBBED_BODY, link=None).execution_options(synchronize_session=False))
    return len(ids)


def _scrub_if_done(delivery_id: int) -> None:
    """Erase a sensitive notice's body and link once none of its deliveries can still go out."""
    notice = db.session.scalar(sa.select(Notification).join(NotificationDelivery)
                               .where(NotificationDelivery.id == delivery_id))
    if notice is None or not notice.sensitive:
        return
    db.session.refresh(notice)
    if all(d.status in (SENT, FAILED) for d in notice.deliveries):
        notice.body, notice.link = SCRUBBED_BODY, None


@dataclass(frozen=True)
class Outgoing:
    """What a channel gets of a notice: a copy, so no database session is open while it sends."""

    id: int
    kind: str
    title: str
    body: str
    link: str | None
    created_at: datetime
    delivery_id: int
    attempt: int


@dataclass(frozen=True)
class Recipient:
    """What a channel gets of the person it writes to."""

    id: int
    email: str
    display_name: str
    is_active: bool


def deliver_claimed(channel: Channel, claim: Claim, report: SendReport, now: datetime | None = None) -> None:
    """Hand one claimed delivery to its channel, outside any transaction, and record the outcome
    (nothing at all if another worker took the delivery over after our lease ran out)."""
    now = now or utcnow()
    if not renew_claim(claim, now):
        report.skipped += 1
        return
    delivery = db.session.get(NotificationDelivery, claim.id)
    if delivery is None:  # its account was deleted meanwhile (the rows cascade)
        db.session.commit()
        return
    row, person = delivery.notification, delivery.notification.user
    notice = Outgoing(row.id, row.kind, row.title, row.body, row.link, row.created_at, delivery.id, delivery.attempts)
    user = Recipient(person.id, person.email, person.display_name, person.is_active)
    attempts, expires_at = delivery.attempts, row.expires_at
    db.session.commit()  # end the read transaction: nothing is held while the network answers
    if not user.is_active or (expires_at is not None and expires_at <= now):
        _record(claim, status=FAILED, now=now,
                error="账号已停用，未发送" if not user.is_active else "已过有效期，未发送")
        report.failed += 1
        return
    try:
        channel.deliver(notice, user)
    except PermanentDeliveryError as exc:
        log.warning("notification %s on %s refused for good: %s", notice.id, channel.name, exc)
        _record(claim, status=FAILED, now=now, error=str(exc))
        report.failed += 1
    except Exception as exc:  # noqa: BLE001 - anything else is worth another try
        if attempts >= max_attempts():
            log.warning("notification %s on %s failed after %s tries: %s", notice.id, channel.name, attempts, exc)
            _record(claim, status=FAILED, now=now, error=str(exc) or exc.__class__.__name__)
            report.failed += 1
        else:
            _record(claim, status=PENDING, now=now, error=str(exc) or exc.__class__.__name__,
                    next_attempt_at=now + retry_delay(attempts))
            report.retried += 1
    else:
        _record(claim, status=SENT, now=now)
        report.sent += 1


def send_pending(*, limit: int = 50, now: datetime | None = None) -> SendReport:
    """One pass of the worker: deliver every due delivery of every configured channel."""
    report = SendReport()
    with transaction():
        # First, even with no channel configured: links that expired while waiting leave the table.
        report.scrubbed = scrub_sensitive(now)
    for channel in _CHANNELS.values():
        if not channel.configured():
            if db.session.scalar(sa.select(sa.func.count(NotificationDelivery.id))
                                 .where(NotificationDelivery.channel == channel.name,
                                        NotificationDelivery.status == PENDING)):
                report.waiting_channels.append(channel.name)
            continue
        while True:
            claimed = claim_deliveries(channel.name, limit=limit, now=now)
            if not claimed:
                break
            for claim in claimed:
                deliver_claimed(channel, claim, report, now=now)
    return report


def run_worker(*, interval: float = 30.0, passes: int | None = None, echo: Callable[[str], None] = log.info) -> None:
    """Run ``send_pending`` every ``interval`` seconds (``passes`` times, or until stopped)."""
    done = 0
    while passes is None or done < passes:
        try:
            report = send_pending()
        except Exception:  # noqa: BLE001 - a database outage must not end the worker; the next pass retries
            log.exception("notifications pass failed")
        else:
            if report.handled:
                echo(f"已发送 {report.sent}，稍后重试 {report.retried}，失败 {report.failed}")
        done += 1
        db.session.remove()
        if passes is None or done < passes:
            time.sleep(interval)


# ---------------------------------------------------------------- daily reminders

_REMINDERS: list[tuple[str, Callable[[], int]]] = []


def register_reminder(name: str, producer: Callable[[], int]) -> None:
    """Add a daily reminder producer: it calls ``notify(..., dedupe_key=...)`` and returns how many
    notices it wrote, without committing (``run_reminders`` commits each producer apart)."""
    if all(existing != name for existing, _ in _REMINDERS):
        _REMINDERS.append((name, producer))


def run_reminders() -> dict[str, int]:
    """Run every registered reminder producer, each in its own transaction; return counts by name.

    Two runs at once may race for the same key: the unique index refuses the loser, which then
    runs again and finds everything already sent.
    """
    counts = {}
    for name, producer in _REMINDERS:
        for attempt in (1, 2):
            try:
                with transaction():
                    counts[name] = producer()
            except IntegrityError:
                if attempt == 2:
                    raise
                continue
            break
    return counts
