"""Refund intents: Stripe is never asked while an order row is locked. Reserve and commit, ask
Stripe with the intent's idempotency key, finish (or fail and release) in a new transaction;
resume a crashed intent; the charge.refunded webhook never counts an app refund twice."""
import secrets
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.audit import AuditEvent
from core.db import transaction
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today, utcnow
from shop import services
from shop.models import Order, Refund, RefundIntent
from shop.sales import village_sales_fen
from tests.certification.factories import certified_product
from tests.concurrency import skip_unless_postgres
from tests.shop.factories import paid_order
from tests.shop.helpers import completed_event, deliver, place
from tests.traceability.factories import batch


@pytest.fixture
def stripe_order(client, make, fake_stripe):
    """A ¥200.00 order paid through Stripe (payment intent ``pi_intents``), and its product."""
    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 2))
    deliver(client, completed_event(order, session={"payment_intent": "pi_intents"}))
    return order, tea


def _sales(product) -> int:
    return village_sales_fen(product.villages[0].id, shanghai_today().year)


def _order(order_id) -> Order:
    return db.session.get(Order, order_id, populate_existing=True)


def _refund(client, make, order_id, amount, finance=None):
    return client.post(f"/api/v1/orders/{order_id}/refund", json={"amount_fen": amount, "reason": "破损"},
                       headers=make.headers(finance or make.user(Role.FINANCE)))


def test_a_stripe_refund_is_an_intent_finished_after_stripe_answers(client, make, fake_stripe, stripe_order):
    order, tea = stripe_order
    response = _refund(client, make, order["id"], 5_000)
    assert response.status_code == 200
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    [call] = fake_stripe.calls("/v1/refunds")
    assert call["headers"]["Idempotency-Key"] == intent.idempotency_key
    assert call["form"]["amount"] == "5000" and call["form"]["payment_intent"] == "pi_intents"
    assert intent.status == "succeeded" and intent.provider_refund_id.startswith("re_")
    refund = db.session.get(Refund, intent.refund_id)
    assert refund.provider_refund_id == intent.provider_refund_id and refund.amount_fen == 5_000
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, row.status) == (5_000, 0, "partially_refunded")
    assert _sales(tea) == 15_000
    actions = [e.action for e in db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.subject_type == "order", AuditEvent.subject_id == order["id"]).order_by(AuditEvent.id))]
    assert actions[-2:] == ["refund_reserved", "refunded"]


def test_a_refund_stripe_refuses_changes_nothing_for_the_reports(client, make, fake_stripe, stripe_order):
    order, tea = stripe_order
    from shop.reports.services import reconcile_village_sales

    fake_stripe.fail_with = 402
    response = _refund(client, make, order["id"], 5_000)
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "payment_provider_error"
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert intent.status == "failed" and intent.failure and intent.refund_id is None
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, row.status) == (0, 0, "paid")
    assert _sales(tea) == 20_000 and db.session.scalar(sa.select(sa.func.count(Refund.id))) == 0
    assert reconcile_village_sales(shanghai_today().year).ok
    # The reservation was released: the whole amount can be refunded once Stripe answers again.
    fake_stripe.fail_with = None
    assert _refund(client, make, order["id"], 20_000).status_code == 200
    assert _order(order["id"]).status == "refunded" and _sales(tea) == 0


