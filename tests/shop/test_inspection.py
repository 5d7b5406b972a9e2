"""验货 per line (issue #12): received and refused quantities, a shortfall opens a refund request,
finance refunds it from the short line's own allocations, and the village and reserved-share
reports drop by exactly the value of the goods that did not arrive, to the fen."""
import io
from datetime import timedelta

import pytest
from PIL import Image

from core.audit import history_of
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from shop.models import Order
from tests.certification.factories import certified_product
from tests.shop.helpers import place
from tests.traceability.factories import batch

TEA_PRICE, KIWI_PRICE = 3_333, 1_999


@pytest.fixture
def delivered(client, make):
    """A canteen order of 8 tea (from two villages' batches) and 10 kiwi, paid and shipped."""
    home, other, third = make.village("古丈县"), make.village("花垣县"), make.village("凤凰县")
    tea = certified_product(make, price_fen=TEA_PRICE, villages=[home, other])
    kiwi = certified_product(make, price_fen=KIWI_PRICE, villages=[third])
    batch(tea, village=home, quantity=5, produced_on=shanghai_today() - timedelta(days=30))  # sold first
    batch(tea, village=other, quantity=50)
    batch(kiwi, village=third, quantity=50)
    unit = make.budget_unit(annual_canteen_budget_fen=10_000_000, reserved_share="0.10")
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=unit)
    order = place(client, make, buyer, (tea, 8), (kiwi, 10), payment_method="bank_transfer",
                  purchase_order_no="CG-2026-001")
    finance = make.user(Role.FINANCE)
    assert client.post(f"/api/v1/orders/{order['id']}/confirm-transfer", headers=make.headers(finance),
                       json={"amount_fen": order["total_fen"], "reference": "BANK-7"}).status_code == 200
    for product in (tea, kiwi):
        coop = make.headers(make.user(Role.COOPERATIVE, cooperative=product.cooperative))
        assert client.post(f"/api/v1/orders/{order['id']}/ship", headers=coop,
                           json={"carrier": "顺丰", "tracking_number": f"SF{product.id:08d}"}).status_code == 200
    return {"order": order, "tea": tea, "kiwi": kiwi, "buyer": buyer, "finance": finance, "unit": unit,
            "villages": (home, other, third), "admin": make.user(Role.ADMIN)}


def _inspect(client, make, d, tea=(8, 0), kiwi=(10, 0), note="", **kwargs):
    body = {"lines": [{"product_id": d["tea"].id, "received_quantity": tea[0], "rejected_quantity": tea[1]},
                      {"product_id": d["kiwi"].id, "received_quantity": kiwi[0], "rejected_quantity": kiwi[1]}],
            "note": note}
    return client.post(f"/api/v1/orders/{d['order']['id']}/inspection", json=body,
                       headers=make.headers(kwargs.get("user", d["buyer"])))


def _village_sales(client, make, d) -> dict[int, int]:
    year = shanghai_today().year
    body = client.get(f"/api/v1/reports/village-sales?year={year}&per_page=2000",
                      headers=make.headers(d["admin"])).get_json()
    ids = {v.id for v in d["villages"]}
    return {row["village_id"]: row["sales_fen"] for row in body["items"] if row["village_id"] in ids}


def _purchased(client, make, d) -> int:
    body = client.get(f"/api/v1/budget-units/{d['unit'].id}/reserved-share?year={shanghai_today().year}",
                      headers=make.headers(d["admin"])).get_json()
    return body["purchased_fen"]


def test_a_full_delivery_completes_the_order_and_claims_nothing(client, make, delivered):
    done = _inspect(client, make, delivered)
    assert done.status_code == 201, done.get_json()
    body = done.get_json()
    assert body["status"] == "completed" and body["inspection"]["claim_fen"] == 0
    assert body["refund_requests"] == []
    assert {f["status"] for f in body["fulfilments"]} == {"received"}
    again = _inspect(client, make, delivered)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_inspected"


def test_a_canteen_order_cannot_skip_inspection_with_one_button(client, make, delivered):
    one_click = client.post(f"/api/v1/orders/{delivered['order']['id']}/confirm-receipt",
                            headers=make.headers(delivered["buyer"]))
    assert one_click.status_code == 422 and one_click.get_json()["error"]["code"] == "inspection_required"


