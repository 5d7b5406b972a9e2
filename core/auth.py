"""Who is calling: session cookies for pages, bearer tokens for the API, one policy for both.

Every view declares what it needs with ``require_login`` or ``require_roles``; scoped checks
(a county reviewer's county, a cooperative's own products) are in services via
``ensure_county`` and friends so that the API and the pages cannot disagree.
"""
from functools import wraps

from flask import current_app, g, redirect, request, session, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.errors import Forbidden, Unauthorized, wants_json
from core.extensions import db
from core.models import Role, User

_TOKEN_SALT = "xiangban-api-token"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_TOKEN_SALT)


def issue_token(user: User) -> str:
    """Return a signed, expiring API token for ``user``."""
    return _serializer().dumps({"uid": user.id, "gen": user.token_generation})


def user_from_token(token: str) -> User | None:
    """Return the active user a token names, or None if it is forged, expired or revoked."""
    try:
        payload = _serializer().loads(token, max_age=current_app.config["API_TOKEN_MAX_AGE"])
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(payload, dict):
        return None
    user = db.session.get(User, payload.get("uid"))
    if user is None or not user.is_active or user.token_generation != payload.get("gen"):
        return None
    return user


def load_current_user() -> None:
    """Before each request: set ``g.user`` from the bearer token (API) or the session (pages).

    A request that sends an Authorization header is judged by it alone, so a browser's
    cookie never authorises an API call (which would bypass CSRF).
    """
    g.user = None
    g.auth_failed = False
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        g.user = user_from_token(token.strip()) if scheme.lower() == "bearer" else None
        g.auth_failed = g.user is None
        return
    if request.path.startswith("/api/"):
        return
    user_id = session.get("user_id")
    if user_id is not None:
        user = db.session.get(User, user_id)
        if user is not None and user.is_active and session.get("gen") == user.token_generation:
            g.user = user
        else:
            session.clear()


def login_session(user: User) -> None:
    """Start an HTML session for ``user`` (fresh session against fixation)."""
    session.clear()
    session["user_id"] = user.id
    session["gen"] = user.token_generation
    session.permanent = True


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
