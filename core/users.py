"""Account use cases: registration, sign-in, password change and sign-out, and the staff accounts
administrators and county reviewers manage (every change audited)."""
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from core.audit import record_event
from core.auth import known_device_id, login_session, revoke_all_sessions, revoke_current
from core.db import unique_or_conflict
from core.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from core.extensions import db
from core.models import BudgetUnit, Cooperative, Role, User, Village
from core.notifications import notify
from core.passwords import password_problems
from core.ratelimit import SignInLimits
from core.schemas import PasswordChangeSchema, RegisterSchema, UserCreateSchema, UserUpdateSchema
from core.timeutil import shanghai_today

#: Who may open the account pages and ``/api/v1/users``.
ACCOUNT_MANAGERS = (Role.ADMIN, Role.COUNTY_REVIEWER)


def find_by_email(email) -> User | None:
    """The account with this e-mail address, ignoring case and surrounding spaces (None if none)."""
    if not isinstance(email, str):
        return None
    return db.session.scalar(sa.select(User).where(sa.func.lower(User.email) == email.strip().lower()))


def _email_taken(email: str) -> bool:
    return find_by_email(email) is not None


def _burn_password_check(password) -> None:
    """Hash ``password`` against a dummy hash, so an unknown e-mail costs as long as a known one."""
    dummy = current_app.extensions.get("dummy_password_hash")
    if dummy is None:
        method = current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
        dummy = current_app.extensions["dummy_password_hash"] = generate_password_hash("dummy-password", method=method)
    check_password_hash(dummy, password if isinstance(password, str) else "")


@dataclass
class Registration:
    """The outcome of a registration: ``created`` False means the e-mail already had an account."""

    email: str
    display_name: str
    user: User | None

    @property
    def created(self) -> bool:
        return self.user is not None


def register_consumer(data: dict) -> Registration:
    """Create a consumer account from public registration input, without telling whether the
    e-mail was taken.

    A taken e-mail changes no account: the attempt is recorded on the existing account's audit
    trail, its owner is told by e-mail (once a day at most) and the caller gets a
    ``Registration`` without a user, answered like a success (README "Registration").

    :raise ValidationError: invalid input or a password the rule refuses (422).
    """
    fields = RegisterSchema().load(data)
    existing = find_by_email(fields["email"])
    if existing is not None:
        _burn_password_check(fields["password"])  # as long as creating one would take
        return _registration_of_taken_email(existing, fields)
    user = User(email=fields["email"].lower(), display_name=fields["display_name"], role=Role.CONSUMER.value)
    user.set_password(fields["password"])
    try:
        db.session.add(user)
        db.session.flush()
        record_event(subject_type="user", subject_id=user.id, action="register", actor=user, to_state="active",
                     data={"role": user.role})
        db.session.commit()
    except IntegrityError:
        # The same e-mail registered at the same moment won the unique key: answered exactly as
        # a taken e-mail is, so a race reveals no more than a second try would.
        db.session.rollback()
        existing = find_by_email(fields["email"])
        if existing is None:
            raise
        return _registration_of_taken_email(existing, fields)
    return Registration(user.email, user.display_name, user)


def _registration_of_taken_email(existing: User, fields: dict) -> Registration:
    """Record the attempt on the existing account, tell its owner, and answer like a success
    without a user."""
    for notify_owner in (True, False):
        record_event(subject_type="user", subject_id=existing.id, action="registration_attempt",
                     comment="有人用此邮箱注册（账号未改变）")
        if notify_owner:
            # The owner learns of it by e-mail, at most once a day (someone may try again and again).
            notify(existing, "registration_attempt", "有人尝试用您的邮箱注册",
                   f"有人在湘西香伴平台用您的邮箱 {existing.email} 申请注册新账号，您的账号未受影响。"
                   "如果是您本人忘记了已有账号，可以直接登录，或通过下面的链接重设密码；如果不是您本人，请忽略此邮件。",
                   "/password/forgot", in_app=False, only_channels=("email",),
                   dedupe_key=f"registration_attempt:{shanghai_today().isoformat()}")
        try:
            db.session.commit()
        except IntegrityError:
            # A simultaneous attempt wrote today's notice first: keep the audit record, not a second mail.
            db.session.rollback()
            if not notify_owner:
                raise
            continue
        break
    return Registration(fields["email"].lower(), fields["display_name"], None)


def _scope_errors(fields: dict, role: Role) -> dict[str, list[str]]:
    """The scope a role needs (county, cooperative, budget unit), and nothing it does not use."""
    errors: dict[str, list[str]] = {}
    needs = {Role.COUNTY_REVIEWER: "county", Role.COOPERATIVE: "cooperative_id",
             Role.CANTEEN_BUYER: "budget_unit_id"}
    for scope in ("county", "cooperative_id", "budget_unit_id"):
        given = fields.get(scope) is not None
        if needs.get(role) == scope and not given:
            errors[scope] = [f"角色 {role.label} 必须指定"]
        elif needs.get(role) != scope and given:
            errors[scope] = [f"角色 {role.label} 不使用此项"]
    if fields.get("cooperative_id") is not None and db.session.get(Cooperative, fields["cooperative_id"]) is None:
        errors["cooperative_id"] = ["合作社不存在"]
    if fields.get("budget_unit_id") is not None and db.session.get(BudgetUnit, fields["budget_unit_id"]) is None:
        errors["budget_unit_id"] = ["预算单位不存在"]
    if fields.get("is_approver") and role is not Role.CANTEEN_BUYER:
        errors["is_approver"] = ["只有机关食堂采购员可以担任审批人"]
    return errors


