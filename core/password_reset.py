"""Password reset by a one-time link sent by e-mail (忘记密码).

``request_reset(email)`` answers the same whatever the e-mail: for an active account it stores
a SHA-256 of a fresh random token (never the token) and queues an e-mail-only notice with the
link ``/password/reset/<token>`` through the outbox (``core.notifications``); the notice's body
and link are erased once the e-mail has gone. ``reset_password(token, new_password)`` takes the
token once (a compare-and-set on ``used_at``, so two clicks cannot both use it), within
``PASSWORD_RESET_MINUTES``, sets the new password under the password rule, ends every session
and token of the account and closes its other open links; all audited. Every other way of ending
all sessions (password change, sign-out everywhere, deactivation) closes the links as well, and
the e-mails still waiting with one are erased (``close_open_links``).

Staff accounts: ``send_set_password_link`` sends the same link (a longer validity) when an
administrator or county reviewer opens an account and ticks "send a link to set the password".
"""
import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from core.audit import record_event
from core.auth import revoke_all_sessions
from core.db import transaction
from core.errors import ValidationFailed
from core.extensions import db
from core.models import User
from core.notifications import notify, scrub_sensitive
from core.passwords import password_problems
from core.ratelimit import counter
from core.timeutil import UTCDateTime, utcnow
from core.users import find_by_email

#: Said for every request, whether or not the e-mail has an account.
REQUEST_MESSAGE = "如果该邮箱已注册，我们已向它发送重设密码的链接，请在有效期内使用。没有收到请检查垃圾邮件或稍后再试。"
INVALID_TOKEN = "重设链接无效、已使用或已过期，请重新申请"
#: E-mails one account may be sent per hour, whoever asks (no mail-bombing through the form).
MAX_MAILS_PER_ACCOUNT_HOUR = 5
#: A set-password link for a newly opened account lives longer than a reset link.
SET_PASSWORD_HOURS = 72
#: The notice kinds whose e-mail carries a link of this module.
LINK_KINDS = ("password_reset", "account_created")


class PasswordResetToken(db.Model):
    """One reset link: only the SHA-256 of its token is kept."""

    __tablename__ = "password_reset_tokens"

    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    token_hash = db.Column(db.String(64), nullable=False, unique=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = db.Column(UTCDateTime, nullable=False)
    used_at = db.Column(UTCDateTime, nullable=True)


def token_hash(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def reset_minutes() -> int:
    """How long a reset link works (``PASSWORD_RESET_MINUTES``, default 60)."""
    return max(1, int(current_app.config.get("PASSWORD_RESET_MINUTES", 60)))


def _find_active(email) -> User | None:
    user = find_by_email(email)
    return user if user is not None and user.is_active else None


def _issue(user: User, lifetime: timedelta) -> tuple[str, datetime]:
    """Store a new token's hash for ``user`` (caller's transaction); return the token and its end."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(PasswordResetToken(user_id=user.id, token_hash=token_hash(token), created_at=now,
                                      expires_at=now + lifetime))
    return token, now + lifetime


def request_reset(email) -> None:
    """Send a reset link to ``email`` if it is an active account's; say nothing either way.

    The caller answers ``REQUEST_MESSAGE`` whatever happened (no account enumeration).
    """
    user = _find_active(email)
    if user is None:
        return
    # Counted by account id (no e-mail address in Redis), whichever address asks.
    if counter().hit(f"pwreset:user:{user.id}", 3600) > MAX_MAILS_PER_ACCOUNT_HOUR:
        return
    minutes = reset_minutes()
    with transaction():
        token, ends = _issue(user, timedelta(minutes=minutes))
        notify(user, "password_reset", "重设密码", f"有人（希望是您本人）申请重设湘西香伴平台账号 {user.email} 的密码。"
               f"请在 {minutes} 分钟内打开下面的链接设置新密码，链接只能使用一次。\n"
               "如果不是您本人操作，请忽略此邮件，您的密码不会改变。",
               f"/password/reset/{token}", in_app=False, sensitive=True, only_channels=("email",), expires_at=ends)
        record_event(subject_type="user", subject_id=user.id, action="password_reset_requested",
                     data={"expires_minutes": minutes})


def send_set_password_link(user: User, actor: User | None) -> None:
    """Queue a link for a newly opened account to choose its own password (caller commits)."""
    token, ends = _issue(user, timedelta(hours=SET_PASSWORD_HOURS))
    notify(user, "account_created", "您的湘西香伴账号已开通",
           f"已为您开通湘西香伴平台账号（{user.email}）。请在 {SET_PASSWORD_HOURS} 小时内打开下面的链接设置登录密码，"
           "链接只能使用一次；过期后可在登录页点“忘记密码”重新获取。",
           f"/password/reset/{token}", in_app=False, sensitive=True, only_channels=("email",), expires_at=ends)
    record_event(subject_type="user", subject_id=user.id, action="set_password_link_sent", actor=actor,
                 data={"expires_hours": SET_PASSWORD_HOURS})


def close_open_links(user: User, now: datetime | None = None) -> int:
    """Close (mark used) every open link of ``user`` and erase the e-mails still carrying one
    (caller's transaction); return how many links were open.

    Called by ``core.auth.revoke_all_sessions``: whatever ends every session (a password change
    or reset, sign-out everywhere, deactivation) must not leave a link that opens a new one.
    """
    now = now or utcnow()
    closed = db.session.execute(
        sa.update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False))
    scrub_sensitive(now, user_id=user.id, kinds=LINK_KINDS, reason="链接已失效，未发送")
    return int(closed.rowcount or 0)


def token_usable(token) -> bool:
    """Whether ``token`` is a reset link that would still work (for the page to say so early)."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return False
    row = db.session.scalar(sa.select(PasswordResetToken).where(PasswordResetToken.token_hash == token_hash(token)))
    return row is not None and row.used_at is None and row.expires_at > utcnow()


def reset_password(token, new_password) -> User:
    """Use a reset link: set the new password, sign out everywhere, close the account's other links.

    :raise ValidationFailed: an unknown, used or expired token (``token``), or a password the
        rule refuses (``new_password``); a refused password does not use up the link.
    """
    if not isinstance(token, str) or not token or len(token) > 200:
        raise ValidationFailed(INVALID_TOKEN, code="invalid_reset_token", fields={"token": [INVALID_TOKEN]})
    digest = token_hash(token)
    now = utcnow()
    with transaction():
        row = db.session.scalar(sa.select(PasswordResetToken).where(PasswordResetToken.token_hash == digest))
        user = db.session.get(User, row.user_id) if row is not None else None
        if row is None or row.used_at is not None or row.expires_at <= now or user is None or not user.is_active:
            raise ValidationFailed(INVALID_TOKEN, code="invalid_reset_token", fields={"token": [INVALID_TOKEN]})
        problems = password_problems(new_password, user.email)
        if problems:
            raise ValidationFailed(fields={"new_password": problems})
        # Taken once: of two requests with one link, only the first changes the row.
        taken = db.session.execute(
            sa.update(PasswordResetToken)
            .where(PasswordResetToken.id == row.id, PasswordResetToken.used_at.is_(None),
                   PasswordResetToken.expires_at > now)
            .values(used_at=now).execution_options(synchronize_session=False))
        if taken.rowcount != 1:
            raise ValidationFailed(INVALID_TOKEN, code="invalid_reset_token", fields={"token": [INVALID_TOKEN]})
        user.set_password(new_password)
        revoke_all_sessions(user)  # closes the account's other links too (``close_open_links``)
        record_event(subject_type="user", subject_id=user.id, action="password_reset", actor=user,
                     data={"token_id": row.id})
    return user
