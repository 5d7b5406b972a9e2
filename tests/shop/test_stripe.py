"""stripe-python 16 against a loopback HTTP server: the Checkout Session, expiry and refund requests."""
from datetime import datetime, timezone

import pytest

from core.models import Role
from tests.certification.factories import certified_product
from tests.shop.helpers import completed_event, deliver, order_body, place
from tests.traceability.factories import batch


def test_checkout_session_request_carries_the_order(client, make, fake_stripe):
    tea = certified_product(make, name="古丈毛尖", price_fen=12_800)
    kiwi = certified_product(make, name="十八洞猕猴桃", price_fen=6_600)
    batch(tea, quantity=10)
    batch(kiwi, quantity=10)
    order = place(client, make, make.user(), (tea, 2), (kiwi, 1))

    [call] = fake_stripe.calls("/v1/checkout/sessions")
    form = call["form"]
    assert call["method"] == "POST" and call["headers"]["Authorization"] == "Bearer sk_test_loopback"
    assert call["headers"]["Idempotency-Key"] == f"xiangban-checkout-{order['number']}"
    assert form["mode"] == "payment" and form["currency"] == "cny"
    assert form["client_reference_id"] == str(order["id"])
    assert form["metadata[order_number]"] == order["number"]
    assert form["line_items[0][quantity]"] == "2"
    assert form["line_items[0][price_data][currency]"] == "cny"
    assert form["line_items[0][price_data][unit_amount]"] == "12800"
    assert form["line_items[0][price_data][product_data][name]"] == "古丈毛尖"
    assert form["line_items[1][quantity]"] == "1"
    assert form["line_items[1][price_data][unit_amount]"] == "6600"
    assert form["payment_method_types[0]"] == "card" and "payment_method_types[1]" not in form
    assert form["success_url"] == f"https://trace.example.cn/orders/{order['id']}?paid=1"
    assert form["cancel_url"] == f"https://trace.example.cn/orders/{order['id']}"
    expires_at = datetime.fromtimestamp(int(form["expires_at"]), tz=timezone.utc)
    assert order["payment"]["provider"] == "stripe"
    assert order["payment"]["checkout_session_id"].startswith("cs_test_")
    assert order["payment"]["checkout_url"].startswith("https://checkout.stripe.com/")
    # The reservation lasts exactly as long as the Checkout Session.
    assert datetime.fromisoformat(order["reserved_until"]) == expires_at


def test_wallet_methods_are_offered_when_configured(client, make, fake_stripe, app):
    app.config["STRIPE_WALLET_METHODS"] = "alipay,wechat_pay"
    tea = certified_product(make)
    batch(tea, quantity=10)
    place(client, make, make.user(), (tea, 1))
    form = fake_stripe.calls("/v1/checkout/sessions")[0]["form"]
    assert [form[f"payment_method_types[{i}]"] for i in range(3)] == ["card", "alipay", "wechat_pay"]
    assert form["payment_method_options[wechat_pay][client]"] == "web"


def test_stripe_failure_cancels_the_order_and_releases_stock(client, make, fake_stripe):
    tea = certified_product(make)
    stock = batch(tea, quantity=10)
    fake_stripe.fail_with = 500
    response = client.post("/api/v1/orders", json=order_body((tea, 3)), headers=make.headers(make.user()))
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "payment_provider_error"
    from core.extensions import db
    db.session.expire_all()
    assert stock.available_quantity == 10


def test_cancel_expires_the_stripe_session_first(client, make, fake_stripe):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 1))
    response = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=make.headers(buyer))
    assert response.status_code == 200
    session_id = order["payment"]["checkout_session_id"]
    assert fake_stripe.calls(f"/v1/checkout/sessions/{session_id}/expire")


def test_cancel_is_refused_when_stripe_says_the_buyer_already_paid(client, make, fake_stripe):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 1))
    fake_stripe.session_status = "complete"
    response = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=make.headers(buyer))
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "payment_in_progress"


def test_refund_of_a_stripe_payment_goes_to_stripe(client, make, fake_stripe):
    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 2))
    deliver(client, completed_event(order, session={"payment_intent": "pi_test_abc"}))
    finance = make.headers(make.user(Role.FINANCE))
    response = client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 5_000, "reason": "破损"},
                           headers=finance)
    assert response.status_code == 200
    [call] = fake_stripe.calls("/v1/refunds")
    assert call["form"]["payment_intent"] == "pi_test_abc" and call["form"]["amount"] == "5000"
    assert call["headers"]["Idempotency-Key"].startswith(f"xiangban-refund-{order['number']}-")
    refund = response.get_json()["refunds"][0]
    assert refund["provider"] == "stripe" and refund["provider_refund_id"].startswith("re_")


def test_refund_that_stripe_refuses_changes_nothing(client, make, fake_stripe):
    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=10)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 2))
    deliver(client, completed_event(order))
    fake_stripe.fail_with = 402
    response = client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 5_000, "reason": "破损"},
                           headers=make.headers(make.user(Role.FINANCE)))
    assert response.status_code == 502
    body = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(buyer)).get_json()
    assert body["status"] == "paid" and body["refunded_fen"] == 0


