"""The Stripe webhook: signatures on the raw body, once-only processing, and every check before 'paid'."""
import json
import time

import sqlalchemy as sa

from core.audit import history_of
from core.extensions import db
from core.models import Role
from shop import payments
from shop.models import PaymentEvent
from shop.sales import village_sales_fen
from core.timeutil import shanghai_today
from tests.certification.factories import certified_product
from tests.shop.helpers import completed_event, deliver, place
from tests.traceability.factories import batch
from traceability.models import Batch


def _order(client, make, quantity=2, price=4_000):
    tea = certified_product(make, price_fen=price)
    stock = batch(tea, quantity=10)
    buyer = make.user(Role.CONSUMER)
    return place(client, make, buyer, (tea, quantity)), buyer, stock


def _status(client, make, order, buyer) -> dict:
    return client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(buyer)).get_json()


def test_completed_session_marks_the_order_paid_and_counts_the_sale(client, make):
    order, buyer, stock = _order(client, make)
    response = deliver(client, completed_event(order))
    assert response.status_code == 200 and response.get_json()["outcome"] == "paid"
    body = _status(client, make, order, buyer)
    assert body["status"] == "paid" and body["paid_at"] and body["payment"]["payment_intent_id"] == "pi_test_123"
    assert village_sales_fen(stock.village_id, shanghai_today().year) == 8_000


def test_bad_signature_is_400_and_changes_nothing(client, make):
    order, buyer, _ = _order(client, make)
    event = completed_event(order)
    assert deliver(client, event, secret="whsec_wrong").status_code == 400
    assert deliver(client, event, signature="t=1,v1=deadbeef").status_code == 400
    response = client.post("/api/v1/payments/stripe/webhook", data=json.dumps(event))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_signature"
    assert _status(client, make, order, buyer)["status"] == "pending_payment"
    assert db.session.scalar(sa.select(sa.func.count(PaymentEvent.id))) == 0


def test_signature_over_a_reserialised_body_does_not_verify(client, make):
    order, buyer, _ = _order(client, make)
    event = completed_event(order)
    signed_body = json.dumps(event, separators=(",", ":"))
    header = payments.sign_payload(signed_body, "whsec_test_secret")
    response = client.post("/api/v1/payments/stripe/webhook", data=json.dumps(event, indent=2),
                           headers={"Stripe-Signature": header})
    assert response.status_code == 400
    assert _status(client, make, order, buyer)["status"] == "pending_payment"


