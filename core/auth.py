"""Who is calling: session cookies for pages, bearer tokens for the API, one policy for both.

Both carry a random session id and the user's ``token_generation``: signing out puts the id on
the revoked list (``revoke_current``), and ``revoke_all_sessions`` ends them all.

Every view declares what it needs with ``require_login`` or ``require_roles``; scoped checks
(a county reviewer's county, a cooperative's own products) are in services via
``ensure_county`` and friends so that the API and the pages cannot disagree.
"""
import secrets
from datetime import timedelta
from functools import wraps

import sqlalchemy as sa
from flask import current_app, g, redirect, request, session, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.errors import Forbidden, Unauthorized, wants_json
from core.extensions import db
from core.models import RevokedSession, Role, User
from core.timeutil import utcnow

_TOKEN_SALT = "xiangban-api-token"
_DEVICE_SALT = "xiangban-known-device"
DEVICE_COOKIE = "xb_device"


def _serializer(salt: str = _TOKEN_SALT) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def _new_sid() -> str:
    """A random session id (128 bits): what one sign-out revokes."""
    return secrets.token_hex(16)


def issue_token(user: User) -> str:
    """Return a signed API token for ``user`` that expires after ``API_TOKEN_MAX_AGE`` seconds.

    Nothing is stored: the token names the user, their ``token_generation`` and its own random
    ``sid``, which ``revoke_current`` writes to the revoked list at sign-out.
    """
    return _serializer().dumps({"uid": user.id, "gen": user.token_generation, "sid": _new_sid()})


def _active_user(user_id, generation, sid) -> User | None:
    """The active user whose generation is still ``generation`` and whose ``sid`` is not revoked.

    One round trip: the user and the revocation check in one query.
    """
    if not isinstance(user_id, int) or not isinstance(generation, int) or not isinstance(sid, str):
        return None
    revoked = sa.select(RevokedSession.sid).where(RevokedSession.sid == sid).exists()
    # Fresh from the database even if this session already holds the user (a reused session must
    # not keep a revoked user signed in).
    row = db.session.execute(sa.select(User, revoked).where(User.id == user_id)
                             .execution_options(populate_existing=True)).first()
    if row is None:
        return None
    user, is_revoked = row
    if is_revoked or not user.is_active or user.token_generation != generation:
        return None
    return user


def user_from_token(token: str) -> User | None:
    """Return the active user a token names, or None if it is forged, expired or revoked."""
    try:
        payload = _serializer().loads(token, max_age=current_app.config["API_TOKEN_MAX_AGE"])
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(payload, dict):
        return None
    user = _active_user(payload.get("uid"), payload.get("gen"), payload.get("sid"))
    if user is not None:
        g.auth_sid = payload["sid"]
    return user


def load_current_user() -> None:
    """Before each request: set ``g.user`` from the bearer token (API) or the session (pages).

    A request that sends an Authorization header is judged by it alone, so a browser's
    cookie never authorises an API call (which would bypass CSRF).
    """
    g.user = None
    g.auth_failed = False
    g.auth_kind = None
    g.auth_sid = None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        g.user = user_from_token(token.strip()) if scheme.lower() == "bearer" else None
        g.auth_failed = g.user is None
        g.auth_kind = "token" if g.user else None
        return
    if request.path.startswith("/api/"):
        return
    user_id = session.get("user_id")
    if user_id is not None:
        user = _active_user(user_id, session.get("gen"), session.get("sid"))
        if user is not None:
            g.user, g.auth_kind, g.auth_sid = user, "session", session["sid"]
        else:
            session.clear()


def login_session(user: User) -> None:
    """Start an HTML session for ``user``: a fresh session (against fixation) with a new ``sid``."""
    session.clear()
    session["user_id"] = user.id
    session["gen"] = user.token_generation
    session["sid"] = _new_sid()
    session.permanent = True


def revoke_current() -> None:
    """Revoke the session cookie or token of this request (the caller commits).

    Its ``sid`` is kept on the revoked list until the cookie or token would have expired
    anyway; rows past that are pruned here, so the list holds only recent sign-outs.
    """
    user, sid = current_user(), g.get("auth_sid")
    if user is None or not sid:
        return
    lifetime = (timedelta(seconds=current_app.config["API_TOKEN_MAX_AGE"]) if g.get("auth_kind") == "token"
                else current_app.permanent_session_lifetime)
    now = utcnow()
    db.session.execute(sa.delete(RevokedSession).where(RevokedSession.expires_at < now))
    # Two sign-outs of one token at once (a double click, a retried request) both succeed.
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    db.session.execute(insert(RevokedSession).values(sid=sid, user_id=user.id, revoked_at=now,
                                                     expires_at=now + lifetime).on_conflict_do_nothing())