def test_refund_without_a_recorded_payment_intent_is_refused(client, make, fake_stripe):
    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 1))
    deliver(client, completed_event(order, session={"payment_intent": None}))
    response = client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 1_000, "reason": "破损"},
                           headers=make.headers(make.user(Role.FINANCE)))
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "no_payment_intent"
    assert not fake_stripe.calls("/v1/refunds")


def _charge_event(kind, intent, **charge):
    import secrets
    import time
    return {"id": "evt_" + secrets.token_hex(8), "object": "event", "type": kind, "created": int(time.time()),
            "data": {"object": {"object": "charge" if kind == "charge.refunded" else "dispute",
                                "payment_intent": intent, **charge}}}


def _village_total(make, product) -> int:
    from core.timeutil import shanghai_today
    from shop.sales import village_sales_fen
    return village_sales_fen(product.villages[0].id, shanghai_today().year)


def test_a_refund_made_in_stripes_dashboard_is_recorded_once(client, make, fake_stripe):
    """charge.refunded (issue #11): the part not yet recorded is refunded here, exactly once."""
    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 3))
    deliver(client, completed_event(order, session={"payment_intent": "pi_dash_1"}))
    assert _village_total(make, tea) == 30_000
    event = _charge_event("charge.refunded", "pi_dash_1", amount_refunded=12_345,
                          refunds={"data": [{"id": "re_dash_1", "amount": 12_345}]})
    assert deliver(client, event).get_json()["outcome"] == "refunded"
    assert deliver(client, event).get_json()["outcome"] == "duplicate"
    # The same cumulative figure under a new event id (Stripe resends, or a later update) adds nothing.
    again = _charge_event("charge.refunded", "pi_dash_1", amount_refunded=12_345)
    assert deliver(client, again).get_json()["outcome"] == "refund_already_recorded"
    finance = make.headers(make.user(Role.FINANCE))
    body = client.get(f"/api/v1/orders/{order['id']}", headers=finance).get_json()
    assert body["status"] == "partially_refunded" and body["refunded_fen"] == 12_345
    assert body["refunds"][0]["provider_refund_id"] == "re_dash_1"
    assert _village_total(make, tea) == 30_000 - 12_345
    assert fake_stripe.calls("/v1/refunds") == []  # nothing was asked of Stripe: the money had moved

    # A refund made here is recorded first; Stripe's report of it afterwards changes nothing.
    client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 655, "reason": "补差"}, headers=finance)
    later = _charge_event("charge.refunded", "pi_dash_1", amount_refunded=13_000)
    assert deliver(client, later).get_json()["outcome"] == "refund_already_recorded"
    assert _village_total(make, tea) == 30_000 - 13_000


def test_a_dispute_is_flagged_for_finance_and_unknown_payments_are_ignored(client, make, fake_stripe):
    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 1))
    deliver(client, completed_event(order, session={"payment_intent": "pi_dispute_1"}))
    disputed = _charge_event("charge.dispute.created", "pi_dispute_1", amount=10_000, reason="fraudulent", id="dp_1")
    assert deliver(client, disputed).get_json()["outcome"] == "disputed"
    from shop.services import payment_alerts
    assert [a.outcome for a in payment_alerts()] == ["disputed"]
    stranger = _charge_event("charge.refunded", "pi_nobody", amount_refunded=100)
    assert deliver(client, stranger).get_json()["outcome"] == "unknown_payment"


def test_parallel_refund_events_record_the_dashboard_refund_once(app, client, make, fake_stripe):
    """Several charge.refunded events for one refund arriving at once (PostgreSQL): one refund."""
    import json

    from shop import payments
    from tests.concurrency import run_parallel, skip_unless_postgres
    skip_unless_postgres()
    tea = certified_product(make, price_fen=10_000)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 2))
    deliver(client, completed_event(order, session={"payment_intent": "pi_race_1"}))
    events = [_charge_event("charge.refunded", "pi_race_1", amount_refunded=7_000) for _ in range(3)]
    events += events  # and each one delivered twice

    def send(event):
        body = json.dumps(event, separators=(",", ":"))
        header = payments.sign_payload(body, "whsec_test_secret")
        return lambda: app.test_client().post("/api/v1/payments/stripe/webhook", data=body.encode(), headers={
            "Stripe-Signature": header, "Content-Type": "application/json"}).get_json()["outcome"]

    outcomes = sorted(run_parallel(app, [send(event) for event in events]))
    assert outcomes.count("refunded") == 1 and outcomes.count("duplicate") == 3
    assert outcomes.count("refund_already_recorded") == 2
    finance = make.headers(make.user(Role.FINANCE))
    body = client.get(f"/api/v1/orders/{order['id']}", headers=finance).get_json()
    assert body["refunded_fen"] == 7_000 and len(body["refunds"]) == 1
