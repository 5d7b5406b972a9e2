"""The offline simulated checkout is demo-only, its buyer's only, and flagged in every report
(issue #14 item 6): it must never let a visitor with a link turn an order into a village sale."""
import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from shop.models import Order
from tests.certification.factories import certified_product
from tests.shop.helpers import order_body, place
from tests.traceability.factories import batch
from traceability.models import Batch


@pytest.fixture
def stocked(make):
    product = certified_product(make)
    batch(product, quantity=10)
    return product


@pytest.fixture
def sandbox_off(app):
    app.config["SANDBOX_PAYMENTS"] = False
    yield
    app.config["SANDBOX_PAYMENTS"] = True


def _sign_in(client, user):
    response = client.post("/login", data={"email": user.email, "password": "password123"})
    assert response.status_code == 302


def _available(product) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.sum(Batch.available_quantity)).where(Batch.product_id == product.id))


def test_without_stripe_or_the_sandbox_online_checkout_is_503_and_reserves_nothing(client, make, stocked,
                                                                                    sandbox_off):
    response = client.post("/api/v1/orders", json=order_body((stocked, 2)), headers=make.headers(make.user()))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "payments_unavailable"
    assert _available(stocked) == 10
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 0


def test_without_the_sandbox_setting_an_existing_sandbox_link_is_404(client, make, stocked, app):
    buyer = make.user()
    order = place(client, make, buyer, (stocked, 1))
    session_id = order["payment"]["checkout_session_id"]
    _sign_in(client, buyer)
    app.config["SANDBOX_PAYMENTS"] = False
    try:
        assert client.get(f"/pay/sandbox/{session_id}").status_code == 404
        assert client.post(f"/pay/sandbox/{session_id}").status_code == 404
    finally:
        app.config["SANDBOX_PAYMENTS"] = True
    assert db.session.get(Order, order["id"]).status == "pending_payment"


def test_only_the_buyer_can_open_or_pay_the_simulated_checkout(client, make, stocked):
    buyer = make.user()
    order = place(client, make, buyer, (stocked, 1))
    session_id = order["payment"]["checkout_session_id"]
    anonymous = client.post(f"/pay/sandbox/{session_id}")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    for stranger in (make.user(), make.user(Role.ADMIN), make.user(Role.FINANCE)):
        _sign_in(client, stranger)
        assert client.get(f"/pay/sandbox/{session_id}").status_code == 404
        assert client.post(f"/pay/sandbox/{session_id}").status_code == 404
        client.post("/logout")
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).status == "pending_payment"
    _sign_in(client, buyer)
    assert client.post(f"/pay/sandbox/{session_id}").status_code == 302
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).status == "paid"


def test_reports_say_when_simulated_payments_are_in_the_figures(client, make, stocked):
    official = make.headers(make.user(Role.OFFICIAL))
    clean = client.get("/api/v1/reports/village-sales", headers=official).get_json()
    assert clean["simulated_payment_orders"] == 0
    buyer = make.user()
    order = place(client, make, buyer, (stocked, 1))
    _sign_in(client, buyer)
    client.post(f"/pay/sandbox/{order['payment']['checkout_session_id']}")
    client.post("/logout")
    for path in ("/api/v1/reports/village-sales", "/api/v1/reports/county-sales", "/api/v1/reports/monthly-sales"):
        assert client.get(path, headers=official).get_json()["simulated_payment_orders"] == 1, path
    _sign_in(client, make.user(Role.OFFICIAL))
    for page in ("/reports", "/reports/villages"):
        html = client.get(page).get_data(as_text=True)
        assert "模拟支付" in html and "未真实收款" in html, page
