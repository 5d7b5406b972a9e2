"""stripe-python 16 against a loopback HTTP server: the Checkout Session, expiry and refund requests."""
from datetime import datetime, timezone

import pytest

from core.models import Role
from tests.certification.factories import certified_product
from tests.shop.helpers import FakeStripe, completed_event, deliver, order_body, place
from tests.traceability.factories import batch


@pytest.fixture
def fake_stripe(app):
    """Real Stripe mode, with the client aimed at a loopback server."""
    with FakeStripe() as fake:
        app.config.update(STRIPE_SECRET_KEY="sk_test_loopback", STRIPE_API_BASE=fake.url)
        try:
            yield fake
        finally:
            app.config.update(STRIPE_SECRET_KEY="", STRIPE_API_BASE="", STRIPE_WALLET_METHODS=None)


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
    assert call["headers"]["Idempotency-Key"] == f"xiangban-refund-{order['number']}-0-5000"
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
