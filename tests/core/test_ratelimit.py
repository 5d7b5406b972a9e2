"""Sign-in guessing is limited per client address, in memory or shared through Redis."""
import pytest

from core.ratelimit import MemoryCounter, RedisCounter


def test_token_endpoint_answers_429_after_the_limit(app, client, make):
    user = make.user()
    app.config["RATE_LIMIT_SIGN_IN"] = 3
    try:
        codes = [client.post("/api/v1/auth/token", json={"email": user.email, "password": "wrong-one"}).status_code
                 for _ in range(4)]
        blocked = client.post("/api/v1/auth/token", json={"email": user.email, "password": "password123"})
    finally:
        app.config.pop("RATE_LIMIT_SIGN_IN")
    assert codes == [401, 401, 401, 429]
    assert blocked.status_code == 429
    assert blocked.json["error"]["code"] == "rate_limited"
    assert blocked.headers["Retry-After"] == "60"


def test_login_form_shares_the_limit(app, client, make):
    user = make.user()
    app.config["RATE_LIMIT_SIGN_IN"] = 2
    try:
        for _ in range(2):
            client.post("/login", data={"email": user.email, "password": "nope"})
        response = client.post("/login", data={"email": user.email, "password": "password123"})
    finally:
        app.config.pop("RATE_LIMIT_SIGN_IN")
    assert response.status_code == 429
    assert "请求过于频繁" in response.get_data(as_text=True)


def test_memory_counter_counts_per_key():
    counter = MemoryCounter()
    assert [counter.hit("a", 60) for _ in range(3)] == [1, 2, 3]
    assert counter.hit("b", 60) == 1


def test_redis_counter_is_shared_between_instances():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    first, second = RedisCounter("redis://127.0.0.1:6379/15"), RedisCounter("redis://127.0.0.1:6379/15")
    first.clear()
    assert first.hit("shared", 60) == 1
    assert second.hit("shared", 60) == 2
    first.clear()
