"""Real concurrency on PostgreSQL: parallel buyers never oversell, crossing orders never deadlock,
and a webhook delivered twice at once pays once."""
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.audit import history_of, verify_chain
from core.errors import Conflict
from core.extensions import db
from core.models import Role, User
from core.timeutil import shanghai_today
from shop import services
from shop.models import Order, OrderAllocation
from tests.certification.factories import certified_product
from tests.concurrency import run_parallel, skip_unless_postgres
from tests.shop.helpers import SHIPPING, completed_event, deliver, place
from tests.traceability.factories import batch
from traceability.models import Batch

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _postgres_only():
    skip_unless_postgres()


def _order_as(user_id, lines):
    """A job: place an order as the user with [(product_id, quantity)]."""
    def job():
        user = db.session.get(User, user_id)
        data = {"lines": [{"product_id": pid, "quantity": q} for pid, q in lines], "payment_method": "stripe",
                "shipping": SHIPPING, "purchase_order_no": None, "invoice": None}
        order, _ = services.place_order(user, data)
        return order.id
    return job


def test_parallel_buyers_get_exactly_the_ten_units_left(app, make):
    today = shanghai_today()
    tea = certified_product(make)
    batches = [batch(tea, quantity=q, produced_on=today - timedelta(days=d)) for q, d in ((3, 30), (3, 20), (4, 10))]
    buyers = [make.user(Role.CONSUMER).id for _ in range(30)]

    results = run_parallel(app, [_order_as(uid, [(tea.id, 1)]) for uid in buyers])

    placed = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(placed) == 10 and len(refused) == 20, Counter(type(r).__name__ for r in results)
    assert all(r.code == "insufficient_stock" for r in refused)
    db.session.expire_all()
    assert [db.session.get(Batch, b.id).available_quantity for b in batches] == [0, 0, 0]
    allocated = db.session.execute(sa.select(OrderAllocation.batch_id, sa.func.sum(OrderAllocation.quantity))
                                   .group_by(OrderAllocation.batch_id)).all()
    assert dict(allocated) == {batches[0].id: 3, batches[1].id: 3, batches[2].id: 4}
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 10
    assert verify_chain().ok


def test_orders_locking_the_same_batches_in_opposite_line_order_never_deadlock(app, make):
    tea = certified_product(make, name="茶")
    kiwi = certified_product(make, name="猕猴桃")
    tea_batches = [batch(tea, quantity=20), batch(tea, quantity=20)]
    kiwi_batches = [batch(kiwi, quantity=20), batch(kiwi, quantity=20)]
    buyers = [make.user().id for _ in range(16)]
    jobs = [_order_as(uid, [(tea.id, 3), (kiwi.id, 3)] if i % 2 else [(kiwi.id, 3), (tea.id, 3)])
            for i, uid in enumerate(buyers)]

    results = run_parallel(app, jobs)

    placed = [r for r in results if isinstance(r, int)]
    assert all(isinstance(r, (int, Conflict)) for r in results), results
    assert len(placed) == 13  # 40 units of each, 3 per order
    db.session.expire_all()
    left_tea = sum(db.session.get(Batch, b.id).available_quantity for b in tea_batches)
    left_kiwi = sum(db.session.get(Batch, b.id).available_quantity for b in kiwi_batches)
    assert left_tea == left_kiwi == 40 - 3 * len(placed)


def test_cancels_and_expiry_racing_release_stock_once(app, make):
    tea = certified_product(make)
    stock = batch(tea, quantity=10)
    buyer = make.user()
    order, _ = services.place_order(buyer, {"lines": [{"product_id": tea.id, "quantity": 6}],
                                            "payment_method": "stripe", "shipping": SHIPPING})
    order_id, buyer_id = order.id, buyer.id
    db.session.execute(sa.update(Order).values(reserved_until=order.created_at - timedelta(minutes=1)))
    db.session.commit()

    def cancel():
        return services.cancel_order(db.session.get(User, buyer_id), order_id).status

    results = run_parallel(app, [cancel, services.expire_stale_reservations] * 4)

    db.session.expire_all()
    assert db.session.get(Batch, stock.id).available_quantity == 10
    assert [e.action for e in history_of("order", order_id)].count("placed") == 1
    assert len([e for e in history_of("order", order_id) if e.to_state == "cancelled"]) == 1
    assert all(not isinstance(r, Exception) or isinstance(r, Conflict) for r in results), results


def test_same_webhook_event_delivered_concurrently_pays_once(app, client, make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    order = place(client, make, make.user(), (tea, 2))
    event = completed_event(order)

    def deliver_once():
        return deliver(app.test_client(), event).get_json()

    results = run_parallel(app, [deliver_once] * 6)

    assert sorted(r["outcome"] for r in results) == ["duplicate"] * 5 + ["paid"]
    assert [e.action for e in history_of("order", order["id"])] == ["placed", "paid"]
