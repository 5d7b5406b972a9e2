"""Order bodies keep what the buyer sends or refuse it (issue #12): ``delivery_date`` is stored,
validated in Asia/Shanghai days, shown to the buyer, its unit and the cooperative; an unknown
field is a 422, never silently dropped."""
import copy
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from tests.certification.factories import certified_product
from tests.shop.helpers import order_body
from tests.traceability.factories import batch
from traceability.models import Batch


@pytest.fixture
def stocked(make):
    product = certified_product(make)
    batch(product, quantity=50)
    return product


def test_a_delivery_date_is_kept_and_shown(client, make, stocked):
    canteen = make.user(Role.CANTEEN_BUYER)
    wanted = (shanghai_today() + timedelta(days=3)).isoformat()
    response = client.post("/api/v1/orders", headers=make.headers(canteen),
                           json=order_body((stocked, 10), payment_method="bank_transfer", delivery_date=wanted,
                                           purchase_order_no="XZJG-1"))
    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    assert order["delivery_date"] == wanted
    assert client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(canteen)).get_json()["delivery_date"] == wanted
    client.post("/login", data={"email": canteen.email, "password": "password123"})
    assert f"希望送达：{wanted}" in client.get(f"/orders/{order['id']}").get_data(as_text=True)


def test_today_is_accepted_and_yesterday_or_next_year_are_422(client, make, stocked):
    headers = make.headers(make.user())
    today = shanghai_today()
    assert client.post("/api/v1/orders", headers=headers,
                       json=order_body((stocked, 1), delivery_date=today.isoformat())).status_code == 201
    for bad in ((today - timedelta(days=1)).isoformat(), (today + timedelta(days=400)).isoformat(), "明天", "2026-13-01"):
        response = client.post("/api/v1/orders", headers=headers, json=order_body((stocked, 1), delivery_date=bad))
        assert response.status_code == 422, bad
        assert "delivery_date" in response.get_json()["error"]["fields"]


@pytest.mark.parametrize("where", ["top", "line", "shipping", "invoice"])
def test_an_unknown_field_anywhere_in_an_order_body_is_422_and_reserves_nothing(client, make, stocked, where):
    body = copy.deepcopy(order_body((stocked, 2), invoice={"title": "吉首市机关食堂", "tax_id": "11433101006000000X"}))
    target = {"top": body, "line": body["lines"][0], "shipping": body["shipping"], "invoice": body["invoice"]}[where]
    target["deliver_on"] = "2026-12-24"
    response = client.post("/api/v1/orders", headers=make.headers(make.user()), json=body)
    assert response.status_code == 422
    assert "deliver_on" in str(response.get_json()["error"]["fields"])
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.sum(Batch.available_quantity)).where(Batch.product_id == stocked.id)) == 50


def test_the_checkout_form_sends_the_delivery_date(client, make, stocked):
    buyer = make.user()
    client.post("/login", data={"email": buyer.email, "password": "password123"})
    client.post("/cart/add", data={"product_id": stocked.id, "quantity": 1})
    wanted = (shanghai_today() + timedelta(days=2)).isoformat()
    response = client.post("/checkout", data={"name": "张三", "phone": "13800000000", "address": "湖南省吉首市人民北路 1 号",
                                              "payment_method": "stripe", "delivery_date": wanted})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    orders = client.get("/api/v1/orders", headers=make.headers(buyer)).get_json()["items"]
    assert orders[0]["delivery_date"] == wanted