def test_a_crashed_refund_is_resumed_with_the_same_key_and_recorded_once(client, make, runner, fake_stripe,
                                                                         stripe_order, monkeypatch):
    order, tea = stripe_order
    finance = make.user(Role.FINANCE)
    real_finish = services._finish_refund

    def crash(*args):
        raise RuntimeError("the worker died after Stripe answered")

    monkeypatch.setattr(services, "_finish_refund", crash)
    with pytest.raises(RuntimeError):
        services.refund_order(finance, order["id"], {"amount_fen": 7_000, "reason": "破损"})
    monkeypatch.setattr(services, "_finish_refund", real_finish)
    db.session.rollback()
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert intent.status == "pending"
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen) == (0, 7_000)
    assert _sales(tea) == 20_000  # nothing recorded yet
    # The pending amount stays reserved: a second refund cannot take it again.
    assert _refund(client, make, order["id"], 13_001, finance).status_code == 422

    # Too recent to be taken for a crash: left alone.
    result = runner.invoke(args=["payments", "resume-refunds"])
    assert result.exit_code == 0 and "已完成 0 笔" in result.output
    intent.created_at -= timedelta(minutes=services.RESUME_REFUNDS_AFTER_MINUTES + 1)
    db.session.commit()
    result = runner.invoke(args=["payments", "resume-refunds"])
    assert result.exit_code == 0 and "已完成 1 笔" in result.output, result.output
    # Stripe had refunded before the crash: the resume finds that refund by its key and asks no second time.
    [made] = fake_stripe.calls("/v1/refunds")
    assert made["headers"]["Idempotency-Key"] == intent.idempotency_key
    assert made["form"]["metadata[refund_key]"] == intent.idempotency_key
    assert len(_listings(fake_stripe)) == 1
    db.session.expire_all()
    assert intent.status == "succeeded"
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, len(row.refunds)) == (7_000, 0, 1)
    assert _sales(tea) == 13_000
    # Running it again finds nothing to do.
    assert "已完成 0 笔" in runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"]).output


def _listings(fake_stripe) -> list[dict]:
    """GET /v1/refunds?payment_intent=… requests (looking for a refund an earlier attempt made)."""
    return [r for r in fake_stripe.requests if r["method"] == "GET" and r["path"].startswith("/v1/refunds?")]


def test_a_refund_asked_again_after_stripe_forgot_its_key_is_not_made_twice(client, make, runner, fake_stripe,
                                                                            stripe_order):
    """Stripe keeps an idempotency key for 24 hours. A refund it made but never confirmed, asked
    again later (from the desk or by resume-refunds), would be a new refund under the same key:
    the retry finds the first one by the key written into its metadata and finishes with it."""
    order, tea = stripe_order
    finance = make.user(Role.FINANCE)
    fake_stripe.break_refunds = "drop"
    assert _refund(client, make, order["id"], 5_000, finance).status_code == 502
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert len(fake_stripe.refunds) == 1
    fake_stripe.break_refunds = None
    fake_stripe.forget_idempotency_keys()  # a day later

    result = runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"])
    assert result.exit_code == 0 and "已完成 1 笔" in result.output, result.output
    assert len(fake_stripe.refunds) == 1, "the money moved once"
    [listing] = _listings(fake_stripe)
    assert "payment_intent=pi_intents" in listing["path"]
    db.session.expire_all()
    assert intent.status == "succeeded" and intent.provider_refund_id == fake_stripe.refunds[0]["id"]
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, len(row.refunds)) == (5_000, 0, 1)
    assert _sales(tea) == 15_000


def test_a_retry_that_finds_no_earlier_refund_makes_it_with_the_same_key(runner, make, fake_stripe, stripe_order):
    order, tea = stripe_order
    with transaction():  # reserved, then the worker died before Stripe was asked
        services.reserve_refund(services.lock_order(order["id"]), 3_000, "破损", make.user(Role.FINANCE))
    fake_stripe.fail_with = 503  # Stripe unreachable: cannot even tell whether a refund exists
    result = runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"])
    assert "1 笔仍在支付服务处理中" in result.output and fake_stripe.calls("/v1/refunds") == []
    fake_stripe.fail_with = None
    result = runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"])
    assert "已完成 1 笔" in result.output
    [made] = fake_stripe.calls("/v1/refunds")
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert made["headers"]["Idempotency-Key"] == intent.idempotency_key and _sales(tea) == 17_000