def test_stale_timestamp_is_400(client, make):
    order, buyer, _ = _order(client, make)
    response = deliver(client, completed_event(order), timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert _status(client, make, order, buyer)["status"] == "pending_payment"


def test_same_event_twice_pays_once(client, make):
    order, buyer, stock = _order(client, make)
    event = completed_event(order)
    first = deliver(client, event)
    second = deliver(client, event)
    assert first.get_json()["outcome"] == "paid"
    assert second.status_code == 200 and second.get_json()["duplicate"] is True
    assert [e.action for e in history_of("order", order["id"])] == ["placed", "paid"]
    # A different event for the same payment (Stripe retries with a new id never, but be safe).
    third = deliver(client, completed_event(order))
    assert third.get_json()["outcome"] == "already_paid"
    assert village_sales_fen(stock.village_id, shanghai_today().year) == 8_000


def test_wrong_amount_currency_reference_or_session_never_pays(client, make):
    order, buyer, _ = _order(client, make)
    cases = [
        (completed_event(order, session={"amount_total": order["total_fen"] - 1}), "mismatch"),
        (completed_event(order, session={"amount_total": str(order["total_fen"])}), "mismatch"),
        (completed_event(order, session={"currency": "usd"}), "mismatch"),
        (completed_event(order, session={"client_reference_id": "999"}), "mismatch"),
        (completed_event(order, session={"id": "cs_test_someone_else"}), "session_mismatch"),
        (completed_event(order, session={"id": "cs_test_unknown", "client_reference_id": "0"}), "unknown_session"),
    ]
    for event, outcome in cases:
        response = deliver(client, event)
        assert response.status_code == 200 and response.get_json()["outcome"] == outcome
    assert _status(client, make, order, buyer)["status"] == "pending_payment"
    alerts = [e for e in history_of("order", order["id"]) if e.action == "payment_mismatch"]
    assert len(alerts) == 5 and "金额" in alerts[0].comment


def test_unpaid_completion_waits_for_async_success(client, make):
    order, buyer, _ = _order(client, make)
    pending = deliver(client, completed_event(order, session={"payment_status": "unpaid"}))
    assert pending.get_json()["outcome"] == "awaiting_payment"
    assert _status(client, make, order, buyer)["status"] == "pending_payment"
    succeeded = deliver(client, completed_event(order, type="checkout.session.async_payment_succeeded"))
    assert succeeded.get_json()["outcome"] == "paid"
    assert _status(client, make, order, buyer)["status"] == "paid"


def test_expired_after_completed_leaves_the_order_paid_and_stock_taken(client, make):
    order, buyer, stock = _order(client, make)
    deliver(client, completed_event(order))
    late = deliver(client, completed_event(order, type="checkout.session.expired",
                                           session={"status": "expired", "payment_status": "unpaid"}))
    assert late.get_json()["outcome"] == "ignored_not_pending"
    assert _status(client, make, order, buyer)["status"] == "paid"
    db.session.expire_all()
    assert db.session.get(Batch, stock.id).available_quantity == 8


def test_expired_session_releases_the_reservation_and_a_late_completion_raises_an_alert(client, make):
    order, buyer, stock = _order(client, make)
    expired = deliver(client, completed_event(order, type="checkout.session.expired",
                                              session={"status": "expired", "payment_status": "unpaid"}))
    assert expired.get_json()["outcome"] == "cancelled"
    db.session.expire_all()
    assert db.session.get(Batch, stock.id).available_quantity == 10
    late = deliver(client, completed_event(order))
    assert late.get_json()["outcome"] == "paid_after_cancel"
    assert _status(client, make, order, buyer)["status"] == "cancelled"
    db.session.expire_all()
    assert db.session.get(Batch, stock.id).available_quantity == 10
    assert "paid_after_cancel" in [e.action for e in history_of("order", order["id"])]


def test_events_of_other_kinds_are_acknowledged_and_ignored(client, make):
    order, buyer, _ = _order(client, make)
    response = deliver(client, completed_event(order, type="payment_intent.created"))
    assert response.status_code == 200 and response.get_json()["outcome"] == "ignored"
    assert _status(client, make, order, buyer)["status"] == "pending_payment"


def test_sandbox_checkout_pays_through_the_signed_webhook(client, make):
    order, buyer, stock = _order(client, make)
    client.post("/login", data={"email": buyer.email, "password": "password123"})
    session_id = order["payment"]["checkout_session_id"]
    page = client.get(f"/pay/sandbox/{session_id}")
    assert page.status_code == 200 and "模拟支付（离线演示，不会真实扣款）" in page.get_data(as_text=True)
    response = client.post(f"/pay/sandbox/{session_id}")
    assert response.status_code == 302
    assert _status(client, make, order, buyer)["status"] == "paid"
    event = db.session.scalars(sa.select(PaymentEvent)).one()
    assert event.event_id.startswith("evt_sandbox_") and event.outcome == "paid"
    assert client.post(f"/pay/sandbox/{session_id}").status_code == 409
    assert client.get("/pay/sandbox/cs_sandbox_nope").status_code == 404


def test_sandbox_uses_a_per_instance_secret_when_none_is_configured(client, make, app):
    app.config["STRIPE_WEBHOOK_SECRET"] = ""
    try:
        order, buyer, _ = _order(client, make)
        assert deliver(client, completed_event(order), secret="").status_code == 400
        client.post("/login", data={"email": buyer.email, "password": "password123"})
        assert client.post(f"/pay/sandbox/{order['payment']['checkout_session_id']}").status_code == 302
        assert _status(client, make, order, buyer)["status"] == "paid"
    finally:
        app.config["STRIPE_WEBHOOK_SECRET"] = "whsec_test_secret"
