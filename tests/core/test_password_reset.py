"""Password reset by a one-time e-mailed link (issue #11): same answer for every e-mail, a link
that works once within PASSWORD_RESET_MINUTES, the password rule, every session ended, audited."""
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.audit import history_of
from core.extensions import db
from core.models import Role, User
from core.notifications import Notification, send_pending
from core.password_reset import PasswordResetToken, token_hash, token_usable
from core.timeutil import utcnow
from tests.mail_helpers import free_port, smtp_server  # noqa: F401  (fixture)

LINK = re.compile(r"https://trace\.example\.cn/password/reset/([A-Za-z0-9_\-]+)")


def _ask(client, email):
    return client.post("/api/v1/auth/password-reset", json={"email": email})


def _link_token(smtp_server, user) -> str:
    send_pending()
    [message] = smtp_server.to(user.email)
    return LINK.search(message.get_content()).group(1)


def _confirm(client, token, password="maojian-tea-2026"):
    return client.post("/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": password})


def test_a_reset_link_arrives_by_email_and_sets_a_new_password_once(client, make, smtp_server):
    user = make.user(Role.COOPERATIVE)
    old_token = make.headers(user)
    response = _ask(client, user.email.upper())
    assert response.status_code == 202

    send_pending()
    [message] = smtp_server.to(user.email)
    assert message["Subject"] == "【湘西香伴】重设密码"
    text = message.get_content()
    assert "60 分钟内" in text and "只能使用一次" in text and "如果不是您本人操作" in text
    token = LINK.search(text).group(1)

    done = _confirm(client, token)
    assert done.status_code == 200 and done.get_json()["user"]["email"] == user.email
    assert client.get("/api/v1/me", headers=old_token).status_code == 401  # every session ended
    assert client.post("/api/v1/auth/token", json={"email": user.email, "password": "maojian-tea-2026"}).status_code == 200
    again = _confirm(client, token, "another-long-pass-2026")
    assert again.status_code == 422 and again.get_json()["error"]["code"] == "invalid_reset_token"
    assert [e.action for e in history_of("user", user.id)][-2:] == ["password_reset_requested", "password_reset"]


def test_only_a_hash_of_the_token_is_kept_and_the_sent_link_is_erased(client, make, smtp_server):
    user = make.user(Role.CONSUMER)
    _ask(client, user.email)
    token = _link_token(smtp_server, user)
    row = db.session.scalar(sa.select(PasswordResetToken))
    assert row.token_hash == token_hash(token) and token not in row.token_hash
    notice = db.session.scalar(sa.select(Notification).where(Notification.kind == "password_reset"))
    assert not notice.in_app and notice.link is None and token not in notice.body


def test_an_unknown_email_gets_the_same_answer_and_nothing_is_sent(client, make, smtp_server):
    user = make.user(Role.CONSUMER)
    known, unknown = _ask(client, user.email), _ask(client, "nobody@test.cn")
    assert (known.status_code, known.get_json()) == (unknown.status_code, unknown.get_json())
    inactive = make.user(Role.CONSUMER, is_active=False)
    assert _ask(client, inactive.email).get_json() == known.get_json()
    send_pending()
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [[user.email]]


def test_an_expired_link_is_refused(app, client, make, smtp_server):
    user = make.user(Role.CONSUMER)
    _ask(client, user.email)
    token = _link_token(smtp_server, user)
    row = db.session.scalar(sa.select(PasswordResetToken))
    assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(minutes=60)
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert _confirm(client, token).status_code == 422
    db.session.refresh(user)
    assert user.check_password("password123")


def test_a_wrong_token_is_refused(client, make):
    make.user(Role.CONSUMER)
    response = _confirm(client, "not-a-real-token")
    assert response.status_code == 422 and response.get_json()["error"]["fields"]["token"]


def test_a_refused_password_does_not_use_up_the_link(client, make, smtp_server):
    user = make.user(Role.CONSUMER)
    _ask(client, user.email)
    token = _link_token(smtp_server, user)
    weak = _confirm(client, token, "password")
    assert weak.status_code == 422 and "new_password" in weak.get_json()["error"]["fields"]
    assert _confirm(client, token).status_code == 200


def test_using_one_link_closes_the_others(client, make, smtp_server):
    user = make.user(Role.CONSUMER)
    _ask(client, user.email)
    _ask(client, user.email)
    send_pending()
    first, second = (LINK.search(m.get_content()).group(1) for m in smtp_server.to(user.email))
    assert _confirm(client, second).status_code == 200
    assert _confirm(client, first, "another-long-pass-2026").status_code == 422


def test_requests_are_rate_limited_per_address(app, client, make):
    app.config["RATE_LIMIT_PASSWORD_RESET"] = 3
    try:
        statuses = [_ask(client, f"someone{n}@test.cn").status_code for n in range(4)]
    finally:
        app.config.pop("RATE_LIMIT_PASSWORD_RESET")
    assert statuses == [202, 202, 202, 429]


