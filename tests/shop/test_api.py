"""Orders API per the contract: creation, pricing, stock, visibility, cancel, transfer, refund, ship."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.audit import history_of
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from shop.models import Order, OrderAllocation
from tests.certification.factories import certified_product, product
from tests.shop.helpers import SHIPPING, completed_event, deliver, order_body, place
from tests.traceability.factories import batch
from traceability.models import Batch
from certification.models import BulkTier


def _available(product_id) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.sum(Batch.available_quantity)).where(Batch.product_id == product_id))


def test_consumer_order_is_priced_by_the_server_and_reserves_stock(client, make):
    tea = certified_product(make, price_fen=12_800)
    batch(tea, quantity=10)
    buyer = make.user(Role.CONSUMER)
    body = order_body((tea, 3))
    body["lines"][0]["unit_price_fen"] = 1  # a client-sent price is refused, never used
    refused = client.post("/api/v1/orders", json=body, headers=make.headers(buyer))
    assert refused.status_code == 422 and "unit_price_fen" in refused.get_json()["error"]["fields"]["lines"]["0"]
    del body["lines"][0]["unit_price_fen"]
    response = client.post("/api/v1/orders", json=body, headers=make.headers(buyer))
    assert response.status_code == 201
    order = response.get_json()
    assert order["status"] == "pending_payment" and order["channel"] == "online"
    assert order["total_fen"] == 38_400
    assert order["lines"] == [{**order["lines"][0], "product_id": tea.id, "quantity": 3, "unit_price_fen": 12_800,
                               "line_total_fen": 38_400}]
    assert order["number"].startswith("XB" + shanghai_today().strftime("%Y%m%d") + "-")
    assert order["payment"]["provider"] == "sandbox"
    assert order["payment"]["checkout_session_id"].startswith("cs_sandbox_")
    assert order["payment"]["checkout_url"] == "https://trace.example.cn/pay/sandbox/" + order["payment"]["checkout_session_id"]
    assert _available(tea.id) == 7
    assert [e.action for e in history_of("order", order["id"])] == ["placed"]


def test_order_numbers_are_unique_and_readable(client, make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user()
    numbers = {place(client, make, buyer, (tea, 1))["number"] for _ in range(3)}
    assert len(numbers) == 3


def test_duplicate_product_lines_are_merged(client, make):
    tea = certified_product(make, price_fen=1_000)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 2), (tea, 3))
    assert [(line["product_id"], line["quantity"]) for line in order["lines"]] == [(tea.id, 5)]
    assert order["total_fen"] == 5_000


def test_not_enough_stock_is_409_and_reserves_nothing(client, make):
    tea = certified_product(make)
    kiwi = certified_product(make, name="十八洞猕猴桃")
    batch(tea, quantity=10)
    batch(kiwi, quantity=2)
    response = client.post("/api/v1/orders", json=order_body((tea, 4), (kiwi, 3)), headers=make.headers(make.user()))
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "insufficient_stock" and "1" in error["fields"]["lines"]
    assert _available(tea.id) == 10 and _available(kiwi.id) == 2
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 0


def test_unsellable_product_is_409_and_unknown_product_is_422(client, make):
    draft = product(make)
    batch(draft, quantity=5)
    expired = certified_product(make, valid_from=shanghai_today() - timedelta(days=400),
                                valid_until=shanghai_today() - timedelta(days=1))
    batch(expired, quantity=5)
    headers = make.headers(make.user())
    for item in (draft, expired):
        response = client.post("/api/v1/orders", json=order_body((item, 1)), headers=headers)
        assert response.status_code == 409
        assert response.get_json()["error"]["code"] == "product_not_sellable"
    body = order_body((draft, 1))
    body["lines"][0]["product_id"] = 999_999
    response = client.post("/api/v1/orders", json=body, headers=headers)
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "unknown_product"


@pytest.mark.parametrize("body, field", [
    ({"lines": [], "payment_method": "stripe", "shipping": SHIPPING}, "lines"),
    ({"lines": [{"product_id": 1, "quantity": 0}], "payment_method": "stripe", "shipping": SHIPPING}, "lines"),
    ({"lines": [{"product_id": 1, "quantity": "2"}], "payment_method": "stripe", "shipping": SHIPPING}, "lines"),
    ({"lines": [{"product_id": 1, "quantity": 1}], "payment_method": "cash", "shipping": SHIPPING}, "payment_method"),
    ({"lines": [{"product_id": 1, "quantity": 1}], "payment_method": "stripe"}, "shipping"),
    ({"lines": [{"product_id": 1, "quantity": 1}], "payment_method": "stripe",
      "shipping": {**SHIPPING, "phone": "call me"}}, "shipping"),
])
def test_invalid_order_body_is_422_with_field(client, make, body, field):
    response = client.post("/api/v1/orders", json=body, headers=make.headers(make.user()))
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


def test_malformed_json_is_400_and_anonymous_is_401(client, make):
    response = client.post("/api/v1/orders", data="{nope", headers={**make.headers(make.user()),
                                                                     "Content-Type": "application/json"})
    assert response.status_code == 400
    assert client.post("/api/v1/orders", json={}).status_code == 401


def test_bank_transfer_is_for_canteen_buyers_only(client, make):
    tea = certified_product(make)
    batch(tea, quantity=50)
    response = client.post("/api/v1/orders", json=order_body((tea, 1), payment_method="bank_transfer"),
                           headers=make.headers(make.user(Role.CONSUMER)))
    assert response.status_code == 403
    assert _available(tea.id) == 50


def test_canteen_order_respects_moq_and_gets_tier_price(client, make):
    tea = certified_product(make, price_fen=10_000, bulk_moq=10)
    db.session.add_all([BulkTier(product=tea, min_qty=10, price_fen=9_000),
                        BulkTier(product=tea, min_qty=50, price_fen=8_000)])
    db.session.commit()
    batch(tea, quantity=200)
    canteen = make.user(Role.CANTEEN_BUYER)
    response = client.post("/api/v1/orders", json=order_body((tea, 9), payment_method="bank_transfer"),
                           headers=make.headers(canteen))
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "below_moq"
    order = place(client, make, canteen, (tea, 60), payment_method="bank_transfer", purchase_order_no="PO-2026-001",
                  invoice={"title": "湘西州机关事务服务中心", "tax_id": "11433100MB1234567X"})
    assert order["channel"] == "canteen" and order["budget_unit_id"] == canteen.budget_unit_id
    assert order["lines"][0]["unit_price_fen"] == 8_000 and order["total_fen"] == 480_000
    assert order["payment"] == {**order["payment"], "provider": "bank_transfer", "checkout_session_id": None,
                                "checkout_url": None}
    assert order["invoice"] == {"title": "湘西州机关事务服务中心", "tax_id": "11433100MB1234567X"}
    # The tier price needs the tier's quantity; a consumer always pays the list price.
    consumer_order = place(client, make, make.user(), (tea, 60))
    assert consumer_order["lines"][0]["unit_price_fen"] == 10_000


def test_cooperative_cannot_buy_its_own_products(client, make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    member = make.user(Role.COOPERATIVE, cooperative=tea.cooperative)
    response = client.post("/api/v1/orders", json=order_body((tea, 1)), headers=make.headers(member))
    assert response.status_code == 403


def test_idempotency_key_returns_the_same_order_once(client, make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user()
    headers = {**make.headers(buyer), "Idempotency-Key": "retry-42"}
    first = client.post("/api/v1/orders", json=order_body((tea, 2)), headers=headers)
    second = client.post("/api/v1/orders", json=order_body((tea, 2)), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.get_json()["id"] == second.get_json()["id"]
    assert _available(tea.id) == 8
    other = client.post("/api/v1/orders", json=order_body((tea, 3)), headers=headers)
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"


def test_multi_cooperative_order_visibility(client, make):
    tea = certified_product(make, price_fen=1_000)
    kiwi = certified_product(make, name="十八洞猕猴桃", price_fen=2_000)
    batch(tea, quantity=5)
    batch(kiwi, quantity=5)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 1), (kiwi, 2))
    tea_coop = make.user(Role.COOPERATIVE, cooperative=tea.cooperative)
    kiwi_coop = make.user(Role.COOPERATIVE, cooperative=kiwi.cooperative)
    outsider_coop = make.user(Role.COOPERATIVE)

    full = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(buyer)).get_json()
    assert len(full["lines"]) == 2 and len(full["fulfilments"]) == 2 and full["total_fen"] == 5_000
    for role in (Role.FINANCE, Role.ADMIN):
        assert client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(make.user(role))).status_code == 200
    part = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(tea_coop)).get_json()
    assert part["scope"] == "cooperative"
    assert [line["product_id"] for line in part["lines"]] == [tea.id]
    assert [f["cooperative_id"] for f in part["fulfilments"]] == [tea.cooperative_id]
    assert part["shipping"] == SHIPPING and part["total_fen"] == 1_000 and "payment" not in part
    kiwi_part = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(kiwi_coop)).get_json()
    assert [line["product_id"] for line in kiwi_part["lines"]] == [kiwi.id]
    for stranger in (outsider_coop, make.user(), make.user(Role.OFFICIAL)):
        assert client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(stranger)).status_code == 404
    assert client.get("/api/v1/orders/999999", headers=make.headers(buyer)).status_code == 404
    listed = client.get("/api/v1/orders", headers=make.headers(kiwi_coop)).get_json()
    assert listed["total"] == 1 and listed["items"][0]["scope"] == "cooperative"


def test_cancel_releases_stock_at_once_and_only_once(client, make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 4))
    other = make.user()
    assert client.post(f"/api/v1/orders/{order['id']}/cancel", headers=make.headers(other)).status_code == 404
    finance = make.user(Role.FINANCE)
    assert client.post(f"/api/v1/orders/{order['id']}/cancel", headers=make.headers(finance)).status_code == 403
    response = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=make.headers(buyer))
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert _available(tea.id) == 10
    again = client.post(f"/api/v1/orders/{order['id']}/cancel", headers=make.headers(buyer))
    assert again.status_code == 409
    assert _available(tea.id) == 10
    assert [e.action for e in history_of("order", order["id"])] == ["placed", "cancelled"]


def test_paid_order_cannot_be_cancelled(client, make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 1))
    assert deliver(client, completed_event(order)).status_code == 200
    assert client.post(f"/api/v1/orders/{order['id']}/cancel", headers=make.headers(buyer)).status_code == 409


def test_finance_confirms_a_bank_transfer_of_the_exact_total(client, make):
    tea = certified_product(make, price_fen=5_000)
    batch(tea, quantity=100)
    canteen = make.user(Role.CANTEEN_BUYER)
    order = place(client, make, canteen, (tea, 20), payment_method="bank_transfer")
    finance = make.headers(make.user(Role.FINANCE))
    url = f"/api/v1/orders/{order['id']}/confirm-transfer"
    assert client.post(url, json={"amount_fen": 1, "reference": "x"}, headers=make.headers(canteen)).status_code == 403
    wrong = client.post(url, json={"amount_fen": 99_999, "reference": "B2026112900001"}, headers=finance)
    assert wrong.status_code == 422 and wrong.get_json()["error"]["code"] == "amount_mismatch"
    assert client.post(url, json={"amount_fen": 100_000}, headers=finance).status_code == 422
    done = client.post(url, json={"amount_fen": 100_000, "reference": "B2026112900001"}, headers=finance)
    assert done.status_code == 200
    body = done.get_json()
    assert body["status"] == "paid" and body["payment"]["reference"] == "B2026112900001" and body["paid_at"]
    assert client.post(url, json={"amount_fen": 100_000, "reference": "again"}, headers=finance).status_code == 409
    stripe_order = place(client, make, make.user(), (tea, 1))
    response = client.post(f"/api/v1/orders/{stripe_order['id']}/confirm-transfer",
                           json={"amount_fen": 5_000, "reference": "r"}, headers=finance)
    assert response.status_code == 409


def test_bank_transfer_orders_hold_stock_longer_than_online_orders(client, make, app):
    tea = certified_product(make)
    batch(tea, quantity=100)
    online = place(client, make, make.user(), (tea, 1))
    canteen = place(client, make, make.user(Role.CANTEEN_BUYER), (tea, 1), payment_method="bank_transfer")
    assert canteen["reserved_until"] > online["reserved_until"]


def test_refunds_are_cumulative_and_bounded_by_the_total(client, make):
    tea = certified_product(make, price_fen=3_000)
    batch(tea, quantity=10)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 3))
    url = f"/api/v1/orders/{order['id']}/refund"
    finance = make.headers(make.user(Role.FINANCE))
    assert client.post(url, json={"amount_fen": 100, "reason": "未付款"}, headers=finance).status_code == 409
    deliver(client, completed_event(order))
    assert client.post(url, json={"amount_fen": 100, "reason": "x"}, headers=make.headers(buyer)).status_code == 403
    assert client.post(url, json={"amount_fen": 0, "reason": "x"}, headers=finance).status_code == 422
    partial = client.post(url, json={"amount_fen": 2_000, "reason": "一盒破损"}, headers=finance)
    assert partial.status_code == 200 and partial.get_json()["status"] == "partially_refunded"
    assert partial.get_json()["refunded_fen"] == 2_000
    too_much = client.post(url, json={"amount_fen": 7_001, "reason": "多退"}, headers=finance)
    assert too_much.status_code == 422 and too_much.get_json()["error"]["code"] == "refund_exceeds_paid"
    admin = make.headers(make.user(Role.ADMIN))
    full = client.post(url, json={"amount_fen": 7_000, "reason": "整单退货"}, headers=admin)
    assert full.status_code == 200 and full.get_json()["status"] == "refunded"
    assert [r["amount_fen"] for r in full.get_json()["refunds"]] == [2_000, 7_000]
    assert client.post(url, json={"amount_fen": 1, "reason": "再退"}, headers=finance).status_code == 409
    allocations = db.session.scalars(sa.select(OrderAllocation)).all()
    assert sum(a.refunded_fen for a in allocations) == 9_000


def test_each_cooperative_ships_its_part_and_the_buyer_confirms_receipt(client, make):
    tea = certified_product(make)
    kiwi = certified_product(make, name="猕猴桃")
    batch(tea, quantity=5)
    batch(kiwi, quantity=5)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 1), (kiwi, 1))
    tea_coop = make.headers(make.user(Role.COOPERATIVE, cooperative=tea.cooperative))
    kiwi_coop = make.headers(make.user(Role.COOPERATIVE, cooperative=kiwi.cooperative))
    ship = {"carrier": "顺丰速运", "tracking_number": "SF1234567890"}
    url = f"/api/v1/orders/{order['id']}/ship"
    assert client.post(url, json=ship, headers=tea_coop).status_code == 409  # not paid yet
    deliver(client, completed_event(order))
    first = client.post(url, json=ship, headers=tea_coop)
    assert first.status_code == 200
    assert first.get_json()["status"] == "paid" and first.get_json()["fulfilments"][0]["status"] == "shipped"
    assert client.post(url, json=ship, headers=tea_coop).status_code == 409
    assert client.post(url, json={"carrier": "邮政", "tracking_number": "no"}, headers=kiwi_coop).status_code == 422
    second = client.post(url, json={"carrier": "中国邮政", "tracking_number": "YZ9876543210"}, headers=kiwi_coop)
    assert second.get_json()["status"] == "shipped"
    receipt = f"/api/v1/orders/{order['id']}/confirm-receipt"
    assert client.post(receipt, headers=kiwi_coop).status_code == 403
    done = client.post(receipt, headers=make.headers(buyer))
    assert done.status_code == 200 and done.get_json()["status"] == "completed"
    assert {f["status"] for f in done.get_json()["fulfilments"]} == {"received"}
    actions = [e.action for e in history_of("order", order["id"])]
    assert actions == ["placed", "paid", "part_shipped", "shipped", "completed"]
