"""Rate limits for endpoints that attract guessing (sign-in, registration).

Counts live in Redis when ``REDIS_URL`` is set, so every gunicorn worker shares them;
otherwise in this process's memory (fine for one development server). If Redis stops
answering, this process falls back to its own memory rather than refusing every sign-in.

The client address is ``request.remote_addr``; behind a reverse proxy set
``TRUSTED_PROXY_COUNT`` (``core.app``: werkzeug's ProxyFix) so that it is the real client's
address from ``X-Forwarded-For`` and not the proxy's.

Sign-in is limited on *failures*, per account and per address (``SignInLimits``); see its
docstring for why a correct password is not refused for other people's failures.
"""
import hashlib
import logging
import threading
import time
from functools import wraps

from flask import current_app, request

from core.errors import RateLimited

log = logging.getLogger(__name__)


class MemoryCounter:
    """Per-process fixed-window counters; pruned lazily."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def _live(self, key: str, window_seconds: int, now: float) -> tuple[int, float]:
        count, expires = self._counts.get(key, (0, now + window_seconds))
        return (0, now + window_seconds) if expires <= now else (count, expires)

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit on ``key`` in the current window and return the window's total."""
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > 10_000:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            count, expires = self._live(key, window_seconds, now)
            self._counts[key] = (count + 1, expires)
            return count + 1

    def count(self, key: str, window_seconds: int) -> int:
        """The window's total for ``key`` so far, without counting a hit."""
        with self._lock:
            return self._live(key, window_seconds, time.monotonic())[0]

    def clear(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()


class RedisCounter:
    """Counters shared by all processes through Redis INCR + EXPIRE (fixed windows)."""

    def __init__(self, url: str):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    @staticmethod
    def _bucket(key: str, window_seconds: int) -> str:
        return f"xiangban:rl:{key}:{window_seconds}:{int(time.time() // window_seconds)}"

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit on ``key`` and return the window's total."""
        bucket = self._bucket(key, window_seconds)
        pipe = self._redis.pipeline()
        pipe.incr(bucket)
        pipe.expire(bucket, window_seconds + 1)
        count, _ = pipe.execute()
        return int(count)

    def count(self, key: str, window_seconds: int) -> int:
        """The window's total for ``key`` so far, without counting a hit."""
        return int(self._redis.get(self._bucket(key, window_seconds)) or 0)

    def clear(self) -> None:
        """Forget every count (tests)."""
        for key in self._redis.scan_iter("xiangban:rl:*"):
            self._redis.delete(key)


class FallbackCounter:
    """Redis, or this process's memory while Redis fails (logged): limits weaken, sign-in keeps working."""

    def __init__(self, primary: RedisCounter):
        self.primary, self.fallback = primary, MemoryCounter()

    def _call(self, name: str, *args):
        import redis

        try:
            return getattr(self.primary, name)(*args)
        except redis.RedisError as exc:
            log.warning("rate limit counter in Redis unavailable (%s); counting in this process", exc)
            return getattr(self.fallback, name)(*args)

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit (Redis, else memory)."""
        return self._call("hit", key, window_seconds)

    def count(self, key: str, window_seconds: int) -> int:
        """Read a count (Redis, else memory)."""
        return self._call("count", key, window_seconds)

    def clear(self) -> None:
        """Forget every count in both."""
        self.fallback.clear()
        self._call("clear")


def counter():
    """This app's counter: shared through Redis when ``REDIS_URL`` is set."""
    app = current_app
    existing = app.extensions.get("rate_limit_counter")
    if existing is None:
        url = app.config.get("REDIS_URL")
        existing = FallbackCounter(RedisCounter(url)) if url else MemoryCounter()
        app.extensions["rate_limit_counter"] = existing
    return existing


def client_address() -> str:
    """The caller's address (the real client's when ``TRUSTED_PROXY_COUNT`` names the proxies)."""
    return request.remote_addr or "-"


def rate_limited(scope: str, default_limit: int, window_seconds: int = 60):
    """Allow ``default_limit`` requests per client address per window; more → 429.

    The limit can be tuned with the ``RATE_LIMIT_<SCOPE>`` setting (0 disables it).
    """

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            limit = current_app.config.get(f"RATE_LIMIT_{scope.upper()}", default_limit)
            if limit:
                count = counter().hit(f"{scope}:{client_address()}", window_seconds)
                if count > limit:
                    raise RateLimited(fields={"retry_after_seconds": [str(window_seconds)]})
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _email_key(email) -> str:
    """An account's counter key: a digest, so Redis never holds e-mail addresses."""
    text = email.strip().lower() if isinstance(email, str) else ""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class SignInLimits:
    """Failed sign-ins counted per account and per address, checked before a password is tried.

    Four counters, each over ``SIGN_IN_WINDOW_SECONDS`` (15 minutes by default):

    - ``RATE_LIMIT_SIGN_IN_ACCOUNT_ADDRESS`` (10): failures on one e-mail from one address;
      guessing one account from one place stops here, and nobody else is touched.
    - ``RATE_LIMIT_SIGN_IN_ACCOUNT`` (50): failures on one e-mail from all addresses
      (guessing spread over many addresses).
    - ``RATE_LIMIT_SIGN_IN_ADDRESS`` (200): failures from one address on any e-mail
      (one password sprayed over many accounts).
    - ``RATE_LIMIT_SIGN_IN_DEVICE`` (10): failures from a *known device*.

    A known device is a browser or client holding the signed ``xb_device`` cookie that a
    successful sign-in to *that* account gave it. Its attempts on that account are judged only by
    its own failures, never by the other three counters: so the administrator who has signed
    in from this browser before gets in with the right password even while someone behind the
    same proxy address (or anywhere) is failing on the admin account or spraying others.
    Without such a cookie (a first sign-in from a new device), the right password is refused
    only while that very account is under attack from that address (10 failures) or from
    everywhere (50), or the address itself is spraying (200); other people's failures on
    *other* accounts below the spray limit never refuse it. Successes are never counted.
    Setting a limit to 0 switches that counter off.
    """

    DEFAULTS = {"ACCOUNT_ADDRESS": 10, "ACCOUNT": 50, "ADDRESS": 200, "DEVICE": 10}

    def __init__(self, email, device_id: str | None):
        self.device_id = device_id
        account, address = _email_key(email), client_address()
        if device_id:
            self.keys = {"DEVICE": f"signin:dev:{device_id}:{account}"}
        else:
            self.keys = {"ACCOUNT_ADDRESS": f"signin:acct-addr:{account}:{address}",
                         "ACCOUNT": f"signin:acct:{account}", "ADDRESS": f"signin:addr:{address}"}

    @staticmethod
    def window() -> int:
        """The counting window in seconds."""
        return int(current_app.config.get("SIGN_IN_WINDOW_SECONDS", 900))

    def _limit(self, name: str) -> int:
        return int(current_app.config.get(f"RATE_LIMIT_SIGN_IN_{name}", self.DEFAULTS[name]))

    def check(self) -> None:
        """Refuse the attempt before any password is tried.

        :raise RateLimited: one of this attempt's counters is at its limit (429).
        """
        counts = counter()
        for name, key in self.keys.items():
            limit = self._limit(name)
            if limit and counts.count(key, self.window()) >= limit:
                raise RateLimited("登录失败次数过多，请稍后再试",
                                  fields={"retry_after_seconds": [str(self.window())]})

    def failed(self) -> None:
        """Count one failed attempt on every counter this attempt is judged by."""
        counts = counter()
        for name, key in self.keys.items():
            if self._limit(name):
                counts.hit(key, self.window())