def revoke_all_sessions(user: User) -> None:
    """Sign ``user`` out everywhere: every session cookie and API token issued so far stops working.

    Bumping ``user.token_generation`` and committing is all it takes (password change, reset,
    deactivation, "sign out everywhere"): each request compares the generation its cookie or
    token carries with the user's. It also closes the user's open reset and set-password links
    (``core.password_reset.close_open_links``). This does not commit; call it inside your use case
    and commit with it (and your audit event). The caller's own page session can be kept by
    calling ``login_session(user)`` afterwards (it then carries the new generation).
    """
    user.token_generation = (user.token_generation or 0) + 1
    # A reset or set-password link would open a new session: it ends with the others.
    from core.password_reset import close_open_links  # that module imports this one

    close_open_links(user)


def known_device_id(user: User | None) -> str | None:
    """The known-device id this request's ``xb_device`` cookie carries for ``user``, if any.

    A successful sign-in gives the browser that cookie; ``core.ratelimit.SignInLimits`` judges
    its later attempts on the same account by its own failures only.
    """
    raw = request.cookies.get(DEVICE_COOKIE)
    if user is None or not raw:
        return None
    try:
        payload = _serializer(_DEVICE_SALT).loads(raw, max_age=current_app.config["KNOWN_DEVICE_MAX_AGE"])
    except (BadSignature, SignatureExpired):
        return None
    if isinstance(payload, dict) and payload.get("uid") == user.id and isinstance(payload.get("dev"), str):
        return payload["dev"]
    return None


def remember_device(response, user: User):
    """Give the browser a signed known-device cookie for ``user`` (after a successful sign-in)."""
    value = _serializer(_DEVICE_SALT).dumps({"uid": user.id, "dev": secrets.token_hex(16)})
    response.set_cookie(DEVICE_COOKIE, value, max_age=current_app.config["KNOWN_DEVICE_MAX_AGE"],
                        httponly=True, samesite="Lax", secure=current_app.config.get("SESSION_COOKIE_SECURE", False))
    return response


def current_user() -> User | None:
    """The signed-in user, or None."""
    return g.get("user")


def _deny_anonymous():
    if wants_json():
        raise Unauthorized("凭证无效或已过期" if g.get("auth_failed") else "请先登录")
    return redirect(url_for("core.login", next=request.full_path.rstrip("?")))


def require_login(view):
    """Allow any signed-in user; anonymous → 401 (API) or the login page (HTML)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if current_user() is None:
            return _deny_anonymous()
        return view(*args, **kwargs)

    wrapper.login_required = True  # read by core.openapi: the operation needs a bearer token
    return wrapper


def require_roles(*roles: Role):
    """Allow signed-in users holding one of ``roles``; others → 403."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                return _deny_anonymous()
            if not user.has_role(*roles):
                raise Forbidden("当前角色无权执行此操作")
            return view(*args, **kwargs)

        # Read by core.openapi: who may call the operation, written in the document.
        wrapper.login_required = True
        wrapper.required_roles = tuple(Role(role) for role in roles)
        return wrapper

    return decorator


def ensure_county(user: User, county: str) -> None:
    """Raise 403 unless ``user`` may act in ``county`` (admins and prefecture staff everywhere).

    :raise Forbidden: a county reviewer outside their own county.
    """
    if user.has_role(Role.ADMIN, Role.PREFECTURE_REVIEWER):
        return
    if user.has_role(Role.COUNTY_REVIEWER) and user.county == county:
        return
    raise Forbidden("只能处理本县的事务")


def ensure_cooperative_member(user: User, cooperative_id: int) -> None:
    """Raise 403 unless ``user`` belongs to the cooperative (admins may act for any).

    :raise Forbidden: another cooperative's member or a role without cooperative rights.
    """
    if user.has_role(Role.ADMIN):
        return
    if user.has_role(Role.COOPERATIVE) and user.cooperative_id == cooperative_id:
        return
    raise Forbidden("只能管理本合作社的产品")
