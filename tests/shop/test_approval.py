"""内部审批 (issue #12): a budget unit's orders above its threshold wait for the unit's approver;
finance cannot take the money before; approve/reject is audited and shown to buyer and approver."""
import json

import sqlalchemy as sa

from core.audit import history_of
from core.extensions import db
from core.models import Role
from shop.models import Order
from traceability.models import Batch
from tests.certification.factories import certified_product
from tests.shop.helpers import place
from tests.traceability.factories import batch


def _setup(make, threshold_fen=100_000):
    tea = certified_product(make, price_fen=10_000)  # ¥100 a unit
    batch(tea, quantity=100)
    unit = make.budget_unit(approval_threshold_fen=threshold_fen)
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=unit)
    approver = make.user(Role.CANTEEN_BUYER, budget_unit=unit, is_approver=True)
    return tea, unit, buyer, approver


def _available(product) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.sum(Batch.available_quantity)).where(Batch.product_id == product.id))


def _confirm(client, make, order):
    return client.post(f"/api/v1/orders/{order['id']}/confirm-transfer", headers=make.headers(make.user(Role.FINANCE)),
                       json={"amount_fen": order["total_fen"], "reference": "BANK-9"})


def test_an_order_at_or_below_the_threshold_needs_no_approval(client, make):
    tea, _, buyer, _ = _setup(make)
    order = place(client, make, buyer, (tea, 10), payment_method="bank_transfer")  # exactly ¥1,000
    assert order["approval"] is None
    assert _confirm(client, make, order).status_code == 200


def test_above_the_threshold_the_order_waits_and_finance_cannot_confirm(client, make):
    tea, _, buyer, approver = _setup(make)
    order = place(client, make, buyer, (tea, 11), payment_method="bank_transfer")
    assert order["status"] == "pending_payment"
    assert order["approval"]["status"] == "pending" and order["approval"]["label"] == "待内部审批"
    refused = _confirm(client, make, order)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "approval_pending"
    assert _available(tea) == 89  # the stock stays reserved while the approver decides

    waiting = client.get("/api/v1/orders?approval=pending", headers=make.headers(approver)).get_json()
    assert [o["id"] for o in waiting["items"]] == [order["id"]]
    approved = client.post(f"/api/v1/orders/{order['id']}/approval", headers=make.headers(approver),
                           json={"decision": "approve", "comment": "同意采购"})
    assert approved.status_code == 200, approved.get_json()
    body = approved.get_json()
    assert body["approval"]["status"] == "approved" and body["approval"]["by"] == approver.display_name
    assert body["approval"]["comment"] == "同意采购"
    seen_by_buyer = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(buyer)).get_json()
    assert seen_by_buyer["approval"]["status"] == "approved"
    assert _confirm(client, make, order).status_code == 200
    actions = [event.action for event in history_of("order", order["id"])]
    assert actions == ["placed", "approval_approved", "paid"]


def test_a_rejected_order_is_cancelled_and_its_stock_released(client, make):
    tea, _, buyer, approver = _setup(make)
    order = place(client, make, buyer, (tea, 20), payment_method="bank_transfer")
    url = f"/api/v1/orders/{order['id']}/approval"
    no_reason = client.post(url, headers=make.headers(approver), json={"decision": "reject"})
    assert no_reason.status_code == 422 and "comment" in no_reason.get_json()["error"]["fields"]
    rejected = client.post(url, headers=make.headers(approver), json={"decision": "reject", "comment": "超出本月预算"})
    assert rejected.status_code == 200
    body = rejected.get_json()
    assert body["status"] == "cancelled" and body["approval"]["status"] == "rejected"
    assert "超出本月预算" in body["cancel_reason"]
    assert _available(tea) == 100
    again = client.post(url, headers=make.headers(approver), json={"decision": "approve"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "not_awaiting_approval"
    event = history_of("order", order["id"])[-1]
    assert event.action == "approval_rejected" and event.actor_id == approver.id


def test_only_an_approver_of_the_same_unit_and_never_for_their_own_order(client, make):
    tea, unit, buyer, approver = _setup(make)
    order = place(client, make, buyer, (tea, 20), payment_method="bank_transfer")
    url = f"/api/v1/orders/{order['id']}/approval"
    decision = {"decision": "approve"}
    colleague = make.user(Role.CANTEEN_BUYER, budget_unit=unit)  # same unit, not an approver
    assert client.post(url, headers=make.headers(colleague), json=decision).status_code == 404
    other_unit_approver = make.user(Role.CANTEEN_BUYER, is_approver=True)
    assert client.post(url, headers=make.headers(other_unit_approver), json=decision).status_code == 404
    assert client.post(url, headers=make.headers(make.user(Role.FINANCE)), json=decision).status_code == 403
    own = place(client, make, approver, (tea, 20), payment_method="bank_transfer")
    assert own["approval"]["status"] == "pending"
    refused = client.post(f"/api/v1/orders/{own['id']}/approval", headers=make.headers(approver), json=decision)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "own_order"
    unknown = client.post(url, headers=make.headers(approver), json={"decision": "approve", "extra": 1})
    assert unknown.status_code == 422
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).approval_status == "pending"


def test_admin_sets_the_threshold_and_the_approver_flag_through_the_api(client, make):
    admin = make.headers(make.user(Role.ADMIN))
    unit = make.budget_unit()
    changed = client.patch(f"/api/v1/budget-units/{unit.id}", headers=admin, json={"approval_threshold_fen": 500_000})
    assert changed.status_code == 200 and changed.get_json()["approval_threshold_fen"] == 500_000
    bad = client.patch(f"/api/v1/budget-units/{unit.id}", headers=admin, json={"approval_threshold_fen": -1})
    assert bad.status_code == 422
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=unit)
    flagged = client.patch(f"/api/v1/users/{buyer.id}", headers=admin, json={"is_approver": True})
    assert flagged.status_code == 200 and flagged.get_json()["is_approver"] is True
    consumer = make.user()
    wrong = client.patch(f"/api/v1/users/{consumer.id}", headers=admin, json={"is_approver": True})
    assert wrong.status_code == 422
    assert [e.action for e in history_of("user", buyer.id)][-1] == "approver"
    changes = json.loads(history_of("budget_unit", unit.id)[-1].data)["changes"]
    assert changes["approval_threshold_fen"] == {"from": None, "to": 500_000}


def test_parallel_approvals_decide_once(app, client, make):
    """Two approvers clicking at once on PostgreSQL: one decision, the other is told it is decided."""
    from tests.concurrency import run_parallel, skip_unless_postgres
    skip_unless_postgres()
    tea, unit, buyer, approver = _setup(make)
    second = make.user(Role.CANTEEN_BUYER, budget_unit=unit, is_approver=True)
    order = place(client, make, buyer, (tea, 20), payment_method="bank_transfer")
    url = f"/api/v1/orders/{order['id']}/approval"

    def decide(user, decision):
        headers = make.headers(user)
        body = {"decision": decision, "comment": "并发"}
        return lambda: app.test_client().post(url, json=body, headers=headers).status_code

    statuses = sorted(run_parallel(app, [decide(approver, "approve"), decide(second, "reject")] * 3))
    assert statuses == [200] + [409] * 5
    db.session.expire_all()
    decided = db.session.get(Order, order["id"])
    events = [e.action for e in history_of("order", order["id"])]
    assert events.count("approval_approved") + events.count("approval_rejected") == 1
    assert (decided.status == "cancelled") == (decided.approval_status == "rejected")
    assert _available(tea) == (100 if decided.approval_status == "rejected" else 80)
