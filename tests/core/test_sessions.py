"""Page sessions are revocable on the server: sign-out, sign-out everywhere, password change and
deactivation end them at once, and an old copy of the cookie stops working."""
import pytest

from core.extensions import db
from core.models import Role


def _signed_in(app, user, password="password123"):
    browser = app.test_client()
    response = browser.post("/login", data={"email": user.email, "password": password})
    assert response.status_code == 302
    return browser


def _session_cookie(browser) -> str:
    return browser.get_cookie("session").value


def test_logout_revokes_the_session_cookie_on_the_server(app, make):
    user = make.user()
    browser = _signed_in(app, user)
    stolen = _session_cookie(browser)
    assert browser.post("/logout").status_code == 302
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    response = replay.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_logout_leaves_the_users_other_sessions_signed_in(app, make):
    user = make.user()
    phone, desk = _signed_in(app, user), _signed_in(app, user)
    phone.post("/logout")
    assert desk.get("/account").status_code == 200


def test_sign_out_everywhere_page_keeps_only_this_browser(app, make):
    from core.audit import history_of

    user = make.user()
    here, elsewhere = _signed_in(app, user), _signed_in(app, user)
    token = {"Authorization": f"Bearer {app.test_client().post('/api/v1/auth/token', json={'email': user.email, 'password': 'password123'}).json['token']}"}
    response = here.post("/account/sign-out-everywhere")
    assert response.status_code == 302
    assert here.get("/account").status_code == 200
    assert elsewhere.get("/account").status_code == 302
    assert app.test_client().get("/api/v1/me", headers=token).status_code == 401
    assert [event.action for event in history_of("user", user.id)] == ["sign_out_everywhere"]


def test_password_change_page_signs_out_every_other_session(app, make):
    user = make.user()
    here, elsewhere = _signed_in(app, user), _signed_in(app, user)
    headers = make.headers(user)
    response = here.post("/account", data={"current_password": "password123", "new_password": "fenghuang-1704-old"})
    assert response.status_code == 302
    assert "密码已修改" in here.get("/account").get_data(as_text=True)
    assert elsewhere.get("/account").status_code == 302
    assert app.test_client().get("/api/v1/me", headers=headers).status_code == 401
    db.session.refresh(user)
    assert user.check_password("fenghuang-1704-old")


def test_password_change_page_shows_errors_in_chinese_and_changes_nothing(app, make):
    user = make.user()
    here = _signed_in(app, user)
    response = here.post("/account", data={"current_password": "not-it-at-all", "new_password": "fenghuang-1704-old"})
    assert response.status_code == 422
    assert "当前密码不正确" in response.get_data(as_text=True)
    response = here.post("/account", data={"current_password": "password123", "new_password": "qwertyuiop"})
    assert response.status_code == 422
    assert "过于常见" in response.get_data(as_text=True)
    db.session.refresh(user)
    assert user.check_password("password123")
    assert here.get("/account").status_code == 200


def test_deactivation_ends_the_page_session_at_once(app, make):
    admin, staff = make.user(Role.ADMIN), make.user(Role.FINANCE)
    browser = _signed_in(app, staff)
    assert browser.get("/account").status_code == 200
    _signed_in(app, admin).post(f"/accounts/{staff.id}/active", data={"is_active": "0", "reason": "离职"})
    assert browser.get("/account").status_code == 302


def test_a_session_without_a_session_id_is_refused(app, make):
    """Cookies signed before revocation existed (no ``sid``) are not accepted."""
    user = make.user()
    browser = app.test_client()
    with browser.session_transaction() as session:
        session["user_id"], session["gen"] = user.id, user.token_generation
    assert browser.get("/account").status_code == 302


def test_revoked_list_keeps_only_unexpired_rows(app, make):
    import sqlalchemy as sa
    from datetime import timedelta

    from core.models import RevokedSession
    from core.timeutil import utcnow

    user = make.user()
    db.session.add(RevokedSession(sid="0" * 32, user_id=user.id, expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    _signed_in(app, user).post("/logout")
    rows = db.session.scalars(sa.select(RevokedSession)).all()
    assert len(rows) == 1 and rows[0].sid != "0" * 32
    assert rows[0].expires_at > utcnow() + app.permanent_session_lifetime - timedelta(minutes=1)
