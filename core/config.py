"""Settings read from the environment (see README "Configuration")."""
import os
import secrets
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def load_config(instance_path: Path) -> dict:
    """Build the Flask config mapping from environment variables."""
    env = os.environ
    database_url = env.get("DATABASE_URL") or f"sqlite:///{instance_path / 'xiangban.sqlite3'}"
    # SQLAlchemy needs the driver named; people paste plain postgres:// URLs.
    for prefix in ("postgres://", "postgresql://"):
        if database_url.startswith(prefix):
            database_url = "postgresql+psycopg://" + database_url[len(prefix):]
    engine_options = {"pool_pre_ping": True}
    if database_url.startswith("sqlite"):
        # Several threads (tests, dev server) share one file; wait instead of failing on a lock.
        engine_options["connect_args"] = {"timeout": 30}
    elif database_url.startswith("postgresql"):
        # A database host that stops answering fails a request in seconds, not at TCP's timeout.
        engine_options["connect_args"] = {"connect_timeout": 10}
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
