"""The shop's demo orders go through the real services, spread payments over the last twelve months
(some always in this year), take only stock produced before them, and ship, receive and refund
after payment — never after now."""
from datetime import timedelta

import sqlalchemy as sa

from core.audit import verify_chain
from core.demo import DemoTimeline
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today, to_shanghai, utcnow
from shop import demo
from shop.models import Order, OrderAllocation, Refund
from shop.sales import village_sales_fen
from tests.certification.factories import certified_product
from tests.traceability.factories import batch
from traceability.models import Batch


def _demo_accounts(make):
    for email, role in (("consumer@xiangban.test", Role.CONSUMER), ("canteen@xiangban.test", Role.CANTEEN_BUYER),
                        ("finance@xiangban.test", Role.FINANCE), ("admin@xiangban.test", Role.ADMIN)):
        make.user(role, email=email)


def test_demo_orders_are_paid_over_the_last_twelve_months(make):
    _demo_accounts(make)
    today = shanghai_today()
    certified_on = today - timedelta(days=600)
    tea = certified_product(make, name="古丈毛尖", bulk_moq=20, valid_from=certified_on)
    kiwi = certified_product(make, name="十八洞猕猴桃", villages=[make.village("花垣县")], valid_from=certified_on)
    batch(tea, quantity=400, produced_on=today - timedelta(days=400))
    batch(kiwi, quantity=100, produced_on=today - timedelta(days=45))

    lines = demo.load()

    orders = db.session.scalars(sa.select(Order).order_by(Order.id)).all()
    statuses = [o.status for o in orders]
    assert statuses.count("completed") >= 1 and statuses.count("partially_refunded") == 1
    assert "shipped" in statuses and "paid" in statuses  # the latest: on its way, and still to ship
    assert statuses.count("pending_payment") == 1  # the canteen transfer finance has yet to confirm
    canteen_paid = [o for o in orders if o.channel == "canteen" and o.paid_at]
    assert len(canteen_paid) == 1 and canteen_paid[0].payment_reference
    assert to_shanghai(canteen_paid[0].paid_at).year == today.year
    online = [o for o in orders if o.channel == "online"]
    months = {(to_shanghai(o.paid_at).year, to_shanghai(o.paid_at).month) for o in online}
    first_month = DemoTimeline.ending_today().month_start(11)
    assert len(months) >= 6 and all(to_shanghai(o.paid_at).date() >= first_month for o in online)
    assert all(o.number.startswith(f"XB{to_shanghai(o.created_at):%Y%m%d}") for o in orders)
    assert village_sales_fen(tea.villages[0].id, today.year) > 0  # this year's canteen order, at least
    assert lines and demo.load() == ["已有订单，未重复加载演示订单。"]


def test_demo_orders_take_stock_produced_before_them_and_follow_payment(make):
    _demo_accounts(make)
    today = shanghai_today()
    tea = certified_product(make, name="古丈毛尖", bulk_moq=20, valid_from=today - timedelta(days=600))
    kiwi = certified_product(make, name="十八洞猕猴桃", villages=[make.village("花垣县")],
                             valid_from=today - timedelta(days=600))
    batch(tea, quantity=400, produced_on=today - timedelta(days=400))
    kiwi_batch = batch(kiwi, quantity=100, produced_on=today - timedelta(days=45))

    demo.load()

    now = utcnow()
    kiwi_sold = []
    for order in db.session.scalars(sa.select(Order).where(Order.paid_at.isnot(None))):
        assert order.created_at <= order.paid_at <= now
        for allocation in db.session.scalars(sa.select(OrderAllocation).where(OrderAllocation.order_id == order.id)):
            assert db.session.get(Batch, allocation.batch_id).produced_on < to_shanghai(order.paid_at).date()
            if allocation.batch_id == kiwi_batch.id:
                kiwi_sold.append(order)
        for fulfilment in order.fulfilments:
            assert fulfilment.shipped_at is None or order.paid_at < fulfilment.shipped_at <= now
        assert order.completed_at is None or order.shipped_at < order.completed_at <= now
        for refund in db.session.scalars(sa.select(Refund).where(Refund.order_id == order.id)):
            # Refunded after the damaged parcel arrived.
            assert order.completed_at < refund.created_at <= now
    assert kiwi_sold  # sold once it had been harvested, never before
    assert max(o.created_at for o in db.session.scalars(sa.select(Order))) <= now
    assert verify_chain().ok


def test_demo_without_stock_says_so(make):
    _demo_accounts(make)
    assert "没有可售库存" in demo.load()[0]


def test_demo_statements_are_issued_after_their_month_and_paid_after_issue_never_in_the_future(make, runner):
    from core.timeutil import shanghai_month_bounds
    from shop.models import SettlementStatement

    _demo_accounts(make)
    today = shanghai_today()
    tea = certified_product(make, name="古丈毛尖", bulk_moq=20, valid_from=today - timedelta(days=600))
    batch(tea, quantity=400, produced_on=today - timedelta(days=400))

    demo.load()

    statements = db.session.scalars(sa.select(SettlementStatement).order_by(SettlementStatement.id)).all()
    assert len(statements) >= 5
    now = utcnow()
    for statement in statements:
        year, month = map(int, statement.period.split("-"))
        _, period_end = shanghai_month_bounds(year, month)
        assert period_end <= statement.issued_at <= now
        if statement.status == "paid":
            assert statement.issued_at <= statement.paid_at <= now and statement.bank_reference
    assert any(s.status == "paid" for s in statements)
    assert verify_chain().ok
    result = runner.invoke(args=["reports", "reconcile", "--year", str(today.year)])
    assert result.exit_code == 0, result.output
