"""Settings read from the environment (see README "Configuration")."""
import os
import secrets
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A setting the service cannot run with; its message is the one line an operator needs."""


def _instance_secret(instance_path: Path) -> str:
    """Return a development SECRET_KEY kept in ``instance/``, creating it once.

    Why: a hard-coded default would be shared by every checkout; a key generated per
    process would log everyone out on restart. A per-machine file is neither.
    """
    instance_path.mkdir(parents=True, exist_ok=True)
    key_file = instance_path / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _flag(value: str | None) -> bool | None:
    """An on/off setting from the environment; None when unset or blank."""
    if value is None or not value.strip():
        return None
    return value.strip().lower() in {"1", "true", "yes", "on"}


def engine_options_for(database_url: str) -> dict:
    """SQLAlchemy engine options that suit the database the URL names."""
    options = {"pool_pre_ping": True}
    if database_url.startswith("sqlite"):
        # Several threads (tests, dev server) share one file; wait instead of failing on a lock.
        options["connect_args"] = {"timeout": 30}
    elif database_url.startswith("postgresql"):
        # A database host that stops answering fails a request in seconds, not at TCP's timeout.
        options["connect_args"] = {"connect_timeout": 10}
    return options


def _host_of(url: str) -> str:
    """The host name of a URL (for the default sender address)."""
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "localhost"


def load_config(instance_path: Path) -> dict:
    """Build the Flask config mapping from environment variables."""
    env = os.environ
    database_url = env.get("DATABASE_URL")
    if not database_url:
        # The default database lives in instance/, which a fresh checkout does not have yet.
        instance_path.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{instance_path / 'xiangban.sqlite3'}"
    # SQLAlchemy needs the driver named; people paste plain postgres:// URLs.
    for prefix in ("postgres://", "postgresql://"):
        if database_url.startswith(prefix):
            database_url = "postgresql+psycopg://" + database_url[len(prefix):]
    engine_options = engine_options_for(database_url)
    public_base_url = env.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    secure_cookies = _flag(env.get("SESSION_COOKIE_SECURE"))
    if secure_cookies is None:
        secure_cookies = public_base_url.startswith("https://")
    return {
        "SECRET_KEY": env.get("SECRET_KEY") or _instance_secret(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
        "PUBLIC_BASE_URL": public_base_url,
        "STRIPE_SECRET_KEY": env.get("STRIPE_SECRET_KEY", ""),
        "STRIPE_WEBHOOK_SECRET": env.get("STRIPE_WEBHOOK_SECRET", ""),
        "STRIPE_API_BASE": env.get("STRIPE_API_BASE", ""),
        # The offline simulated checkout (no money moves): only where someone asked for it, as the
        # demo script does. Without it and without a Stripe key, online payment is unavailable.
        "SANDBOX_PAYMENTS": bool(_flag(env.get("SANDBOX_PAYMENTS"))),
        "SEARCH_INDEX_DIR": env.get("SEARCH_INDEX_DIR") or str(instance_path / "search_index"),
        "REDIS_URL": env.get("REDIS_URL", ""),
        # API bearer tokens live one hour by default: a stolen token is good for little, and clients
        # simply ask POST /api/v1/auth/token again (the answer says when it expires).
        "API_TOKEN_MAX_AGE": int(env.get("API_TOKEN_MAX_AGE", 3600)),
        # A page session ends after this long without a request (Flask re-signs it on each one).
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=int(env.get("SESSION_LIFETIME_HOURS", 12))),
        # How long a browser that signed in stays a "known device" for sign-in limits (core.ratelimit).
        "KNOWN_DEVICE_MAX_AGE": int(env.get("KNOWN_DEVICE_MAX_AGE_DAYS", 180)) * 24 * 3600,
        # Reverse proxies in front of the app whose X-Forwarded-For/-Proto are trusted (0: none, so a
        # client cannot pick its own address for the sign-in limits).
        "TRUSTED_PROXY_COUNT": int(env.get("TRUSTED_PROXY_COUNT", 0)),
        # Default yearly consumption-assistance sales target per village: ¥150,000 (plan 第四章 三(二)).
        "DEFAULT_VILLAGE_SALES_TARGET_FEN": 15_000_000,
        "CERTIFICATE_VALIDITY_YEARS": int(env.get("CERTIFICATE_VALIDITY_YEARS", 3)),
        # E-mail of the notifications outbox (core.mail); without SMTP_HOST mail waits in the outbox.
        "SMTP_HOST": env.get("SMTP_HOST", ""),
        "SMTP_PORT": int(env.get("SMTP_PORT", 587)),
        "SMTP_USER": env.get("SMTP_USER", ""),
        "SMTP_PASSWORD": env.get("SMTP_PASSWORD", ""),
        "SMTP_STARTTLS": bool(_flag(env.get("SMTP_STARTTLS"))),
        "MAIL_FROM": env.get("MAIL_FROM") or f"湘西香伴 <noreply@{_host_of(public_base_url)}>",
        "NOTIFICATION_MAX_ATTEMPTS": int(env.get("NOTIFICATION_MAX_ATTEMPTS", 6)),
        "NOTIFICATION_RETRY_SECONDS": int(env.get("NOTIFICATION_RETRY_SECONDS", 60)),
        # A password-reset link works this long, once.
        "PASSWORD_RESET_MINUTES": int(env.get("PASSWORD_RESET_MINUTES", 60)),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Secure cookies (sent over HTTPS only) when the public address is https, unless set explicitly.
        "SESSION_COOKIE_SECURE": secure_cookies,
        # Strict-Transport-Security on HTTPS responses, in seconds (0 switches it off).
        "HSTS_MAX_AGE": int(env.get("HSTS_MAX_AGE", 365 * 24 * 3600)),
        "WTF_CSRF_TIME_LIMIT": None,
        "JSON_AS_ASCII": False,
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    }


def check_config(config) -> None:
    """Refuse settings the service would run wrongly with, before it answers anyone.

    :raise ConfigError: a Stripe key without the webhook secret (payments could never be
        confirmed), or a DATABASE_URL SQLAlchemy cannot use.
    """
    if config.get("STRIPE_SECRET_KEY") and not config.get("STRIPE_WEBHOOK_SECRET"):
        raise ConfigError("已设置 STRIPE_SECRET_KEY 但缺少 STRIPE_WEBHOOK_SECRET：无法校验支付回调，拒绝启动 "
                          "(STRIPE_SECRET_KEY is set without STRIPE_WEBHOOK_SECRET)")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    uri = config.get("SQLALCHEMY_DATABASE_URI") or ""
    try:
        make_url(uri).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        raise ConfigError(f"DATABASE_URL 无法使用（{_without_password(uri)}）：应为 postgresql://… 或 sqlite:///… "
                          f"(DATABASE_URL is not a usable database URL: {exc.__class__.__name__})") from None


def check_database(engine) -> None:
    """Connect once, so a wrong host, database or password stops the start instead of every request.

    :raise ConfigError: the database cannot be reached or refuses the connection.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else exc.__class__.__name__
        raise ConfigError(f"无法连接数据库 {_without_password(str(engine.url))}：{reason} "
                          "(cannot connect to DATABASE_URL)") from None


def check_schema(engine) -> None:
    """The server's own check: the database has been set up (``flask --app wsgi setup``).

    Not part of ``wsgi``: the setup command itself loads the app before the schema exists.

    :raise ConfigError: no migration has been applied to this database.
    """
    import sqlalchemy as sa

    if not sa.inspect(engine).has_table("alembic_version"):
        raise ConfigError(f"数据库 {_without_password(str(engine.url))} 尚未初始化：请先运行 flask --app wsgi setup "
                          "(the database has no schema yet)")


def _without_password(uri: str) -> str:
    """A database URL fit for a log line."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparseable URL is shown by its scheme only
        return uri.split(":", 1)[0] + ":…"


def upload_root(app) -> "Path":
    """Where uploaded files live (``UPLOAD_DIR``, default ``instance/uploads``): photos, evidence."""
    configured = app.config.get("UPLOAD_DIR") or os.environ.get("UPLOAD_DIR")
    return Path(configured) if configured else Path(app.instance_path) / "uploads"
