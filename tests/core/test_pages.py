"""HTML sign-in with CSRF, per-role navigation, and pages in Chinese."""
import re

import pytest

from core.models import Role


def test_home_is_chinese_and_phone_ready(client):
    html = client.get("/").get_data(as_text=True)
    assert 'lang="zh-CN"' in html and 'name="viewport"' in html and "湘西香伴" in html


def test_login_form_requires_csrf_token(app, make):
    user = make.user()
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        client = app.test_client()
        refused = client.post("/login", data={"email": user.email, "password": "password123"})
        assert refused.status_code == 400
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        accepted = client.post("/login", data={"email": user.email, "password": "password123", "csrf_token": token})
        assert accepted.status_code == 302
    finally:
        app.config["WTF_CSRF_ENABLED"] = False


def test_wrong_password_on_page_shows_chinese_error(client, make):
    user = make.user()
    response = client.post("/login", data={"email": user.email, "password": "nope"})
    assert response.status_code == 401
    assert "邮箱或密码不正确" in response.get_data(as_text=True)


def test_login_does_not_redirect_off_site(client, make):
    user = make.user()
    response = client.post("/login?next=//evil.example/", data={"email": user.email, "password": "password123"})
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("role", list(Role))
def test_signed_in_header_shows_role(client, make, role):
    user = make.user(role)
    client.post("/login", data={"email": user.email, "password": "password123"})
    assert role.label in client.get("/").get_data(as_text=True)


def test_register_page_creates_consumer_and_signs_in(client):
    response = client.post("/register", data={"email": "new@test.cn", "password": "longenough", "display_name": "新用户"})
    assert response.status_code == 302
    assert "新用户" in client.get("/").get_data(as_text=True)