def test_a_crash_before_stripe_was_asked_is_resumed_too(runner, make, fake_stripe, stripe_order):
    order, tea = stripe_order
    with transaction():
        locked = services.lock_order(order["id"])
        services.reserve_refund(locked, 4_000, "破损", make.user(Role.FINANCE))
    assert fake_stripe.calls("/v1/refunds") == []
    result = runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"])
    assert result.exit_code == 0 and "已完成 1 笔" in result.output
    assert len(fake_stripe.calls("/v1/refunds")) == 1 and _sales(tea) == 16_000


def test_a_resumed_refund_stripe_refuses_is_failed_and_released(runner, make, fake_stripe, stripe_order):
    order, tea = stripe_order
    with transaction():
        services.reserve_refund(services.lock_order(order["id"]), 4_000, "破损", make.user(Role.FINANCE))
    fake_stripe.fail_with = 400
    result = runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"])
    assert result.exit_code == 1 and "1 笔被支付服务拒绝" in result.output
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen) == (0, 0) and _sales(tea) == 20_000


def test_a_refund_stripe_is_still_working_on_stays_pending(client, runner, make, fake_stripe, stripe_order):
    """Another worker holds the intent's key at Stripe (409, idempotency_error): nothing is decided here."""
    order, tea = stripe_order
    with transaction():
        services.reserve_refund(services.lock_order(order["id"]), 4_000, "破损", make.user(Role.FINANCE))
    fake_stripe.fail_with, fake_stripe.fail_type = 409, "idempotency_error"
    result = runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"])
    assert result.exit_code == 0 and "1 笔仍在支付服务处理中" in result.output, result.output
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert intent.status == "pending" and _order(order["id"]).refund_reserved_fen == 4_000
    fake_stripe.fail_with = None
    assert "已完成 1 笔" in runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"]).output
    assert _sales(tea) == 16_000


@pytest.mark.parametrize("broken", ["drop", 500])
def test_a_refund_stripe_made_but_did_not_confirm_stays_pending_and_is_finished_once(
        client, runner, make, fake_stripe, stripe_order, broken):
    """Stripe refunds, then the connection drops (or it answers 500) on every try: the outcome is
    unknown, so the intent stays pending and reserved; a second refund cannot take that amount
    again, Stripe's charge.refunded finds it already known, and resume-refunds finishes it with
    the same key, counted once in the reports."""
    from shop.reports.services import reconcile_village_sales

    order, tea = stripe_order
    finance = make.user(Role.FINANCE)
    fake_stripe.break_refunds = broken
    response = _refund(client, make, order["id"], 6_000, finance)
    assert response.status_code == 502, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "refund_unconfirmed" and "尚未确认" in error["message"] and "请勿重复退款" in error["message"]
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert intent.status == "pending" and intent.failure is None
    assert len(fake_stripe.refunds_by_key) == 1  # the money moved at Stripe
    calls = fake_stripe.calls("/v1/refunds")
    assert len(calls) >= 1 and {c["headers"]["Idempotency-Key"] for c in calls} == {intent.idempotency_key}
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, row.status) == (0, 6_000, "paid")
    # Stripe's report of that refund is the reserved amount, not a dashboard refund.
    assert deliver(client, _charge_refunded("pi_intents", 6_000)).get_json()["outcome"] == "refund_already_recorded"
    # Finance tries again: only what is not reserved can be refunded.
    again = _refund(client, make, order["id"], 14_001, finance)
    assert again.status_code == 422 and again.get_json()["error"]["code"] == "refund_exceeds_paid"
    assert len(fake_stripe.refunds_by_key) == 1

    fake_stripe.break_refunds = None
    result = runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"])
    assert result.exit_code == 0 and "已完成 1 笔" in result.output, result.output
    assert {c["headers"]["Idempotency-Key"] for c in fake_stripe.calls("/v1/refunds")} == {intent.idempotency_key}
    assert len(fake_stripe.refunds_by_key) == 1  # Stripe answered the same key with the first refund
    db.session.expire_all()
    assert intent.status == "succeeded"
    assert intent.provider_refund_id == next(iter(fake_stripe.refunds_by_key.values()))["id"]
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, len(row.refunds)) == (6_000, 0, 1)
    assert _sales(tea) == 14_000 and reconcile_village_sales(shanghai_today().year).ok
    assert deliver(client, _charge_refunded("pi_intents", 6_000)).get_json()["outcome"] == "refund_already_recorded"
    assert _sales(tea) == 14_000
    assert "已完成 0 笔" in runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"]).output