def test_a_shortfall_is_refunded_from_its_own_line_exactly_to_the_fen(client, make, delivered):
    d = delivered
    total = 8 * TEA_PRICE + 10 * KIWI_PRICE
    before = _village_sales(client, make, d)
    assert sum(before.values()) == total and _purchased(client, make, d) == total

    # 7 tea arrived, 1 of them mouldy: 2 short at ¥33.33 = ¥66.66.
    done = _inspect(client, make, d, tea=(7, 1), note="少一袋，另一袋受潮发霉")
    assert done.status_code == 201, done.get_json()
    body = done.get_json()
    assert body["status"] == "completed"
    [tea_row] = [row for row in body["inspection"]["lines"] if row["product_id"] == d["tea"].id]
    assert (tea_row["shortfall"], tea_row["claim_fen"]) == (2, 2 * TEA_PRICE)
    [request] = body["refund_requests"]
    assert request["status"] == "open" and request["amount_fen"] == 2 * TEA_PRICE
    assert "缺 1" in request["reason"] and "质量不合格 1" in request["reason"]
    # A claim is not money: the reports do not move until finance refunds.
    assert _village_sales(client, make, d) == before

    open_list = client.get("/api/v1/refund-requests?status=open", headers=make.headers(d["finance"])).get_json()
    assert [r["id"] for r in open_list["items"]] == [request["id"]]
    refunded = client.post(f"/api/v1/refund-requests/{request['id']}/decision", headers=make.headers(d["finance"]),
                           json={"decision": "refund"})
    assert refunded.status_code == 200, refunded.get_json()
    assert refunded.get_json()["status"] == "refunded"

    after = _village_sales(client, make, d)
    home, other, third = (v.id for v in d["villages"])
    assert after[third] == before[third] == 10 * KIWI_PRICE  # the kiwi villages lose nothing
    assert before[home] + before[other] - after[home] - after[other] == 2 * TEA_PRICE
    # 6,666 split over 16,665 (home) and 9,999 (other): 4,166.25 and 2,499.75; the spare fen goes
    # to the larger remainder.
    assert (before[home] - after[home], before[other] - after[other]) == (4_166, 2_500)
    assert _purchased(client, make, d) == total - 2 * TEA_PRICE
    db.session.expire_all()
    order = db.session.get(Order, d["order"]["id"])
    assert order.status == "partially_refunded" and order.refunded_fen == 2 * TEA_PRICE
    [tea_line] = [line for line in order.lines if line.product_id == d["tea"].id]
    assert tea_line.refunded_fen == 2 * TEA_PRICE
    again = client.post(f"/api/v1/refund-requests/{request['id']}/decision", headers=make.headers(d["finance"]),
                        json={"decision": "refund"})
    assert again.status_code == 409
    assert [e.action for e in history_of("order", order.id)][-3:] == ["completed", "refund_reserved", "refunded"]


def test_finance_may_decline_a_claim_with_a_reason_and_nothing_moves(client, make, delivered):
    d = delivered
    before = _village_sales(client, make, d)
    body = _inspect(client, make, d, kiwi=(9, 0), note="少一箱").get_json()
    request_id = body["refund_requests"][0]["id"]
    url = f"/api/v1/refund-requests/{request_id}/decision"
    assert client.post(url, headers=make.headers(d["finance"]), json={"decision": "decline"}).status_code == 422
    assert client.post(url, headers=make.headers(d["buyer"]), json={"decision": "refund"}).status_code == 403
    declined = client.post(url, headers=make.headers(d["finance"]),
                           json={"decision": "decline", "comment": "物流签收记录显示足量"})
    assert declined.status_code == 200 and declined.get_json()["status"] == "declined"
    assert _village_sales(client, make, d) == before


