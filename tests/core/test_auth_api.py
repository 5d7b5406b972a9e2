"""Accounts, tokens and the role policy through the public API."""
import pytest

from core.models import Role


def test_register_creates_a_consumer_and_token_works(client):
    response = client.post("/api/v1/auth/register",
                           json={"email": "Li@Example.cn", "password": "longenough", "display_name": "小李"})
    assert response.status_code == 201
    assert response.json["role"] == "consumer"
    token = client.post("/api/v1/auth/token", json={"email": "li@example.cn", "password": "longenough"}).json["token"]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert set(me.json) >= {"id", "email", "role", "county", "cooperative_id", "budget_unit_id"}
    assert me.json["email"] == "li@example.cn"


def test_register_answers_a_taken_email_like_a_new_one_without_an_account_or_token(client, make):
    from core.audit import history_of

    owner = make.user(email="taken@test.cn")
    new = client.post("/api/v1/auth/register",
                      json={"email": "fresh@test.cn", "password": "longenough", "display_name": "x"})
    taken = client.post("/api/v1/auth/register",
                        json={"email": "TAKEN@test.cn", "password": "longenough", "display_name": "x"})
    assert new.status_code == taken.status_code == 201
    assert set(new.json) == set(taken.json), "the same fields either way"
    assert new.json["message"] == taken.json["message"]
    assert "已注册" not in str(taken.json) or "若已注册" in taken.json["message"]
    assert taken.json["token"] is None and taken.json["id"] is None
    # Nothing about the existing account changed: its password still works, the attempt is on its trail.
    assert client.post("/api/v1/auth/token", json={"email": owner.email, "password": "password123"}).status_code == 200
    assert client.post("/api/v1/auth/token", json={"email": owner.email, "password": "longenough"}).status_code == 401
    assert [event.action for event in history_of("user", owner.id)] == ["registration_attempt"]