@pytest.mark.parametrize("status, kind, pending", [(429, "rate_limit_error", True), (503, "api_error", True),
                                                   (400, "invalid_request_error", False),
                                                   (402, "card_error", False), (401, "invalid_request_error", False)])
def test_only_a_definite_refusal_fails_a_refund(client, make, fake_stripe, stripe_order, status, kind, pending):
    order, tea = stripe_order
    fake_stripe.fail_with, fake_stripe.fail_type = status, kind
    response = _refund(client, make, order["id"], 5_000)
    assert response.status_code == 502
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    row = _order(order["id"])
    if pending:
        assert response.get_json()["error"]["code"] == "refund_unconfirmed"
        assert intent.status == "pending" and row.refund_reserved_fen == 5_000
    else:
        assert response.get_json()["error"]["code"] == "payment_provider_error"
        assert intent.status == "failed" and row.refund_reserved_fen == 0
    assert row.refunded_fen == 0 and _sales(tea) == 20_000


def test_a_sandbox_or_bank_transfer_refund_needs_no_stripe_and_finishes_at_once(client, make, fake_stripe):
    tea = certified_product(make, price_fen=10_000)
    order = paid_order(make.user(), [(batch(tea, quantity=10), 3)], paid_at=utcnow())
    assert order.payment_provider == "sandbox"
    assert _refund(client, make, order.id, 1_234).status_code == 200
    assert fake_stripe.calls("/v1/refunds") == []
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert intent.status == "succeeded" and intent.provider_refund_id is None
    assert _order(order.id).refunded_fen == 1_234


def test_carrying_out_a_refund_never_commits_what_the_caller_left_pending(make, fake_stripe):
    """carry_out_refund ends its read transaction with a rollback: a change the caller had not
    committed is not written on its behalf."""
    tea = certified_product(make, price_fen=10_000)
    order = paid_order(make.user(), [(batch(tea, quantity=10), 3)], paid_at=utcnow())
    with transaction():
        intent = services.reserve_refund(services.lock_order(order.id), 1_000, "破损", make.user(Role.FINANCE))
    row = _order(order.id)
    row.shipping_name = "未提交的改动"
    services.carry_out_refund(intent.id)
    db.session.expire_all()
    row = _order(order.id)
    assert row.shipping_name == "收货人" and row.refunded_fen == 1_000


def _charge_refunded(intent, amount_refunded):
    return {"id": "evt_" + secrets.token_hex(8), "object": "event", "type": "charge.refunded",
            "created": int(time.time()), "data": {"object": {"object": "charge", "payment_intent": intent,
                                                             "amount_refunded": amount_refunded}}}


def _in_thread(app, job):
    """Start ``job`` in a thread with its own app context; return (thread, results list)."""
    results = []

    def run():
        with app.app_context():
            try:
                results.append(job())
            finally:
                db.session.remove()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def _refund_held_at_stripe(app, make, fake_stripe, order, amount):
    """Finance refunds ``amount`` in a thread; return once Stripe holds the request unanswered
    (``fake_stripe.hold_refunds.set()`` lets it answer). Returns (thread, [status code])."""
    headers = make.headers(make.user(Role.FINANCE))
    fake_stripe.hold_refunds = threading.Event()
    thread, results = _in_thread(app, lambda: app.test_client().post(
        f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": amount, "reason": "破损"},
        headers=headers).status_code)
    assert fake_stripe.refund_entered.wait(20)
    return thread, results