@pytest.mark.parametrize("tea, kiwi, note, field", [
    ((9, 0), (10, 0), "", "received_quantity"),     # more than ordered
    ((5, 6), (10, 0), "x", "rejected_quantity"),    # refused more than received
    ((6, 0), (10, 0), "", "note"),                  # a shortfall without a word on it
])
def test_wrong_inspections_are_refused_and_change_nothing(client, make, delivered, tea, kiwi, note, field):
    refused = _inspect(client, make, delivered, tea=tea, kiwi=kiwi, note=note)
    assert refused.status_code == 422
    assert field in str(refused.get_json()["error"]["fields"])
    db.session.expire_all()
    order = db.session.get(Order, delivered["order"]["id"])
    assert order.status == "shipped" and order.completed_at is None and order.inspection is None


def test_every_line_must_be_inspected_and_only_by_its_buyer(client, make, delivered):
    d = delivered
    url = f"/api/v1/orders/{d['order']['id']}/inspection"
    partial = client.post(url, headers=make.headers(d["buyer"]),
                          json={"lines": [{"product_id": d["tea"].id, "received_quantity": 8}]})
    assert partial.status_code == 422 and "_missing" in partial.get_json()["error"]["fields"]["lines"]
    unknown_field = client.post(url, headers=make.headers(d["buyer"]),
                                json={"lines": [{"product_id": d["tea"].id, "received_quantity": 8, "ok": True}]})
    assert unknown_field.status_code == 422
    assert _inspect(client, make, d, user=d["finance"]).status_code == 403
    assert _inspect(client, make, d, user=make.user(Role.CANTEEN_BUYER)).status_code == 404


def test_an_order_not_fully_shipped_cannot_be_inspected(client, make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user(Role.CANTEEN_BUYER)
    order = place(client, make, buyer, (tea, 2), payment_method="bank_transfer")
    body = {"lines": [{"product_id": tea.id, "received_quantity": 2}]}
    early = client.post(f"/api/v1/orders/{order['id']}/inspection", json=body, headers=make.headers(buyer))
    assert early.status_code == 409


def test_the_photo_of_a_problem_is_stored_and_shown_to_the_buyer(client, make, delivered, app):
    from shop import inspection
    d = delivered
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 160, 80)).save(picture, "PNG")
    data = {"lines": [{"product_id": d["tea"].id, "received_quantity": 8, "rejected_quantity": 1},
                      {"product_id": d["kiwi"].id, "received_quantity": 10, "rejected_quantity": 0}],
            "note": "一袋破损"}
    with app.test_request_context():
        inspection.record_inspection(d["buyer"], d["order"]["id"], data, photo=picture.getvalue())
        path = inspection.photo_path(d["buyer"], d["order"]["id"])
    assert path.is_file() and path.read_bytes()[:2] == b"\xff\xd8"  # re-encoded as JPEG


PARALLEL = 6


def _race(app, path, body, headers):
    from tests.concurrency import run_parallel

    def send():
        response = app.test_client().post(path, json=body, headers=headers)
        return response.status_code

    return sorted(run_parallel(app, [send] * PARALLEL))


def test_parallel_inspections_and_refund_decisions_happen_once(app, client, make, delivered):
    """Double-submits on PostgreSQL: one inspection, one refund request, one refund, exact totals."""
    from tests.concurrency import skip_unless_postgres
    skip_unless_postgres()
    d = delivered
    body = {"lines": [{"product_id": d["tea"].id, "received_quantity": 6, "rejected_quantity": 0},
                      {"product_id": d["kiwi"].id, "received_quantity": 10, "rejected_quantity": 0}],
            "note": "少两袋"}
    statuses = _race(app, f"/api/v1/orders/{d['order']['id']}/inspection", body, make.headers(d["buyer"]))
    assert statuses == [201] + [409] * (PARALLEL - 1)
    db.session.expire_all()
    order = db.session.get(Order, d["order"]["id"])
    [request] = order.refund_requests
    statuses = _race(app, f"/api/v1/refund-requests/{request.id}/decision", {"decision": "refund"},
                     make.headers(d["finance"]))
    assert statuses == [200] + [409] * (PARALLEL - 1)
    db.session.expire_all()
    order = db.session.get(Order, d["order"]["id"])
    assert len(order.refunds) == 1 and order.refunded_fen == 2 * TEA_PRICE
    assert sum(a.refunded_fen for a in order.allocations) == 2 * TEA_PRICE
