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


def test_register_refuses_a_taken_email_and_short_password(client, make):
    make.user(email="taken@test.cn")
    taken = client.post("/api/v1/auth/register",
                        json={"email": "TAKEN@test.cn", "password": "longenough", "display_name": "x"})
    assert taken.status_code == 422
    assert "email" in taken.json["error"]["fields"]
    short = client.post("/api/v1/auth/register", json={"email": "a@b.cn", "password": "short", "display_name": "x"})
    assert short.status_code == 422
    assert "password" in short.json["error"]["fields"]


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