def test_stripes_report_of_an_app_refund_in_flight_is_not_counted_twice(app, client, make, fake_stripe, stripe_order):
    order, tea = stripe_order
    thread, results = _refund_held_at_stripe(app, make, fake_stripe, order, 6_000)
    # Stripe reports the refund (charge.refunded) before the app has finished it.
    assert deliver(client, _charge_refunded("pi_intents", 6_000)).get_json()["outcome"] == "refund_already_recorded"
    fake_stripe.hold_refunds.set()
    thread.join(30)
    assert results == [200]
    assert deliver(client, _charge_refunded("pi_intents", 6_000)).get_json()["outcome"] == "refund_already_recorded"
    row = _order(order["id"])
    assert (row.refunded_fen, len(row.refunds)) == (6_000, 1) and _sales(tea) == 14_000
    # A dashboard refund on top is still recorded, once.
    assert deliver(client, _charge_refunded("pi_intents", 7_500)).get_json()["outcome"] == "refunded"
    assert _order(order["id"]).refunded_fen == 7_500 and _sales(tea) == 12_500


def test_no_lock_is_held_on_the_order_while_stripe_answers(app, client, make, fake_stripe, stripe_order):
    """While Stripe is slow, another transaction locks and updates the same order row at once, and
    a second refund sees the first one's reservation (so two refunds never exceed what was paid).
    On PostgreSQL with NOWAIT: a held row lock would fail at once rather than wait."""
    order, tea = stripe_order
    thread, results = _refund_held_at_stripe(app, make, fake_stripe, order, 15_000)
    try:
        with transaction():
            query = sa.select(Order).where(Order.id == order["id"])
            if db.engine.dialect.name == "postgresql":
                db.session.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
                query = query.with_for_update(nowait=True)
            else:
                services.stock.take_write_lock()  # SQLite: the database write lock, also free
            row = db.session.scalars(query.execution_options(populate_existing=True)).one()
            assert row.refund_reserved_fen == 15_000 and row.refunded_fen == 0
            row.shipping_name = "改名后"
        second = _refund(client, make, order["id"], 6_000)
        assert second.status_code == 422 and second.get_json()["error"]["code"] == "refund_exceeds_paid"
    finally:
        fake_stripe.hold_refunds.set()
        thread.join(30)
    assert results == [200]
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, row.shipping_name) == (15_000, 0, "改名后")
    assert _sales(tea) == 5_000


def test_parallel_refunds_never_exceed_the_paid_amount(app, make, fake_stripe, stripe_order):
    """PostgreSQL: four refunds of ¥80 on a ¥200 order at once: two succeed, the others are refused."""
    skip_unless_postgres()
    from tests.concurrency import run_parallel

    order, tea = stripe_order
    finance_id = make.user(Role.FINANCE).id

    def refund():
        from core.models import User
        return services.refund_order(db.session.get(User, finance_id), order["id"],
                                     {"amount_fen": 8_000, "reason": "并发"}).refunded_fen

    outcomes = run_parallel(app, [refund] * 4)
    refused = [o for o in outcomes if getattr(o, "code", None) == "refund_exceeds_paid"]
    assert len(refused) == 2, outcomes
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen) == (16_000, 0) and _sales(tea) == 4_000
    assert len(fake_stripe.calls("/v1/refunds")) == 2


# ---------------------------------------------------------------- the finance desk

def _sign_in(client, user):
    client.post("/login", data={"email": user.email, "password": "password123"})


def _order_events(order_id) -> list[str]:
    return list(db.session.scalars(sa.select(AuditEvent.action).where(
        AuditEvent.subject_type == "order", AuditEvent.subject_id == order_id).order_by(AuditEvent.id)))


