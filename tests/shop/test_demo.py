"""The shop's demo orders go through the real services and spread payments over 2026."""
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from shop import demo
from shop.models import Order
from shop.sales import village_sales_fen
from tests.certification.factories import certified_product
from tests.traceability.factories import batch


def test_demo_orders_are_paid_over_the_months_of_2026(make):
    for email, role in (("consumer@xiangban.test", Role.CONSUMER), ("canteen@xiangban.test", Role.CANTEEN_BUYER),
                        ("finance@xiangban.test", Role.FINANCE), ("admin@xiangban.test", Role.ADMIN)):
        make.user(role, email=email)
    tea = certified_product(make, name="古丈毛尖", bulk_moq=20)
    kiwi = certified_product(make, name="十八洞猕猴桃", villages=[make.village("花垣县")])
    batch(tea, quantity=200)
    batch(kiwi, quantity=100)

    lines = demo.load()

    orders = db.session.scalars(sa.select(Order).order_by(Order.id)).all()
    statuses = [o.status for o in orders]
    assert statuses.count("completed") == 1 and statuses.count("partially_refunded") == 1
    assert statuses.count("pending_payment") == 1  # the canteen transfer finance has yet to confirm
    canteen_paid = [o for o in orders if o.channel == "canteen" and o.paid_at]
    assert len(canteen_paid) == 1 and canteen_paid[0].payment_reference
    months = {o.paid_at.astimezone(demo.SHANGHAI).month for o in orders if o.paid_at}
    assert len(months) >= 6 and all(o.paid_at.year == 2026 for o in orders if o.paid_at)
    assert all(o.number.startswith(f"XB{o.created_at.astimezone(demo.SHANGHAI):%Y%m%d}") for o in orders)
    assert village_sales_fen(tea.villages[0].id, 2026) > 0 and village_sales_fen(kiwi.villages[0].id, 2026) > 0
    assert lines and demo.load() == ["已有订单，未重复加载演示订单。"]


def test_demo_without_stock_says_so(make):
    for email, role in (("consumer@xiangban.test", Role.CONSUMER), ("canteen@xiangban.test", Role.CANTEEN_BUYER),
                        ("finance@xiangban.test", Role.FINANCE), ("admin@xiangban.test", Role.ADMIN)):
        make.user(role, email=email)
    assert "没有可售库存" in demo.load()[0]
