"""Fixed-window rate limits for endpoints that attract guessing (sign-in, registration).

Counts live in Redis when ``REDIS_URL`` is set, so every gunicorn worker shares them;
otherwise in this process's memory (fine for one development server).
"""
import threading
import time
from functools import wraps

from flask import current_app, request

from core.errors import RateLimited


class MemoryCounter:
    """Per-process counters with expiry; pruned lazily."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit on ``key`` in the current window and return the window's total."""
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > 10_000:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            count, expires = self._counts.get(key, (0, now + window_seconds))
            if expires <= now:
                count, expires = 0, now + window_seconds
            self._counts[key] = (count + 1, expires)
            return count + 1

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


class RedisCounter:
    """Counters shared by all processes through Redis INCR + EXPIRE."""

    def __init__(self, url: str):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def hit(self, key: str, window_seconds: int) -> int:
        """Count one hit on ``key`` and return the window's total."""
        bucket = f"xiangban:rl:{key}:{int(time.time() // window_seconds)}"
        pipe = self._redis.pipeline()
        pipe.incr(bucket)
        pipe.expire(bucket, window_seconds + 1)
        count, _ = pipe.execute()
        return int(count)

    def clear(self) -> None:
        for key in self._redis.scan_iter("xiangban:rl:*"):
            self._redis.delete(key)


def _counter():
    app = current_app
    counter = app.extensions.get("rate_limit_counter")
    if counter is None:
        url = app.config.get("REDIS_URL")
        counter = RedisCounter(url) if url else MemoryCounter()
        app.extensions["rate_limit_counter"] = counter
    return counter


def rate_limited(scope: str, default_limit: int, window_seconds: int = 60):
    """Allow ``default_limit`` requests per client address per window; more → 429.

    The limit can be tuned with the ``RATE_LIMIT_<SCOPE>`` setting (0 disables it).
    """

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            limit = current_app.config.get(f"RATE_LIMIT_{scope.upper()}", default_limit)
            if limit:
                count = _counter().hit(f"{scope}:{request.remote_addr}", window_seconds)
                if count > limit:
                    raise RateLimited(fields={"retry_after_seconds": [str(window_seconds)]})
            return view(*args, **kwargs)

        return wrapper

    return decorator