def test_finance_sees_a_refund_stripe_did_not_confirm_and_confirms_it_from_the_desk(
        client, make, fake_stripe, stripe_order):
    """A refund whose answer was lost is listed on the finance desk (not only known to a cron job);
    "向支付服务确认结果" asks Stripe again with the refund's own key: while Stripe still does not
    answer nothing changes and the desk says so, then the refund finishes once."""
    order, tea = stripe_order
    finance = make.user(Role.FINANCE)
    fake_stripe.break_refunds = 500
    assert _refund(client, make, order["id"], 6_000, finance).status_code == 502
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    _sign_in(client, finance)
    desk = client.get("/finance/orders").get_data(as_text=True)
    section = desk[desk.index('id="refunds-in-flight"'):desk.index("待确认的对公转账")]
    assert order["number"] in section and "¥60.00" in section and "破损" in section and "已询问支付服务 1 次" in section
    assert f'action="/finance/refunds/{intent.id}/retry"' in section and "不会被重复退款" in section

    fake_stripe.fail_with = 503  # Stripe still out of reach
    still = client.post(f"/finance/refunds/{intent.id}/retry", data={"next": "finance"})
    fake_stripe.fail_with = None
    assert still.status_code == 502
    assert f"订单 {order['number']}：退款已提交，但支付服务尚未确认结果" in still.get_data(as_text=True)
    db.session.expire_all()
    assert intent.status == "pending" and intent.attempts == 2 and _order(order["id"]).refund_reserved_fen == 6_000

    fake_stripe.break_refunds = None
    done = client.post(f"/finance/refunds/{intent.id}/retry", data={"next": "finance"})
    assert done.status_code == 302 and done.headers["Location"].endswith("/finance/orders")
    db.session.expire_all()
    assert intent.status == "succeeded" and intent.attempts == 3
    assert {c["headers"]["Idempotency-Key"] for c in fake_stripe.calls("/v1/refunds")} == {intent.idempotency_key}
    assert len(fake_stripe.refunds_by_key) == 1
    row = _order(order["id"])
    assert (row.refunded_fen, row.refund_reserved_fen, len(row.refunds)) == (6_000, 0, 1)
    assert _sales(tea) == 14_000
    assert _order_events(order["id"]).count("refund_retried") == 2
    assert 'id="refunds-in-flight"' not in client.get("/finance/orders").get_data(as_text=True)

    asked = len(fake_stripe.calls("/v1/refunds"))
    again = client.post(f"/finance/refunds/{intent.id}/retry", data={"next": "finance"})
    assert again.status_code == 409 and "该退款已完成" in again.get_data(as_text=True)
    assert len(fake_stripe.calls("/v1/refunds")) == asked
    assert client.post("/finance/refunds/999999/retry", data={"next": "finance"}).status_code == 404


def test_a_refund_stripe_refused_is_listed_on_the_finance_desk_as_not_done(client, make, fake_stripe, stripe_order):
    order, tea = stripe_order
    finance = make.user(Role.FINANCE)
    fake_stripe.fail_with, fake_stripe.fail_type = 400, "invalid_request_error"
    fake_stripe.fail_code = "charge_already_refunded"
    refused = _refund(client, make, order["id"], 5_000, finance)
    fake_stripe.fail_with = None
    assert refused.status_code == 502
    assert refused.get_json()["error"]["message"] == "支付服务拒绝了该退款，未做任何更改（Stripe：charge_already_refunded）"
    [intent] = db.session.scalars(sa.select(RefundIntent)).all()
    assert intent.status == "failed"
    _sign_in(client, finance)
    desk = client.get("/finance/orders").get_data(as_text=True)
    section = desk[desk.index('id="refunds-in-flight"'):desk.index("待确认的对公转账")]
    assert "未完成的退款" in section and "支付服务拒绝的退款" in section and "等待支付服务确认" not in section
    assert order["number"] in section and "¥50.00" in section
    assert "Stripe：charge_already_refunded" in section and "/retry" not in section
    assert _sales(tea) == 20_000


