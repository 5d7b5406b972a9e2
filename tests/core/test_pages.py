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


def test_county_reviewer_registers_a_cooperative_through_the_page(client, make):
    from core.demo import demo_credit_code

    reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    client.post("/login", data={"email": reviewer.email, "password": "password123"})
    form = client.get("/cooperatives/new").get_data(as_text=True)
    assert "古丈县" in form and "花垣县" not in form
    village = make.village("古丈县")
    response = client.post("/cooperatives/new", data={
        "name": "高峰镇茶叶专业合作社", "credit_code": demo_credit_code(77), "village_id": str(village.id),
        "contact_name": "向师傅", "contact_phone": "0743-4561234"})
    assert response.status_code == 302
    assert "高峰镇茶叶专业合作社" in client.get("/cooperatives").get_data(as_text=True)


def test_cooperative_page_shows_field_errors(client, make):
    client.post("/login", data={"email": make.user(Role.ADMIN).email, "password": "password123"})
    response = client.post("/cooperatives/new", data={
        "name": "某合作社", "credit_code": "91350100M000100Y44", "village_id": "abc",
        "contact_name": "x", "contact_phone": "0743-1"})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "统一社会信用代码无效" in text


def test_consumer_may_not_open_cooperative_admin_pages(client, make):
    client.post("/login", data={"email": make.user().email, "password": "password123"})
    assert client.get("/cooperatives/new").status_code == 403
    assert client.get("/cooperatives").status_code == 403


def test_anonymous_is_sent_to_login(client):
    response = client.get("/cooperatives/new")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