def test_register_refuses_a_short_common_or_email_password(client):
    for password, email in (("short", "a@b.cn"), ("password123", "a@b.cn"), ("ZhangSan@Test.cn", "zhangsan@test.cn"),
                            ("zhangsan", "zhangsan@test.cn")):
        response = client.post("/api/v1/auth/register", json={"email": email, "password": password, "display_name": "x"})
        assert response.status_code == 422, password
        assert "password" in response.json["error"]["fields"]
    from core.models import User
    from core.extensions import db
    import sqlalchemy as sa

    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_wrong_password_is_401_in_the_contract_shape(client, make):
    user = make.user()
    response = client.post("/api/v1/auth/token", json={"email": user.email, "password": "wrong-password"})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_credentials"
    assert response.json["error"]["message"]


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Basic abc", "Bearer "])
def test_bad_credentials_are_401(client, header):
    response = client.get("/api/v1/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


def test_no_credentials_is_401(client):
    assert client.get("/api/v1/me").status_code == 401


def test_token_is_revoked_when_generation_changes(client, make):
    from core.extensions import db

    user = make.user()
    headers = make.headers(user)
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    user.token_generation += 1
    db.session.commit()
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_disabled_user_cannot_sign_in_or_use_a_token(client, make):
    from core.extensions import db

    user = make.user()
    headers = make.headers(user)
    user.is_active = False
    db.session.commit()
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    assert client.post("/api/v1/auth/token", json={"email": user.email, "password": "password123"}).status_code == 401


@pytest.mark.parametrize("role", list(Role))
def test_me_reports_each_roles_scope(client, make, role):
    user = make.user(role)
    body = client.get("/api/v1/me", headers=make.headers(user)).json
    assert body["role"] == role.value
    assert (body["county"] is not None) == (role is Role.COUNTY_REVIEWER)
    assert (body["cooperative_id"] is not None) == (role is Role.COOPERATIVE)
    assert (body["budget_unit_id"] is not None) == (role is Role.CANTEEN_BUYER)


def test_session_cookie_does_not_authorise_the_api(client, make):
    """The API is bearer-only, so a browser's cookie can never be used for CSRF against it."""
    user = make.user(Role.ADMIN)
    client.post("/login", data={"email": user.email, "password": "password123"})
    assert client.get("/api/v1/me").status_code == 401


def _token(client, user, password="password123"):
    return client.post("/api/v1/auth/token", json={"email": user.email, "password": password}).json["token"]


def test_token_answer_says_when_it_expires(app, client, make):
    user = make.user()
    body = client.post("/api/v1/auth/token", json={"email": user.email, "password": "password123"}).json
    assert body["expires_in"] == app.config["API_TOKEN_MAX_AGE"] == 3600
    from datetime import datetime

    assert datetime.fromisoformat(body["expires_at"]).utcoffset() is not None


def test_a_token_past_its_lifetime_is_refused(app, client, make):
    user = make.user()
    headers = {"Authorization": f"Bearer {_token(client, user)}"}
    app.config["API_TOKEN_MAX_AGE"] = -1  # every token is now older than its lifetime
    try:
        assert client.get("/api/v1/me", headers=headers).status_code == 401
    finally:
        app.config["API_TOKEN_MAX_AGE"] = 3600


def test_logout_revokes_only_the_calling_token(client, make):
    user = make.user()
    first, second = ({"Authorization": f"Bearer {_token(client, user)}"} for _ in range(2))
    assert client.post("/api/v1/auth/logout", headers=first).json == {"revoked": "token"}
    assert client.get("/api/v1/me", headers=first).status_code == 401
    assert client.post("/api/v1/auth/logout", headers=first).status_code == 401
    assert client.get("/api/v1/me", headers=second).status_code == 200


def test_logout_all_revokes_every_token_and_page_session(client, make, app):
    from core.audit import history_of

    user = make.user()
    browser = app.test_client()
    browser.post("/login", data={"email": user.email, "password": "password123"})
    assert browser.get("/account").status_code == 200
    first, second = ({"Authorization": f"Bearer {_token(client, user)}"} for _ in range(2))
    assert client.post("/api/v1/auth/logout-all", headers=first).status_code == 200
    assert client.get("/api/v1/me", headers=first).status_code == 401
    assert client.get("/api/v1/me", headers=second).status_code == 401
    assert browser.get("/account").status_code == 302
    assert [event.action for event in history_of("user", user.id)] == ["sign_out_everywhere"]


def test_password_change_by_api_kills_other_tokens_and_answers_a_new_one(client, make):
    user = make.user()
    old = {"Authorization": f"Bearer {_token(client, user)}"}
    other = {"Authorization": f"Bearer {_token(client, user)}"}
    response = client.post("/api/v1/auth/password", headers=old,
                           json={"current_password": "password123", "new_password": "jishou-river-2026"})
    assert response.status_code == 200
    assert client.get("/api/v1/me", headers=old).status_code == 401
    assert client.get("/api/v1/me", headers=other).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {response.json['token']}"}).status_code == 200
    assert client.post("/api/v1/auth/token", json={"email": user.email, "password": "password123"}).status_code == 401
    assert client.post("/api/v1/auth/token", json={"email": user.email, "password": "jishou-river-2026"}).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"current_password": "wrong-one-here", "new_password": "jishou-river-2026"}, "current_password"),
    ({"current_password": "password123", "new_password": "12345678"}, "new_password"),
    ({"current_password": "password123", "new_password": "password123"}, "new_password"),
    ({"current_password": "password123"}, "new_password"),
])
def test_password_change_refuses_bad_input_and_changes_nothing(client, make, body, field):
    user = make.user()
    headers = make.headers(user)
    response = client.post("/api/v1/auth/password", headers=headers, json=body)
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]
    assert client.get("/api/v1/me", headers=headers).status_code == 200, "nothing was revoked"
    assert client.post("/api/v1/auth/token", json={"email": user.email, "password": "password123"}).status_code == 200


def test_auth_endpoints_need_a_token(client):
    for path in ("/api/v1/auth/logout", "/api/v1/auth/logout-all", "/api/v1/auth/password"):
        assert client.post(path, json={}).status_code == 401


def test_revoke_all_sessions_is_a_generation_bump_the_caller_commits(client, make):
    """The mechanism the password-reset flow relies on: bump and commit, nothing else."""
    from core.auth import revoke_all_sessions
    from core.extensions import db

    user = make.user()
    headers = make.headers(user)
    before = user.token_generation
    revoke_all_sessions(user)
    assert user.token_generation == before + 1
    db.session.commit()
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_unknown_email_costs_a_password_hash_too(app, client, monkeypatch):
    """Equal-time sign-in: an unknown e-mail still runs one hash check, like a known one."""
    import core.users

    calls = []
    real = core.users.check_password_hash
    monkeypatch.setattr(core.users, "check_password_hash", lambda *args: calls.append(args) or real(*args))
    response = client.post("/api/v1/auth/token", json={"email": "nobody@test.cn", "password": "whatever-1"})
    assert response.status_code == 401
    assert len(calls) == 1 and calls[0][1] == "whatever-1"


def test_a_disabled_account_costs_a_hash_and_gets_the_same_answer(client, make):
    from core.extensions import db

    user = make.user()
    user.is_active = False
    db.session.commit()
    disabled = client.post("/api/v1/auth/token", json={"email": user.email, "password": "password123"})
    unknown = client.post("/api/v1/auth/token", json={"email": "nobody@test.cn", "password": "password123"})
    assert disabled.status_code == unknown.status_code == 401
    assert disabled.json == unknown.json
