"""Notifications (issue #11): the outbox is written in the event's own transaction, the e-mail
worker delivers each notice once through a real SMTP server (retrying what the server refused),
every producer tells the right people, and each user reads and marks only their own inbox."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.db import transaction
from core.extensions import db
from core.models import Role
from core.notifications import (FAILED, PENDING, SENT, Notification, NotificationDelivery, notify, run_reminders,
                                send_pending)
from core.timeutil import shanghai_today, utcnow
from tests.certification.factories import certified_product, member, prefecture, reviewer, submitted
from tests.mail_helpers import free_port, smtp_server  # noqa: F401  (fixture)


def _notices(user, kind=None) -> list[Notification]:
    db.session.expire_all()
    query = sa.select(Notification).where(Notification.user_id == user.id).order_by(Notification.id)
    if kind:
        query = query.where(Notification.kind == kind)
    return list(db.session.scalars(query))


def _deliveries(status=None) -> list[NotificationDelivery]:
    db.session.expire_all()
    query = sa.select(NotificationDelivery).order_by(NotificationDelivery.id)
    if status:
        query = query.where(NotificationDelivery.status == status)
    return list(db.session.scalars(query))


def _decide(actor, application, decision="approve", comment="同意"):
    from certification import services

    return services.decide_application(actor, application.id, {"decision": decision, "comment": comment})


# ---------------------------------------------------------------- e-mail through a real SMTP server

def test_an_approval_reaches_the_members_by_email_with_chinese_text_and_the_link(make, smtp_server):
    application = submitted(make)
    coop_member = member(make, application.product.cooperative)
    _decide(reviewer(make), application)

    report = send_pending()
    assert report.sent >= 1 and report.failed == 0
    [message] = smtp_server.to(coop_member.email)
    assert message["Subject"] == f"【湘西香伴】“{application.product.name}”已通过县级审核"
    assert coop_member.email in message["To"]
    assert "noreply@xiangban.test" in message["From"]
    [delivery] = [d for d in _deliveries() if d.notification.user_id == coop_member.id]
    assert message["Message-ID"] == f"<notice-{delivery.notification_id}.{delivery.id}@xiangban.test>"
    text = message.get_content()
    assert "申请已转州级认定" in text and "审核意见：同意" in text
    assert f"https://trace.example.cn/certifications/{application.id}" in text
    [delivery] = [d for d in _deliveries() if d.notification.user_id == coop_member.id]
    assert delivery.status == SENT and delivery.attempts == 1 and delivery.sent_at is not None


def test_running_the_worker_again_after_a_success_sends_nothing_twice(make, smtp_server):
    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "测试通知", "正文", "/orders")
    assert send_pending().sent == 1
    assert send_pending().sent == 0
    assert send_pending(now=utcnow() + timedelta(days=2)).sent == 0
    assert len(smtp_server.to(user.email)) == 1


def test_a_refused_delivery_is_retried_later_and_arrives_exactly_once(make, smtp_server):
    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "对公转账待确认", "请核对银行流水", "/finance/orders")
    smtp_server.refuse = 1  # the server answers 451 to the first message

    first = send_pending()
    assert (first.sent, first.retried) == (0, 1)
    [delivery] = _deliveries()
    assert delivery.status == PENDING and delivery.attempts == 1
    assert "451" in delivery.last_error and delivery.next_attempt_at > utcnow()
    assert send_pending().handled == 0  # not due yet: backoff

    later = send_pending(now=utcnow() + timedelta(minutes=5))
    assert later.sent == 1
    assert send_pending(now=utcnow() + timedelta(hours=5)).handled == 0
    assert len(smtp_server.to(user.email)) == 1
    [delivery] = _deliveries()
    assert delivery.status == SENT and delivery.attempts == 2


def test_with_the_server_down_a_delivery_backs_off_then_fails_after_the_last_attempt(app, make):
    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "测试", "正文")
    saved = {key: app.config.get(key) for key in ("SMTP_HOST", "SMTP_PORT", "NOTIFICATION_MAX_ATTEMPTS")}
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), NOTIFICATION_MAX_ATTEMPTS=3)
    try:
        now = utcnow()
        waits = []
        for _ in range(3):
            report = send_pending(now=now)
            assert report.handled == 1
            [delivery] = _deliveries()
            waits.append(delivery.next_attempt_at - now)
            now = delivery.next_attempt_at
        assert delivery.status == FAILED and delivery.attempts == 3 and delivery.last_error
        assert waits[1] == 2 * waits[0]  # exponential backoff
        assert send_pending(now=now + timedelta(days=3)).handled == 0
    finally:
        app.config.update(saved)


def test_an_error_answer_to_quit_after_the_message_was_accepted_still_counts_as_sent(make, smtp_server):
    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "测试", "正文")
    smtp_server.quit_reply = "554 5.0.0 Goodbye with an error"  # after the 250 to the message
    report = send_pending()
    assert (report.sent, report.failed, report.retried) == (1, 0, 0)
    assert send_pending(now=utcnow() + timedelta(days=1)).handled == 0
    assert len(smtp_server.to(user.email)) == 1
    assert [(d.status, d.last_error) for d in _deliveries()] == [(SENT, None)]


def test_without_smtp_settings_mail_waits_in_the_outbox(make, runner):
    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "测试", "正文")
    result = runner.invoke(args=["notifications", "send"])
    assert result.exit_code == 0 and "SMTP_HOST" in result.output
    assert [d.status for d in _deliveries()] == [PENDING]


def test_the_send_command_delivers_what_is_due(make, runner, smtp_server):
    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "命令行发送", "正文")
    result = runner.invoke(args=["notifications", "send"])
    assert result.exit_code == 0 and "已发送 1 条" in result.output
    assert len(smtp_server.to(user.email)) == 1


# ---------------------------------------------------------------- written with the event, or not at all

def test_a_notice_is_written_only_if_its_transaction_commits(make):
    user = make.user(Role.CONSUMER)
    with pytest.raises(RuntimeError):
        with transaction():
            notify(user, "test", "不会出现", "正文")
            raise RuntimeError("the use case failed after notifying")
    assert _notices(user) == [] and _deliveries() == []


def test_a_decision_that_rolls_back_leaves_no_notice(make, monkeypatch):
    from certification import services

    application = submitted(make)
    coop_member = member(make, application.product.cooperative)

    def broken_audit(**kwargs):
        raise RuntimeError("audit chain unavailable")

    monkeypatch.setattr(services, "record_event", broken_audit)
    with pytest.raises(RuntimeError):
        _decide(reviewer(make), application)
    db.session.rollback()  # what the request's teardown does
    assert _notices(coop_member) == []
    assert db.session.get(type(application), application.id).status == "submitted"


def test_deactivated_accounts_and_duplicates_are_not_notified(make):
    active, inactive = make.user(Role.FINANCE), make.user(Role.FINANCE, is_active=False)
    with transaction():
        written = notify([active, active, inactive], "test", "一次", "正文")
    assert len(written) == 1 and len(_notices(active)) == 1 and _notices(inactive) == []


# ---------------------------------------------------------------- producers

def test_a_submitted_application_waits_in_its_countys_reviewers_inboxes_only(make):
    guzhang, fenghuang = reviewer(make, "古丈县"), reviewer(make, "凤凰县")
    application = submitted(make)
    [notice] = _notices(guzhang, "application_waiting")
    assert notice.title == f"待县级审核：{application.product.name}" and notice.link == f"/certifications/{application.id}"
    assert _notices(fenghuang) == []


def test_a_county_approval_tells_the_members_and_the_prefecture(make):
    application = submitted(make)
    coop_member, prefect = member(make, application.product.cooperative), prefecture(make)
    _decide(reviewer(make), application)
    assert [n.title for n in _notices(coop_member)] == [f"“{application.product.name}”已通过县级审核"]
    assert [n.title for n in _notices(prefect, "application_waiting")] == [f"待州级认定：{application.product.name}"]


def test_certification_and_rejection_are_told_to_the_members(make):
    first, second = submitted(make), submitted(make)
    coop1, coop2 = member(make, first.product.cooperative), member(make, second.product.cooperative)
    county = reviewer(make)
    _decide(county, first)
    _decide(prefecture(make), first, comment="准予认定")
    _decide(county, second, "reject", "检测报告已过期")
    certified = _notices(coop1)[-1]
    db.session.refresh(first)
    assert certified.title == f"“{first.product.name}”已获湘西香伴品牌认定"
    assert first.certificate_no in certified.body and first.valid_until.isoformat() in certified.body
    [rejected] = _notices(coop2)
    assert rejected.title.endswith("未通过县级审核") and "检测报告已过期" in rejected.body


def test_a_revocation_is_told_to_the_members(make):
    from certification import services

    item = certified_product(make)
    coop_member = member(make, item.cooperative)
    services.revoke_certificate(prefecture(make), item.certificate_id, {"reason": "抽检不合格"})
    [notice] = _notices(coop_member)
    assert notice.kind == "certification_decision" and "已被撤销" in notice.title and "抽检不合格" in notice.body


def test_a_paid_order_asks_each_cooperative_in_it_to_ship(client, make):
    from tests.shop.helpers import completed_event, deliver, place
    from tests.traceability.factories import batch

    tea, honey = certified_product(make), certified_product(make, name="保靖黄金茶")
    batch(tea, quantity=10), batch(honey, quantity=10)
    tea_member, honey_member = member(make, tea.cooperative), member(make, honey.cooperative)
    order = place(client, make, make.user(Role.CONSUMER), (tea, 2), (honey, 1))
    assert _notices(tea_member) == []  # not before payment
    assert deliver(client, completed_event(order)).status_code == 200
    [tea_notice], [honey_notice] = _notices(tea_member), _notices(honey_member)
    assert tea_notice.kind == "order_to_ship" and order["number"] in tea_notice.title
    assert f"{tea.name} × 2" in tea_notice.body and honey.name not in tea_notice.body
    assert f"{honey.name} × 1" in honey_notice.body and honey_notice.link == "/cooperative/orders"


def test_a_bank_transfer_order_waits_for_finance_at_once_or_after_its_approval(client, make):
    from tests.shop.helpers import place
    from tests.traceability.factories import batch

    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=100)
    unit = make.budget_unit(approval_threshold_fen=100_000)
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=unit)
    approver = make.user(Role.CANTEEN_BUYER, budget_unit=unit, is_approver=True)
    finance = make.user(Role.FINANCE)

    small = place(client, make, buyer, (tea, 5), payment_method="bank_transfer")
    [notice] = _notices(finance)
    assert notice.kind == "transfer_waiting" and small["number"] in notice.title and "¥500.00" in notice.body

    large = place(client, make, buyer, (tea, 20), payment_method="bank_transfer")
    assert len(_notices(finance)) == 1  # waits for the unit's approval first
    [waiting] = _notices(approver, "approval_waiting")
    assert large["number"] in waiting.title and waiting.link == "/canteen/approvals"
    assert _notices(buyer, "approval_waiting") == []
    response = client.post(f"/api/v1/orders/{large['id']}/approval", headers=make.headers(approver),
                           json={"decision": "approve", "comment": "同意"})
    assert response.status_code == 200
    assert [n.title for n in _notices(finance)][-1] == f"对公转账待确认：{large['number']}"


# ---------------------------------------------------------------- daily reminders

def test_a_certificate_due_for_renewal_is_reminded_once(make, runner):
    today = shanghai_today()
    due = certified_product(make, valid_until=today + timedelta(days=20))
    later = certified_product(make, valid_until=today + timedelta(days=200))
    due_member, later_member = member(make, due.cooperative), member(make, later.cooperative)
    result = runner.invoke(args=["notifications", "remind"])
    assert result.exit_code == 0 and "certificate_renewal: 1" in result.output
    [notice] = _notices(due_member)
    assert "即将到期" in notice.title and due.certificate.certificate_no in notice.body
    assert notice.link == f"/my/products/{due.id}"
    assert _notices(later_member) == []
    runner.invoke(args=["notifications", "remind"])
    assert run_reminders()["certificate_renewal"] == 0
    assert len(_notices(due_member)) == 1


def test_a_certificate_with_a_renewal_under_review_is_not_reminded(make):
    item = certified_product(make, valid_until=shanghai_today() + timedelta(days=10))
    coop_member = member(make, item.cooperative)
    submitted(make, product_=item, by=coop_member)
    run_reminders()
    assert _notices(coop_member, "certificate_renewal") == []


def test_expiring_evidence_of_a_current_certificate_is_reminded_once(make):
    from certification.models import Evidence

    item = certified_product(make)
    coop_member = member(make, item.cooperative)
    db.session.add(Evidence(certification_id=item.certificate_id, type="green_food", number="LB-15-1711196965A",
                            issuer="中国绿色食品发展中心", valid_until=shanghai_today() + timedelta(days=7)))
    db.session.commit()
    assert run_reminders()["evidence_expiring"] == 1
    assert run_reminders()["evidence_expiring"] == 0
    [notice] = _notices(coop_member, "evidence_expiring")
    assert "LB-15-1711196965A" in notice.body and "绿色食品" in notice.body


def test_a_canteen_behind_its_reserved_share_is_reminded_once_a_month(make):
    behind = make.budget_unit(annual_canteen_budget_fen=100_000_000, reserved_share="0.10")
    empty = make.budget_unit(annual_canteen_budget_fen=0, reserved_share="0.10")
    buyer, other = make.user(Role.CANTEEN_BUYER, budget_unit=behind), make.user(Role.CANTEEN_BUYER, budget_unit=empty)
    assert run_reminders()["canteen_share_behind"] == 1  # ¥1,000,000 × 10%, nothing bought yet
    [notice] = _notices(buyer)
    assert behind.name in notice.title and "目标 ¥100,000.00" in notice.body and "还差 ¥100,000.00" in notice.body
    assert "已采购 ¥0.00" in notice.body and notice.link == "/reports/canteen"
    assert notice.dedupe_key.endswith(f"{shanghai_today():%Y-%m}")
    assert _notices(other) == []
    assert run_reminders()["canteen_share_behind"] == 0


def test_a_canteen_on_pace_with_its_reserved_share_is_not_reminded(make):
    from tests.shop.factories import paid_order
    from tests.traceability.factories import batch

    unit = make.budget_unit(annual_canteen_budget_fen=1_000_000, reserved_share="0.10")  # target ¥1,000
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=unit)
    order = paid_order(buyer, [(batch(certified_product(make), quantity=10), 8)], paid_at=utcnow(), channel="canteen")
    order.budget_unit_id = unit.id  # ¥1,024 bought
    db.session.commit()
    assert run_reminders()["canteen_share_behind"] == 0 and _notices(buyer) == []


def test_the_share_expected_by_now_grows_with_the_days_of_the_year():
    from datetime import date

    from shop.reminders import expected_by_now

    assert expected_by_now(36_500, date(2026, 1, 1)) == 100
    assert expected_by_now(36_500, date(2026, 7, 2)) == 18_300
    assert expected_by_now(36_500, date(2026, 12, 31)) == 36_500


# ---------------------------------------------------------------- the inbox

def _seed(user, count=2):
    with transaction():
        for n in range(count):
            notify(user, "test", f"消息{n}", f"正文{n}", "/orders")
    return _notices(user)


def test_the_api_lists_my_notices_newest_first_with_the_contract_shape(client, make):
    me, other = make.user(Role.CONSUMER), make.user(Role.CONSUMER)
    mine = _seed(me, 3)
    _seed(other, 1)
    body = client.get("/api/v1/notifications?per_page=2", headers=make.headers(me)).get_json()
    assert {"items", "total", "page", "per_page"} <= set(body)
    assert body["total"] == 3 and body["page"] == 1 and body["per_page"] == 2 and body["unread"] == 3
    assert [item["id"] for item in body["items"]] == [mine[2].id, mine[1].id]
    assert body["items"][0]["title"] == "消息2" and body["items"][0]["read"] is False
    assert body["items"][0]["created_at"].endswith("+08:00")


def test_unread_filter_mark_one_and_mark_all(client, make):
    me = make.user(Role.CONSUMER)
    first, second, third = _seed(me, 3)
    headers = make.headers(me)
    response = client.post(f"/api/v1/notifications/{first.id}/read", headers=headers)
    assert response.status_code == 200 and response.get_json()["read"] is True
    unread = client.get("/api/v1/notifications?unread=1", headers=headers).get_json()
    assert [item["id"] for item in unread["items"]] == [third.id, second.id] and unread["total"] == 2
    assert client.post("/api/v1/notifications/read-all", headers=headers).get_json() == {"marked": 2, "unread": 0}
    assert client.get("/api/v1/notifications?unread=1", headers=headers).get_json()["total"] == 0


def test_nobody_reads_or_marks_someone_elses_notice(client, make):
    owner, intruder = make.user(Role.CONSUMER), make.user(Role.ADMIN)
    [notice] = _seed(owner, 1)
    assert client.post(f"/api/v1/notifications/{notice.id}/read", headers=make.headers(intruder)).status_code == 404
    assert client.post("/api/v1/notifications/999999/read", headers=make.headers(intruder)).status_code == 404
    client.post("/api/v1/notifications/read-all", headers=make.headers(intruder))
    assert client.get("/api/v1/notifications", headers=make.headers(intruder)).get_json()["total"] == 0
    with client.session_transaction() as session:
        session.update(user_id=intruder.id, gen=intruder.token_generation, sid="s" * 32)
    assert client.post(f"/notifications/{notice.id}/read").status_code == 404
    assert [n.read_at for n in _notices(owner)] == [None]


def test_email_only_notices_stay_out_of_the_inbox(client, make):
    me = make.user(Role.CONSUMER)
    with transaction():
        notify(me, "password_reset", "重设密码", "链接", "/password/reset/x", in_app=False)
    assert client.get("/api/v1/notifications", headers=make.headers(me)).get_json()["total"] == 0


def test_the_page_shows_the_unread_count_in_the_header_and_marks_read(client, make):
    me = make.user(Role.CONSUMER)
    first, second = _seed(me, 2)
    with client.session_transaction() as session:
        session.update(user_id=me.id, gen=me.token_generation, sid="p" * 32)
    page = client.get("/").get_data(as_text=True)
    assert 'class="unread-count">2<' in page
    inbox = client.get("/notifications").get_data(as_text=True)
    assert "消息0" in inbox and "消息1" in inbox and "全部标为已读" in inbox
    opened = client.post(f"/notifications/{first.id}/read", data={"open": "1"})
    assert opened.status_code == 302 and opened.headers["Location"].endswith("/orders")
    assert 'class="unread-count">1<' in client.get("/").get_data(as_text=True)
    assert client.post("/notifications/read-all").status_code == 302
    assert "unread-count" not in client.get("/").get_data(as_text=True)


def test_signed_out_visitors_have_no_inbox(client):
    assert client.get("/notifications").status_code == 302
    assert client.get("/api/v1/notifications").status_code == 401


# ---------------------------------------------------------------- workers in parallel (PostgreSQL)

def test_two_workers_in_parallel_send_each_delivery_exactly_once(app, make, smtp_server):
    from tests.concurrency import run_parallel, skip_unless_postgres

    skip_unless_postgres()
    people = [make.user(Role.CONSUMER) for _ in range(24)]
    with transaction():
        for person in people:
            notify(person, "test", "并发发送", "正文")
    reports = run_parallel(app, [lambda: send_pending(limit=4), lambda: send_pending(limit=4)])
    assert not [r for r in reports if isinstance(r, Exception)], reports
    assert sum(r.sent for r in reports) == 24 and all(r.sent for r in reports)  # both took a share
    received = sorted(address for envelope in smtp_server.envelopes for address in envelope.rcpt_tos)
    assert received == sorted(person.email for person in people)
    message_ids = [message["Message-ID"] for message in smtp_server.messages]
    assert len(set(message_ids)) == 24
    assert {(d.status, d.attempts) for d in _deliveries()} == {(SENT, 1)}


def test_a_claim_left_by_a_dead_worker_is_taken_again_after_its_lease(make, smtp_server):
    from core.notifications import CLAIM_LEASE, SENDING, claim_deliveries

    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "测试", "正文")
    assert len(claim_deliveries("email")) == 1  # the worker dies before sending
    assert send_pending().handled == 0
    assert [d.status for d in _deliveries()] == [SENDING]
    assert send_pending(now=utcnow() + CLAIM_LEASE + timedelta(seconds=1)).sent == 1
    assert len(smtp_server.to(user.email)) == 1


def test_a_batch_outliving_its_lease_sends_each_message_once(make, smtp_server, monkeypatch):
    """Each message takes 6 minutes; while the first worker sends the second, a second worker
    (cron, a minute later) runs past the first's 10-minute lease and takes the third over."""
    from core import notifications
    from core.mail import EmailChannel

    people = [make.user(Role.CONSUMER) for _ in range(3)]
    with transaction():
        for person in people:
            notify(person, "test", "慢服务器", "正文")
    start = utcnow()
    clock = {"now": start, "calls": 0, "second": None}
    monkeypatch.setattr(notifications, "utcnow", lambda: clock["now"])
    original = EmailChannel.deliver

    def slow_deliver(self, notice, user):
        original(self, notice, user)
        if clock["second"] is None:
            clock["calls"] += 1
            if clock["calls"] == 2:  # the second worker runs while the first is on its second message
                clock["second"] = send_pending(now=start + timedelta(minutes=11))
            clock["now"] += timedelta(minutes=6)

    monkeypatch.setattr(EmailChannel, "deliver", slow_deliver)
    first = send_pending()
    second = clock["second"]
    assert (first.sent, first.skipped, second.sent) == (2, 1, 1)
    assert sorted(a for e in smtp_server.envelopes for a in e.rcpt_tos) == sorted(p.email for p in people)
    assert {(d.status, d.attempts) for d in _deliveries()} == {(SENT, 1)} | {(SENT, 2)}


