"""Stock per batch, reservation expiry, refund splitting and the state machine, at the service level."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.audit import history_of, verify_chain
from core.errors import Conflict
from core.extensions import db
from core.models import Role
from core.signals import products_changed
from core.timeutil import shanghai_today, utcnow
from shop import services
from shop.models import Order, OrderAllocation
from shop.sales import village_sales_fen
from shop.states import TRANSITIONS, OrderStatus, transition
from tests.certification.factories import certified_product
from tests.shop.helpers import SHIPPING, completed_event, deliver, place
from tests.traceability.factories import batch
from traceability.models import Batch


def _data(*lines, payment_method="stripe"):
    return {"lines": [{"product_id": p.id, "quantity": q} for p, q in lines], "payment_method": payment_method,
            "shipping": SHIPPING, "purchase_order_no": None, "invoice": None}


def _available(*batches) -> list[int]:
    db.session.expire_all()
    return [db.session.get(Batch, b.id).available_quantity for b in batches]


def test_allocation_takes_oldest_batches_first_and_skips_expired_ones(make):
    today = shanghai_today()
    home, other = make.village("古丈县"), make.village("花垣县")
    tea = certified_product(make, villages=[home, other])
    expired = batch(tea, quantity=50, village=home, produced_on=today - timedelta(days=90),
                    expires_on=today - timedelta(days=1))
    oldest = batch(tea, quantity=3, village=other, produced_on=today - timedelta(days=60))
    middle = batch(tea, quantity=4, village=home, produced_on=today - timedelta(days=30),
                   expires_on=today)  # expires today: still sellable
    newest = batch(tea, quantity=10, village=other, produced_on=today - timedelta(days=5))
    order, created = services.place_order(make.user(), _data((tea, 9)))
    assert created
    takes = [(a.batch_id, a.village_id, a.quantity) for a in order.allocations]
    assert takes == [(oldest.id, other.id, 3), (middle.id, home.id, 4), (newest.id, other.id, 2)]
    assert _available(expired, oldest, middle, newest) == [50, 0, 0, 8]
    assert sum(a.amount_fen for a in order.allocations) == order.total_fen


def test_expired_batches_do_not_count_as_stock(make):
    today = shanghai_today()
    tea = certified_product(make)
    batch(tea, quantity=50, expires_on=today - timedelta(days=1))
    batch(tea, quantity=2)
    with pytest.raises(Conflict) as error:
        services.place_order(make.user(), _data((tea, 3)))
    assert error.value.code == "insufficient_stock"


def test_selling_out_and_releasing_announce_the_stock_change_but_other_sales_do_not(make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    seen = []

    def receiver(sender, product_ids):
        seen.append(product_ids)

    products_changed.connect(receiver)
    try:
        buyer = make.user()
        services.place_order(buyer, _data((tea, 2)))
        assert seen == [], "units left: listings read live stock, nothing to re-index"
        last, _ = services.place_order(buyer, _data((tea, 3)))
        assert seen == [[tea.id]], "sold out"
        services.cancel_order(buyer, last.id)
    finally:
        products_changed.disconnect(receiver)
    assert seen == [[tea.id], [tea.id]]


def test_reservation_expiry_releases_stock_exactly_once(make):
    tea = certified_product(make)
    stock = batch(tea, quantity=10)
    order, _ = services.place_order(make.user(), _data((tea, 6)))
    assert services.expire_stale_reservations() == 0
    later = utcnow() + timedelta(minutes=31)  # default reservation: 30 minutes
    assert services.expire_stale_reservations(now=later) == 1
    assert services.expire_stale_reservations(now=later) == 0
    assert _available(stock) == [10]
    db.session.expire_all()
    order = db.session.get(Order, order.id)
    assert order.status == "cancelled" and order.cancel_reason
    assert all(a.released_at is not None for a in order.allocations)
    assert [e.action for e in history_of("order", order.id)] == ["placed", "expired"]


def test_lazy_expiry_when_the_order_is_looked_at(client, make):
    tea = certified_product(make)
    stock = batch(tea, quantity=10)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 4))
    db.session.execute(sa.update(Order).values(reserved_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    body = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(buyer)).get_json()
    assert body["status"] == "cancelled"
    assert _available(stock) == [10]


def test_lazy_expiry_frees_stock_for_the_next_buyer(client, make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    place(client, make, make.user(), (tea, 5))
    place(client, make, make.user(), (tea, 1), status=409)
    db.session.execute(sa.update(Order).values(reserved_until=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    place(client, make, make.user(), (tea, 5))


def test_cli_expires_lapsed_reservations(runner, make):
    tea = certified_product(make)
    stock = batch(tea, quantity=10)
    services.place_order(make.user(), _data((tea, 3)))
    db.session.execute(sa.update(Order).values(reserved_until=utcnow() - timedelta(minutes=1)))
    db.session.commit()
    result = runner.invoke(args=["orders", "expire"])
    assert result.exit_code == 0 and "1" in result.output
    assert _available(stock) == [10]


def test_stripe_orders_get_a_grace_period_before_local_expiry(make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    order, _ = services.place_order(make.user(), _data((tea, 1)))
    db.session.execute(sa.update(Order).values(payment_provider="stripe",
                                               reserved_until=utcnow() - timedelta(minutes=2)))
    db.session.commit()
    assert services.expire_stale_reservations() == 0
    assert services.expire_stale_reservations(now=utcnow() + timedelta(minutes=11)) == 1


@pytest.mark.parametrize("amount, remaining, expected", [
    (100, [(1, 300), (2, 300), (3, 300)], {1: 34, 2: 33, 3: 33}),
    (1, [(1, 500), (2, 500)], {1: 1}),
    (999, [(1, 1), (2, 998)], {1: 1, 2: 998}),
    (10, [(7, 3), (8, 3), (9, 4)], {7: 3, 8: 3, 9: 4}),
    (5, [(1, 0), (2, 10)], {2: 5}),
    # Equal remainders: the leftover fen goes to the lowest allocation id.
    (5, [(5, 2), (6, 2), (4, 2)], {4: 2, 5: 2, 6: 1}),
])
def test_refund_split_is_proportional_exact_and_deterministic(amount, remaining, expected):
    parts = services.split_refund(amount, remaining)
    assert sum(parts.values()) == amount
    assert all(parts[a] <= value for a, value in remaining if a in parts)
    assert parts == expected


def test_refund_split_never_exceeds_any_allocation():
    import random

    rng = random.Random(7)
    for _ in range(500):
        remaining = [(i, rng.randint(0, 5_000)) for i in range(1, rng.randint(2, 7))]
        total = sum(v for _, v in remaining)
        if not total:
            continue
        amount = rng.randint(1, total)
        parts = services.split_refund(amount, remaining)
        assert sum(parts.values()) == amount
        assert all(0 < parts[a] <= v for a, v in remaining if a in parts)


def test_refund_leaves_village_sales_exact_to_the_fen(client, make):
    home, other = make.village("古丈县"), make.village("花垣县")
    tea = certified_product(make, price_fen=333, villages=[home, other])
    first = batch(tea, quantity=1, village=home, produced_on=shanghai_today() - timedelta(days=9))
    batch(tea, quantity=5, village=other, produced_on=shanghai_today() - timedelta(days=3))
    order = place(client, make, make.user(), (tea, 3))  # 1 from home, 2 from other: 333 + 666
    deliver(client, completed_event(order))
    year = shanghai_today().year
    finance = make.headers(make.user(Role.FINANCE))
    client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 100, "reason": "部分退款"}, headers=finance)
    # 100 × 333/999 = 33.33 → 33; 100 × 666/999 = 66.67 → 66 + the leftover fen (larger remainder).
    assert village_sales_fen(home.id, year) == 300
    assert village_sales_fen(other.id, year) == 599
    client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 899, "reason": "全部退款"}, headers=finance)
    assert village_sales_fen(home.id, year) == 0 and village_sales_fen(other.id, year) == 0
    assert first.village_id == home.id


def test_state_machine_refuses_moves_it_does_not_allow(make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    order, _ = services.place_order(make.user(), _data((tea, 1)))
    with pytest.raises(Conflict):
        transition(order, OrderStatus.SHIPPED, action="shipped")
    db.session.rollback()
    assert TRANSITIONS[OrderStatus.CANCELLED] == frozenset() and TRANSITIONS[OrderStatus.REFUNDED] == frozenset()
    assert all(status in TRANSITIONS for status in OrderStatus)


def test_audit_chain_stays_intact_through_an_order_life(client, make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 2))
    deliver(client, completed_event(order))
    client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 10, "reason": "差价"},
                headers=make.headers(make.user(Role.FINANCE)))
    assert verify_chain().ok


def test_auto_complete_finishes_long_shipped_orders(client, make, runner):
    tea = certified_product(make)
    batch(tea, quantity=5)
    order = place(client, make, make.user(), (tea, 1))
    deliver(client, completed_event(order))
    coop = make.user(Role.COOPERATIVE, cooperative=tea.cooperative)
    client.post(f"/api/v1/orders/{order['id']}/ship", json={"carrier": "顺丰", "tracking_number": "SF000111222"},
                headers=make.headers(coop))
    assert services.auto_complete_shipped() == 0
    assert services.auto_complete_shipped(now=utcnow() + timedelta(days=16)) == 1
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).status == "completed"


def test_allocations_record_the_channel_for_reports(client, make):
    tea = certified_product(make, bulk_moq=2)
    batch(tea, quantity=50)
    canteen = place(client, make, make.user(Role.CANTEEN_BUYER), (tea, 2), payment_method="bank_transfer")
    online = place(client, make, make.user(), (tea, 1))
    channels = dict(db.session.execute(sa.select(OrderAllocation.order_id, OrderAllocation.channel)).all())
    assert channels == {canteen["id"]: "canteen", online["id"]: "online"}


def test_a_placed_order_is_what_loading_its_rows_gives_and_leaves_nothing_to_flush(make):
    """Placement writes its rows with Core and hands back objects built from the same values
    (``_as_loaded``): they must equal a fresh load column for column, carry their relations
    without another query, and leave the session with nothing to write back."""
    tea = certified_product(make)
    honey = certified_product(make, cooperative=make.cooperative(make.village("花垣县")))
    batch(tea, quantity=2, produced_on=shanghai_today() - timedelta(days=9))  # oldest: taken first
    batch(tea, quantity=9, produced_on=shanghai_today() - timedelta(days=1))
    batch(honey, quantity=5)
    order, created = services.place_order(make.user(), _data((tea, 4), (honey, 1)))
    assert created
    assert not db.session.new and not db.session.dirty
    # Its audit event was written with Core and is still sealed into the chain after the commit.
    [placed_event] = history_of("order", order.id)
    assert placed_event.action == "placed" and placed_event.sealed and verify_chain().ok

    statements = []

    def record(connection, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        placed = {
            "order": {c.key: getattr(order, c.key) for c in Order.__table__.columns},
            "lines": [(line.id, line.product_id, line.quantity, line.unit_price_fen, [a.id for a in line.allocations])
                      for line in order.lines],
            "fulfilments": [(f.id, f.cooperative_id, f.status) for f in order.fulfilments],
            "allocations": [(a.id, a.batch_id, a.quantity, a.amount_fen, a.line.id, a.order.id)
                            for a in order.allocations],
        }
        db.session.commit()  # nothing pending: no UPDATE may go out
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert statements == [], statements

    order_id = order.id
    db.session.expunge_all()
    fresh = db.session.get(Order, order_id)
    assert placed == {
        "order": {c.key: getattr(fresh, c.key) for c in Order.__table__.columns},
        "lines": [(line.id, line.product_id, line.quantity, line.unit_price_fen, [a.id for a in line.allocations])
                  for line in fresh.lines],
        "fulfilments": [(f.id, f.cooperative_id, f.status) for f in fresh.fulfilments],
        "allocations": [(a.id, a.batch_id, a.quantity, a.amount_fen, a.line.id, a.order.id) for a in fresh.allocations],
    }
    assert [len(line.allocations) for line in fresh.lines] == [2, 1]
    assert fresh.number.startswith("XB") and fresh.number.endswith(f"-{order_id:06d}")