def test_one_account_gets_at_most_five_mails_an_hour(app, client, make):
    user = make.user(Role.CONSUMER)
    app.config["RATE_LIMIT_PASSWORD_RESET"] = 0
    try:
        assert {_ask(client, user.email).status_code for _ in range(7)} == {202}
    finally:
        app.config.pop("RATE_LIMIT_PASSWORD_RESET")
    assert db.session.scalar(sa.select(sa.func.count(PasswordResetToken.id))) == 5


def test_the_pages_reset_the_password_and_sign_the_old_session_out(client, make, smtp_server):
    user = make.user(Role.CONSUMER)
    other_browser = client.application.test_client()
    with other_browser.session_transaction() as session:
        session.update(user_id=user.id, gen=user.token_generation, sid="o" * 32)
    assert "退出" in other_browser.get("/").get_data(as_text=True)

    assert "忘记密码" in client.get("/login").get_data(as_text=True)
    known = client.post("/password/forgot", data={"email": user.email}).get_data(as_text=True)
    unknown = client.post("/password/forgot", data={"email": "ghost@test.cn"}).get_data(as_text=True)
    assert "如果该邮箱已注册" in known and known == unknown
    token = _link_token(smtp_server, user)

    form = client.get(f"/password/reset/{token}")
    assert form.status_code == 200 and "设置新密码" in form.get_data(as_text=True)
    assert "no-referrer" in form.get_data(as_text=True)
    weak = client.post(f"/password/reset/{token}", data={"new_password": "12345678"})
    assert weak.status_code == 422 and "常见" in weak.get_data(as_text=True)
    done = client.post(f"/password/reset/{token}", data={"new_password": "maojian-tea-2026"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/login")
    assert "退出" not in other_browser.get("/").get_data(as_text=True)
    used = client.get(f"/password/reset/{token}")
    assert used.status_code == 404 and "无效、已使用或已过期" in used.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, user.id).check_password("maojian-tea-2026")


def test_a_new_staff_account_can_be_sent_a_link_to_choose_its_password(client, make, smtp_server):
    county_reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    cooperative = make.cooperative()
    with client.session_transaction() as session:
        session.update(user_id=county_reviewer.id, gen=county_reviewer.token_generation, sid="r" * 32)
    response = client.post("/accounts/new", data={"email": "member.new@test.cn", "display_name": "新社员",
                                                  "password": "", "role": "cooperative",
                                                  "cooperative_id": str(cooperative.id), "send_password_link": "1"})
    assert response.status_code == 302
    created = db.session.scalar(sa.select(User).where(User.email == "member.new@test.cn"))
    assert [e.action for e in history_of("user", created.id)] == ["create", "set_password_link_sent"]
    send_pending()
    [message] = smtp_server.to("member.new@test.cn")
    assert message["Subject"] == "【湘西香伴】您的湘西香伴账号已开通" and "72 小时内" in message.get_content()
    token = LINK.search(message.get_content()).group(1)
    assert _confirm(client, token).status_code == 200
    assert client.post("/api/v1/auth/token", json={"email": "member.new@test.cn",
                                                   "password": "maojian-tea-2026"}).status_code == 200


def test_registering_a_taken_email_tells_its_owner_by_email_once_a_day(client, make, smtp_server):
    owner = make.user(Role.CONSUMER)
    for _ in range(2):
        response = client.post("/api/v1/auth/register", json={"email": owner.email, "password": "Xiangxi-2026-long",
                                                               "display_name": "冒名者"})
        assert response.status_code == 201 and response.get_json()["token"] is None
    send_pending()
    [message] = smtp_server.to(owner.email)
    assert "有人尝试用您的邮箱注册" in message["Subject"] and "/password/forgot" in message.get_content()
    assert client.get("/api/v1/notifications", headers=make.headers(owner)).get_json()["total"] == 0


def test_a_reset_mail_still_waiting_when_its_link_expires_is_not_sent(client, make, smtp_server):
    user = make.user(Role.CONSUMER)
    _ask(client, user.email)
    report = send_pending(now=utcnow() + timedelta(minutes=61))  # the mail server was down for an hour
    assert report.scrubbed == 1 and smtp_server.messages == []  # dropped before any claim
    notice = db.session.scalar(sa.select(Notification).where(Notification.kind == "password_reset"))
    assert notice.link is None and "已过有效期" in notice.deliveries[0].last_error


def test_the_users_api_can_send_the_set_password_link_instead_of_a_password(client, make, smtp_server):
    admin = make.headers(make.user(Role.ADMIN))
    response = client.post("/api/v1/users", headers=admin, json={
        "email": "finance.new@test.cn", "display_name": "新财务", "role": "finance", "send_password_link": True})
    assert response.status_code == 201, response.get_json()
    send_pending()
    [message] = smtp_server.to("finance.new@test.cn")
    assert _confirm(client, LINK.search(message.get_content()).group(1)).status_code == 200
    refused = client.post("/api/v1/users", headers=admin, json={
        "email": "x@test.cn", "display_name": "x", "role": "finance", "send_password_link": "yes"})
    assert refused.status_code == 422 and "send_password_link" in refused.get_json()["error"]["fields"]
    assert client.post("/api/v1/users", headers=admin, json={
        "email": "y@test.cn", "display_name": "y", "role": "finance"}).status_code == 422  # no password, no link


# ---------------------------------------------------------------- links end with the sessions; unsent links are erased

def _reset_notices(user) -> list[Notification]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Notification).where(
        Notification.user_id == user.id, Notification.kind == "password_reset").order_by(Notification.id)))