def _ensure_may_create(actor: User | None, role: Role, cooperative_id) -> None:
    """Admins (and the command line, ``actor`` None) create any role; a county reviewer only
    logins for a cooperative of its own county.

    :raise Forbidden: anyone else, another role, or a cooperative of another county.
    """
    if actor is None or actor.has_role(Role.ADMIN):
        return
    if actor.has_role(Role.COUNTY_REVIEWER) and role is Role.COOPERATIVE:
        cooperative = db.session.get(Cooperative, cooperative_id) if cooperative_id is not None else None
        if cooperative is None or cooperative.county == actor.county:
            return  # a missing cooperative is a validation error, reported with the others
        raise Forbidden("只能为本县的合作社开设账号")
    raise Forbidden("县级审核员只能开设合作社账号" if actor.has_role(Role.COUNTY_REVIEWER) else "无权开设账号")


def create_user(data: dict, actor: User | None = None) -> User:
    """Create an account with any role and the scope that role needs (audited).

    County reviewers need a county, cooperative members a cooperative, canteen buyers a
    budget unit; a scope that does not belong to the role is refused rather than ignored.
    ``actor`` None is the command line. ``send_password_link`` (``UserCreateSchema``): e-mail the
    new account a one-time link to choose its own password, in the same transaction
    (``core.password_reset``); ``password`` may then be left out.

    :raise Forbidden: ``actor`` may not create this account (``_ensure_may_create``).
    :raise ValidationFailed: invalid input, missing or foreign scope, or a taken email.
    """
    fields = UserCreateSchema().load(data)
    role = Role(fields["role"])
    _ensure_may_create(actor, role, fields.get("cooperative_id"))
    errors = _scope_errors(fields, role)
    if _email_taken(fields["email"]):
        errors["email"] = ["该邮箱已注册"]
    if errors:
        raise ValidationFailed(fields=errors)
    user = User(
        email=fields["email"].lower(),
        display_name=fields["display_name"],
        role=role.value,
        county=fields.get("county"),
        cooperative_id=fields.get("cooperative_id"),
        budget_unit_id=fields.get("budget_unit_id"),
        is_approver=fields.get("is_approver", False),
    )
    # Without one given, a secret nobody learns: the owner chooses a password through the link.
    user.set_password(fields.get("password") or secrets.token_urlsafe(24))
    with unique_or_conflict("该邮箱已注册", "duplicate_email"):  # a simultaneous creation of the same e-mail
        db.session.add(user)
        db.session.flush()
        record_event(subject_type="user", subject_id=user.id, action="create", actor=actor, to_state="active",
                     data={"role": user.role, "county": user.county, "cooperative_id": user.cooperative_id,
                           "budget_unit_id": user.budget_unit_id, "email": user.email,
                           "is_approver": user.is_approver})
        if fields["send_password_link"]:
            from core.password_reset import send_set_password_link

            send_set_password_link(user, actor)
    return user


def authenticate(email, password) -> User:
    """Return the active user with these credentials, taking as long for an unknown e-mail.

    :raise Unauthorized: unknown email, wrong password or a disabled account (one message for all).
    """
    user = find_by_email(email)
    if user is None:
        _burn_password_check(password)
    elif isinstance(password, str) and user.check_password(password) and user.is_active:
        return user
    raise Unauthorized("邮箱或密码不正确", code="invalid_credentials")


def sign_in(email, password) -> User:
    """``authenticate`` behind the sign-in limits (``core.ratelimit.SignInLimits``): failures are
    counted per account and address, or per known device.

    :raise RateLimited: too many recent failures for this attempt's counters (429).
    :raise Unauthorized: bad credentials (401), counted.
    """
    limits = SignInLimits(email, known_device_id(find_by_email(email)))
    limits.check()
    try:
        return authenticate(email, password)
    except Unauthorized:
        limits.failed()
        raise


def change_password(user: User, data: dict) -> User:
    """Change ``user``'s password after checking the current one; every other session and
    token dies (``revoke_all_sessions``), audited. The caller re-issues its own session or token.

    :raise RateLimited: too many wrong current passwords lately (429).
    :raise ValidationFailed: wrong current password, or a new one the rule refuses (422).
    """
    fields = PasswordChangeSchema().load(data)
    limits = SignInLimits(user.email, None)
    limits.check()
    if not user.check_password(fields["current_password"]):
        limits.failed()
        raise ValidationFailed(fields={"current_password": ["当前密码不正确"]})
    problems = password_problems(fields["new_password"], user.email)
    if not problems and user.check_password(fields["new_password"]):
        problems = ["新密码不能与当前密码相同"]
    if problems:
        raise ValidationFailed(fields={"new_password": problems})
    user.set_password(fields["new_password"])
    revoke_all_sessions(user)
    record_event(subject_type="user", subject_id=user.id, action="password_change", actor=user)
    db.session.commit()
    return user