def test_only_the_worker_that_holds_the_claim_records_the_outcome(make):
    from core.notifications import CLAIM_LEASE, SENDING, _record, claim_deliveries

    user = make.user(Role.CONSUMER)
    with transaction():
        notify(user, "test", "测试", "正文")
    [mine] = claim_deliveries("email")
    [theirs] = claim_deliveries("email", now=utcnow() + CLAIM_LEASE + timedelta(seconds=1))  # my lease ran out
    assert not _record(mine, status=FAILED, now=utcnow(), error="timeout")
    [delivery] = _deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (SENDING, 2, None)
    assert _record(theirs, status=SENT, now=utcnow())
    assert [d.status for d in _deliveries()] == [SENT]


def test_addresses_at_reserved_test_domains_get_no_email(make):
    demo = make.user(Role.CONSUMER, email="coop@xiangban.test")
    with transaction():
        [notice] = notify(demo, "test", "演示", "正文")
    assert notice.deliveries == [] and len(_notices(demo)) == 1


def test_pages_still_render_when_the_unread_count_cannot_be_read(client, make, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from core import notifications

    me = make.user(Role.CONSUMER)
    _seed(me, 1)

    def database_gone(user):
        raise OperationalError("SELECT count(*)", {}, Exception("server closed the connection"))

    monkeypatch.setattr(notifications, "unread_count", database_gone)
    with client.session_transaction() as session:
        session.update(user_id=me.id, gen=me.token_generation, sid="q" * 32)
    response = client.get("/")
    assert response.status_code == 200 and "unread-count" not in response.get_data(as_text=True)
