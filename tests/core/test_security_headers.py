"""Browser security: a CSP without inline script, framing refused, nosniff, referrer policy,
HSTS over HTTPS, Secure cookies when the site is HTTPS, and templates free of inline JavaScript."""
import re
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, load_config


def test_pages_carry_a_strict_script_policy(client):
    response = client.get("/")
    policy = response.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in directives["script-src"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_api_answers_carry_the_headers_too(client):
    response = client.get("/api/v1/me")
    assert "Content-Security-Policy" in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_hsts_only_over_https(client):
    assert "Strict-Transport-Security" not in client.get("/").headers
    secure = client.get("/", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_session_cookie_is_httponly_and_lax(client, make):
    user = make.user()
    response = client.post("/login", data={"email": user.email, "password": "password123"})
    cookies = response.headers.getlist("Set-Cookie")
    session = next(cookie for cookie in cookies if cookie.startswith("session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session
    device = next(cookie for cookie in cookies if cookie.startswith("xb_device="))
    assert "HttpOnly" in device


@pytest.mark.parametrize("env, secure", [
    ({}, False), ({"PUBLIC_BASE_URL": "https://xiangban.example.cn"}, True),
    ({"PUBLIC_BASE_URL": "https://xiangban.example.cn", "SESSION_COOKIE_SECURE": "0"}, False),
    ({"SESSION_COOKIE_SECURE": "true"}, True),
])
def test_secure_cookies_follow_https_unless_set(monkeypatch, tmp_path, env, secure):
    for name in ("PUBLIC_BASE_URL", "SESSION_COOKIE_SECURE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_config(tmp_path)["SESSION_COOKIE_SECURE"] is secure


def test_secure_setting_marks_the_cookies_secure(app, client, make):
    user = make.user()
    app.config["SESSION_COOKIE_SECURE"] = True
    try:
        response = client.post("/login", data={"email": user.email, "password": "password123"},
                               base_url="https://localhost")
    finally:
        app.config["SESSION_COOKIE_SECURE"] = False
    cookies = response.headers.getlist("Set-Cookie")
    assert all("Secure" in cookie for cookie in cookies if cookie.startswith(("session=", "xb_device=")))


TEMPLATES = sorted((PROJECT_ROOT / "templates").rglob("*.html"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_templates_have_no_inline_javascript(template: Path):
    text = template.read_text(encoding="utf-8")
    assert not re.search(r"\son[a-z]+\s*=", text), "event-handler attribute"
    assert not re.search(r"javascript:", text, re.IGNORECASE)
    for tag in re.finditer(r"<script\b([^>]*)>(.*?)</script>", text, re.DOTALL | re.IGNORECASE):
        assert "src=" in tag.group(1) and not tag.group(2).strip(), "inline script body"


def test_the_behaviour_script_is_served(client):
    response = client.get("/static/js/app.js")
    assert response.status_code == 200
    assert "data-confirm" in response.get_data(as_text=True)