def sign_out(user: User | None) -> None:
    """Revoke the session cookie or API token of this request (others stay signed in)."""
    if user is None:
        return
    revoke_current()
    db.session.commit()


def sign_out_everywhere(user: User, *, keep_page_session: bool = False) -> None:
    """Revoke every session and token of ``user`` (audited); optionally keep the caller's page
    session by re-issuing it with the new generation."""
    revoke_all_sessions(user)
    record_event(subject_type="user", subject_id=user.id, action="sign_out_everywhere", actor=user)
    db.session.commit()
    if keep_page_session:
        login_session(user)


# ---------------------------------------------------------------- staff accounts (admin, county reviewers)

def _visible_accounts(actor: User) -> sa.Select:
    """The accounts ``actor`` manages: all for admins; the logins of its county's cooperatives
    for a county reviewer.

    :raise Forbidden: any other role.
    """
    query = sa.select(User)
    if actor.has_role(Role.ADMIN):
        return query
    if actor.has_role(Role.COUNTY_REVIEWER):
        return (query.join(Cooperative, User.cooperative_id == Cooperative.id)
                .join(Village, Cooperative.village_id == Village.id)
                .where(User.role == Role.COOPERATIVE.value, Village.county == actor.county))
    raise Forbidden("无权管理账号")


def list_accounts(actor: User, *, role: str | None = None, is_active: bool | None = None,
                  q: str | None = None) -> sa.Select:
    """The accounts ``actor`` manages, newest first, filtered by role, state or an e-mail/name fragment."""
    query = _visible_accounts(actor)
    if role:
        query = query.where(User.role == role)
    if is_active is not None:
        query = query.where(User.is_active.is_(is_active))
    if q:
        pattern = f"%{q.strip().lower()}%"
        query = query.where(sa.or_(sa.func.lower(User.email).like(pattern), sa.func.lower(User.display_name).like(pattern)))
    return query.order_by(User.id.desc())


def get_account(actor: User, user_id: int) -> User:
    """One account ``actor`` manages.

    :raise NotFound: absent, or not one of ``actor``'s accounts (404 either way).
    """
    user = db.session.scalar(_visible_accounts(actor).where(User.id == user_id))
    if user is None:
        raise NotFound("账号不存在")
    return user


def update_account(actor: User, user_id: int, data: dict) -> User:
    """Change an account's display name, or deactivate / reactivate it (audited old → new).

    Deactivation signs the account out everywhere at once (its tokens and sessions die).

    :raise NotFound: not one of ``actor``'s accounts.
    :raise Conflict: an administrator deactivating their own account (409).
    :raise ValidationFailed: invalid input (422).
    """
    fields = UserUpdateSchema().load(data)
    user = get_account(actor, user_id)
    reason = fields.get("reason", "")
    if fields.get("is_active") is False and user.id == actor.id:
        raise Conflict("不能停用自己的账号", code="cannot_deactivate_self")
    if "is_approver" in fields and not actor.has_role(Role.ADMIN):
        raise Forbidden("只有管理员可以指定审批人")
    if fields.get("is_approver") and not user.has_role(Role.CANTEEN_BUYER):
        raise ValidationFailed(fields={"is_approver": ["只有机关食堂采购员可以担任审批人"]})
    if "display_name" in fields and fields["display_name"] != user.display_name:
        record_event(subject_type="user", subject_id=user.id, action="rename", actor=actor, comment=reason,
                     data={"display_name": [user.display_name, fields["display_name"]]})
        user.display_name = fields["display_name"]
    if "is_active" in fields and fields["is_active"] != user.is_active:
        before, after = ("active", "inactive") if user.is_active else ("inactive", "active")
        user.is_active = fields["is_active"]
        if not user.is_active:
            revoke_all_sessions(user)
        record_event(subject_type="user", subject_id=user.id, action="deactivate" if not user.is_active else "activate",
                     actor=actor, from_state=before, to_state=after, comment=reason)
    if "is_approver" in fields and fields["is_approver"] != user.is_approver:
        user.is_approver = fields["is_approver"]
        record_event(subject_type="user", subject_id=user.id, action="approver" if user.is_approver else "not_approver",
                     actor=actor, comment=reason, data={"budget_unit_id": user.budget_unit_id})
    db.session.commit()
    return user


def account_creation_roles(actor: User) -> list[Role]:
    """The roles ``actor`` may give a new account (for the form)."""
    return list(Role) if actor.has_role(Role.ADMIN) else [Role.COOPERATIVE]