def _unsent_link(client, user) -> str:
    """Ask for a link that stays in the outbox (no SMTP server here) and read its token there."""
    _ask(client, user.email)
    return _reset_notices(user)[-1].link.rsplit("/", 1)[1]


def _signed_in_browser(app, user):
    browser = app.test_client()
    assert browser.post("/login", data={"email": user.email, "password": "password123"}).status_code == 302
    return browser


def _change_on_the_page(app, client, make, user):
    response = _signed_in_browser(app, user).post(
        "/account", data={"current_password": "password123", "new_password": "fenghuang-1704-old"})
    assert response.status_code == 302


def _change_by_api(app, client, make, user):
    response = client.post("/api/v1/auth/password", headers=make.headers(user),
                           json={"current_password": "password123", "new_password": "fenghuang-1704-old"})
    assert response.status_code == 200


def _sign_out_everywhere_on_the_page(app, client, make, user):
    assert _signed_in_browser(app, user).post("/account/sign-out-everywhere").status_code == 302


def _sign_out_everywhere_by_api(app, client, make, user):
    assert client.post("/api/v1/auth/logout-all", headers=make.headers(user)).status_code == 200


def _deactivate(app, client, make, user):
    response = client.patch(f"/api/v1/users/{user.id}", headers=make.headers(make.user(Role.ADMIN)),
                            json={"is_active": False, "reason": "离职"})
    assert response.status_code == 200


def _reset_with_another_link(app, client, make, user):
    assert _confirm(client, _unsent_link(client, user)).status_code == 200


@pytest.mark.parametrize("end_sessions", [_change_on_the_page, _change_by_api, _sign_out_everywhere_on_the_page,
                                          _sign_out_everywhere_by_api, _deactivate, _reset_with_another_link])
def test_whatever_ends_every_session_closes_the_open_links_and_erases_their_unsent_mail(app, client, make,
                                                                                         end_sessions):
    user = make.user(Role.CONSUMER)
    token = _unsent_link(client, user)
    assert token_usable(token)
    end_sessions(app, client, make, user)
    assert not token_usable(token)
    first = _reset_notices(user)[0]
    assert first.link is None and token not in first.body
    assert [(d.status, d.last_error) for d in first.deliveries] == [("failed", "链接已失效，未发送")]
    db.session.get(User, user.id).is_active = True  # even reactivated, the old link stays dead
    db.session.commit()
    assert _confirm(client, token, "another-long-pass-2026").status_code == 422


def test_an_unsent_link_is_erased_by_the_next_pass_once_expired_even_without_smtp(make, client, runner):
    user = make.user(Role.CONSUMER)
    nowhere = make.user(Role.CONSUMER, email="nobody.reads@xiangban.test")  # no channel wants it
    token = _unsent_link(client, user)
    _ask(client, nowhere.email)
    assert send_pending().waiting_channels == ["email"]
    [waiting] = _reset_notices(user)
    assert token in waiting.link  # still usable and still unsent: kept for the mail server
    [undeliverable] = _reset_notices(nowhere)
    assert undeliverable.link is None  # nothing will ever carry it

    waiting.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    result = runner.invoke(args=["notifications", "send"])
    assert result.exit_code == 0
    [erased] = _reset_notices(user)
    assert erased.link is None and token not in erased.body
    assert [(d.status, d.last_error) for d in erased.deliveries] == [("failed", "已过有效期，未发送")]


def test_a_link_the_server_keeps_refusing_is_erased_once_it_expires(app, make, client):
    user = make.user(Role.CONSUMER)
    _ask(client, user.email)
    saved = {key: app.config.get(key) for key in ("SMTP_HOST", "SMTP_PORT")}
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=free_port())  # nobody answers
    try:
        assert send_pending().retried == 1
        assert _reset_notices(user)[0].link is not None
        assert send_pending(now=utcnow() + timedelta(minutes=61)).handled == 0  # not due, but expired
    finally:
        app.config.update(saved)
    [erased] = _reset_notices(user)
    assert erased.link is None and [d.status for d in erased.deliveries] == ["failed"]


def test_the_users_service_takes_a_link_instead_of_a_password_and_a_password_without_one(make, smtp_server):
    from marshmallow import ValidationError

    from core import users

    created = users.create_user({"email": "cli.new@test.cn", "display_name": "新账号", "role": "finance",
                                 "send_password_link": True})
    db.session.commit()
    assert created.password_hash  # a secret nobody knows, until the owner uses the link
    send_pending()
    assert len(smtp_server.to("cli.new@test.cn")) == 1
    with pytest.raises(ValidationError) as refused:
        users.create_user({"email": "no.link@test.cn", "display_name": "无链接", "role": "finance"})
    assert refused.value.messages == {"password": ["必填"]}