def test_only_finance_and_admins_may_ask_again_and_the_service_checks_it_too(make, fake_stripe, stripe_order):
    from core.errors import Forbidden

    order, _ = stripe_order
    with transaction():
        locked = services.lock_order(order["id"])
        intent = services.reserve_refund(locked, 1_000, "破损", None)
    for role in (Role.CONSUMER, Role.COOPERATIVE, Role.OFFICIAL, Role.CANTEEN_BUYER):
        with pytest.raises(Forbidden):
            services.retry_refund(make.user(role), intent.id)
    assert not fake_stripe.calls("/v1/refunds")
    assert services.retry_refund(make.user(Role.ADMIN), intent.id).refunded_fen == 1_000


def test_a_stripe_paid_inspection_claim_survives_a_refusal_and_an_unconfirmed_answer(client, make, runner,
                                                                                     fake_stripe):
    """验货 refund requests go through refund intents too: Stripe refusing reopens the request for
    finance (decision cleared), an unknown answer keeps it in progress (a second decision is 409
    ``refund_in_progress``), and the resumed refund leaves only the short line's villages."""
    from shop.models import RefundRequest

    tea_village, kiwi_village = make.village("古丈县"), make.village("花垣县")
    tea = certified_product(make, price_fen=3_000, villages=[tea_village])
    kiwi = certified_product(make, price_fen=2_000, villages=[kiwi_village])
    batch(tea, quantity=20, village=tea_village)
    batch(kiwi, quantity=20, village=kiwi_village)
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=make.budget_unit())
    order = place(client, make, buyer, (tea, 4), (kiwi, 5))
    deliver(client, completed_event(order, session={"payment_intent": "pi_claim"}))
    for product in (tea, kiwi):
        member = make.user(Role.COOPERATIVE, cooperative=product.cooperative)
        assert client.post(f"/api/v1/orders/{order['id']}/ship", headers=make.headers(member),
                           json={"carrier": "顺丰", "tracking_number": f"SF{product.id:08d}"}).status_code == 200
    inspected = client.post(f"/api/v1/orders/{order['id']}/inspection", headers=make.headers(buyer), json={
        "lines": [{"product_id": tea.id, "received_quantity": 3, "rejected_quantity": 0},
                  {"product_id": kiwi.id, "received_quantity": 5, "rejected_quantity": 0}], "note": "少一盒"})
    assert inspected.status_code == 201, inspected.get_json()
    [claim] = inspected.get_json()["refund_requests"]
    finance = make.headers(make.user(Role.FINANCE))
    url = f"/api/v1/refund-requests/{claim['id']}/decision"
    tea_sales, kiwi_sales = _sales(tea), _sales(kiwi)

    fake_stripe.fail_with, fake_stripe.fail_type = 402, "card_error"
    assert client.post(url, headers=finance, json={"decision": "refund"}).status_code == 502
    fake_stripe.fail_with = None
    request = db.session.get(RefundRequest, claim["id"], populate_existing=True)
    assert (request.status, request.decided_by_id, request.decided_at) == ("open", None, None)

    fake_stripe.break_refunds = 500
    unconfirmed = client.post(url, headers=finance, json={"decision": "refund"})
    assert unconfirmed.status_code == 502 and unconfirmed.get_json()["error"]["code"] == "refund_unconfirmed"
    again = client.post(url, headers=finance, json={"decision": "refund"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "refund_in_progress"
    fake_stripe.break_refunds = None

    assert "已完成 1 笔" in runner.invoke(args=["payments", "resume-refunds", "--older-than", "0"]).output
    request = db.session.get(RefundRequest, claim["id"], populate_existing=True)
    assert request.status == "refunded" and request.amount_fen == 3_000
    assert len(fake_stripe.refunds) == 1 and fake_stripe.refunds[0]["amount"] == 3_000
    assert (_sales(tea), _sales(kiwi)) == (tea_sales - 3_000, kiwi_sales)
