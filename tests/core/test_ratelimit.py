"""Sign-in failures are limited per account and per address (in memory or shared through Redis),
a correct password is not refused for other people's failures, and the client address is the
real one only behind a configured proxy."""
import pytest
from flask import Flask, request

from core.models import Role
from core.ratelimit import MemoryCounter, RedisCounter, counter

REDIS_URL = "redis://127.0.0.1:6379/2"


@pytest.fixture
def limits(app):
    """Set sign-in limits for one test; the defaults come back after it."""
    names = []

    def set_limits(**values):
        for name, value in values.items():
            key = f"RATE_LIMIT_SIGN_IN_{name.upper()}"
            names.append(key)
            app.config[key] = value

    yield set_limits
    for key in names:
        app.config.pop(key, None)


def _token(client, email, password, address="10.0.0.1"):
    return client.post("/api/v1/auth/token", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def test_failures_on_one_account_from_one_address_refuse_it_there(app, client, make, limits):
    limits(account_address=3)
    user = make.user()
    codes = [_token(client, user.email, "wrong-one").status_code for _ in range(4)]
    blocked = _token(client, user.email, "password123")
    assert codes == [401, 401, 401, 429]
    assert blocked.status_code == 429
    assert blocked.json["error"]["code"] == "rate_limited"
    assert blocked.headers["Retry-After"]
    # From another address the owner still gets in.
    assert _token(app.test_client(), user.email, "password123", address="10.0.0.2").status_code == 200


def test_other_peoples_failures_from_the_same_address_never_refuse_a_correct_password(app, client, make, limits):
    """The probe's case: everyone behind one proxy address, many bad logins, then the admin's right one."""
    limits(account_address=3)
    admin = make.user(Role.ADMIN)
    for n in range(8):
        for _ in range(5):  # each of these accounts is now locked from this address
            _token(client, f"someone{n}@test.cn", "guess-guess")
    assert _token(app.test_client(), admin.email, "password123").status_code == 200


def test_a_known_device_signs_in_while_its_account_is_under_attack(app, make, limits):
    limits(account_address=3, account=5)
    admin = make.user(Role.ADMIN)
    admins_browser, attacker, stranger = app.test_client(), app.test_client(), app.test_client()
    assert admins_browser.post("/login", data={"email": admin.email, "password": "password123"},
                               environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code == 302
    for address in ("10.0.0.1", "10.0.0.9"):  # same proxy address as the admin, and elsewhere
        for _ in range(4):
            _token(attacker, admin.email, "wrong-guess", address=address)
    assert _token(stranger, admin.email, "password123").status_code == 429, "a new device is held back"
    signed_in = admins_browser.post("/login", data={"email": admin.email, "password": "password123"},
                                    environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert signed_in.status_code == 302, "the admin's own browser is judged by its own failures"


def test_a_known_device_is_limited_by_its_own_failures(app, make, limits):
    limits(device=2)
    user = make.user()
    browser = app.test_client()
    browser.post("/login", data={"email": user.email, "password": "password123"})
    codes = [browser.post("/login", data={"email": user.email, "password": "nope-nope"}).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_a_device_cookie_of_another_account_is_no_exemption(app, make, limits):
    limits(account_address=2)
    mine, target = make.user(), make.user()
    browser = app.test_client()
    browser.post("/login", data={"email": mine.email, "password": "password123"})
    for _ in range(2):
        browser.post("/login", data={"email": target.email, "password": "nope-nope"})
    assert browser.post("/login", data={"email": target.email, "password": "password123"}).status_code == 429


def test_one_address_spraying_many_accounts_is_stopped(app, client, make, limits):
    limits(address=4)
    victim = make.user()
    for n in range(4):
        _token(client, f"user{n}@test.cn", "spray-password")
    assert _token(client, victim.email, "spray-password").status_code == 429
    assert _token(client, victim.email, "password123", address="10.0.0.7").status_code == 200


def test_successes_are_not_counted(app, client, make, limits):
    limits(account_address=2, address=2)
    user = make.user()
    assert all(_token(client, user.email, "password123").status_code == 200 for _ in range(5))


def test_login_form_shares_the_limits(app, client, make, limits):
    limits(account_address=2)
    user = make.user()
    for _ in range(2):
        _token(client, user.email, "wrong-one", address="127.0.0.1")
    response = client.post("/login", data={"email": user.email, "password": "password123"})
    assert response.status_code == 429
    assert "登录失败次数过多" in response.get_data(as_text=True)


def test_remote_address_comes_from_the_trusted_proxy_only():
    from core.app import register_proxy

    def tiny(hops):
        app = Flask("tiny")
        app.config["TRUSTED_PROXY_COUNT"] = hops
        register_proxy(app)
        app.add_url_rule("/", "addr", lambda: f"{request.remote_addr} {request.scheme}")
        return app.test_client()

    headers = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"}
    direct = tiny(0).get("/", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    proxied = tiny(1).get("/", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert direct.get_data(as_text=True) == "10.0.0.1 http", "a client cannot choose its own address"
    assert proxied.get_data(as_text=True) == "203.0.113.5 https"


def test_memory_counter_counts_per_key():
    counts = MemoryCounter()
    assert [counts.hit("a", 60) for _ in range(3)] == [1, 2, 3]
    assert counts.count("a", 60) == 3
    assert counts.hit("b", 60) == 1


def _redis_or_skip():
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")


def test_redis_counter_is_shared_between_instances():
    _redis_or_skip()
    first, second = RedisCounter(REDIS_URL), RedisCounter(REDIS_URL)
    first.clear()
    assert first.hit("shared", 60) == 1
    assert second.hit("shared", 60) == 2
    assert second.count("shared", 60) == 2
    first.clear()


@pytest.fixture
def redis_limits(app):
    """Sign-in counters in the real Redis (DB 2), emptied before and after."""
    _redis_or_skip()
    app.config["REDIS_URL"] = REDIS_URL
    app.extensions.pop("rate_limit_counter", None)
    counter().clear()
    yield
    counter().clear()
    app.config["REDIS_URL"] = ""
    app.extensions.pop("rate_limit_counter", None)


def test_failures_are_shared_by_every_worker_through_redis(app, client, make, limits, redis_limits):
    limits(account_address=3)
    user = make.user()
    for _ in range(3):
        app.extensions.pop("rate_limit_counter", None)  # each attempt lands on a "new worker"
        assert _token(client, user.email, "wrong-one").status_code == 401
    app.extensions.pop("rate_limit_counter", None)
    assert _token(client, user.email, "password123").status_code == 429
    assert _token(client, user.email, "password123", address="10.0.0.2").status_code == 200


def test_a_correct_password_is_not_refused_for_others_failures_through_redis(app, client, make, limits,
                                                                          redis_limits):
    limits(account_address=2)
    admin = make.user(Role.ADMIN)
    for n in range(6):
        for _ in range(3):
            _token(client, f"other{n}@test.cn", "bad-guess")
    assert _token(app.test_client(), admin.email, "password123").status_code == 200


def test_sign_in_keeps_working_when_redis_is_down(app, client, make, limits):
    limits(account_address=2)
    app.config["REDIS_URL"] = "redis://127.0.0.1:1/0"
    app.extensions.pop("rate_limit_counter", None)
    try:
        user = make.user()
        assert _token(client, user.email, "password123").status_code == 200
        stranger = app.test_client()  # no known-device cookie
        codes = [_token(stranger, user.email, "wrong-one").status_code for _ in range(3)]
    finally:
        app.config["REDIS_URL"] = ""
    assert codes == [401, 401, 429], "counted in this process meanwhile"
