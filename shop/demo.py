"""Demo orders through the real shop code: online orders paid in the simulated checkout (the
signed webhook path), a canteen order paid by bank transfer and confirmed by finance, one
shipped and received, one partly refunded, and one canteen order still awaiting its transfer.

Orders are placed today but their payment times are moved back over the months of 2026 (the
one thing the real flows cannot do), so the village sales reports have a year to show.
"""
from datetime import datetime

import sqlalchemy as sa

from certification.gate import sellable_clause
from certification.models import Product
from core.extensions import db
from core.models import User
from core.timeutil import SHANGHAI
from shop import payments, services
from shop.models import Order, OrderAllocation
from traceability.services import available_quantities

# (Shanghai month of payment in 2026, units of the 1st product, units of the 2nd or 0)
ONLINE_ORDERS = ((2, 2, 0), (4, 1, 1), (6, 3, 0), (8, 2, 1), (9, 1, 0), (10, 2, 2), (11, 1, 0))
ADDRESSES = (
    ("李小花", "13807430001", "湖南省长沙市岳麓区麓山南路 932 号"),
    ("王建国", "13807430002", "山东省济南市历下区泉城路 180 号"),
    ("张敏", "13807430003", "湖南省吉首市人民北路 18 号"),
)
CANTEEN_SHIPPING = ("州机关食堂 王主任", "0743-8222001", "湖南省吉首市世纪大道 1 号 州机关事务服务中心职工食堂")
CANTEEN_INVOICE = {"title": "湘西州机关事务服务中心", "tax_id": "11433100MB1527436X"}


def _user(email: str) -> User | None:
    """A demo account by email, or None."""
    return db.session.scalar(sa.select(User).where(User.email == email))


def _backdate(order_id: int, paid_at: datetime) -> None:
    """Move an order's placement and payment to ``paid_at`` (demo only: reports need a year)."""
    moment = paid_at.astimezone(SHANGHAI)
    db.session.execute(sa.update(Order).where(Order.id == order_id).values(
        number=f"XB{moment:%Y%m%d}-{order_id:06d}", created_at=moment, reserved_until=moment, paid_at=moment))
    db.session.execute(sa.update(OrderAllocation).where(OrderAllocation.order_id == order_id).values(paid_at=moment))
    db.session.commit()


def _month(month: int, day: int = 15, hour: int = 10) -> datetime:
    """A Shanghai moment in 2026."""
    return datetime(2026, month, day, hour, 0, tzinfo=SHANGHAI)


def _shipping(index: int) -> dict:
    """One of the demo shipping addresses."""
    name, phone, address = ADDRESSES[index % len(ADDRESSES)]
    return {"name": name, "phone": phone, "address": address}


def load() -> list[str]:
    """Create the demo orders once; report what was done."""
    consumer, canteen = _user("consumer@xiangban.test"), _user("canteen@xiangban.test")
    finance, admin = _user("finance@xiangban.test"), _user("admin@xiangban.test")
    if None in (consumer, canteen, finance, admin):
        return ["演示账号缺失，未加载演示订单。"]
    if db.session.scalar(sa.select(sa.func.count(Order.id))):
        return ["已有订单，未重复加载演示订单。"]
    products = list(db.session.scalars(sa.select(Product).where(sellable_clause()).order_by(Product.id)))
    stock = available_quantities([p.id for p in products])
    stocked = [p for p in products if stock[p.id] > 0]
    if not stocked:
        return ["没有可售库存（需先有认定产品和批次），未创建演示订单。"]
    lines = []
    paid = []
    if payments.stripe_enabled():
        lines.append("已配置 STRIPE_SECRET_KEY：跳过演示在线订单，以免在 Stripe 上创建支付会话。")
    else:
        for index, (month, first_qty, second_qty) in enumerate(ONLINE_ORDERS):
            first = stocked[index % len(stocked)]
            second = stocked[(index + 1) % len(stocked)]
            wanted = {first.id: first_qty}
            if second_qty and second.id != first.id:
                wanted[second.id] = second_qty
            if any(stock[pid] < qty for pid, qty in wanted.items()):
                continue
            order, _ = services.place_order(consumer, {
                "lines": [{"product_id": pid, "quantity": qty} for pid, qty in wanted.items()],
                "payment_method": "stripe", "shipping": _shipping(index)})
            for pid, qty in wanted.items():
                stock[pid] -= qty
            services.pay_in_sandbox(order.checkout_session_id)
            _backdate(order.id, _month(month))
            paid.append(order.id)
        if paid:
            oldest = db.session.get(Order, paid[0])
            for fulfilment in list(oldest.fulfilments):
                services.ship_part(admin, oldest.id, {"carrier": "顺丰速运", "tracking_number": f"SF7{oldest.id:09d}",
                                                      "cooperative_id": fulfilment.cooperative_id})
            services.confirm_receipt(consumer, oldest.id)
        if len(paid) > 2:
            refunded = db.session.get(Order, paid[2])
            services.refund_order(finance, refunded.id, {"amount_fen": refunded.total_fen // 3,
                                                         "reason": "到货一件包装破损，协商部分退款"})
        lines.append(f"已创建 {len(paid)} 笔在线订单（模拟支付，付款时间分布在 2026 年各月），"
                     "其中 1 笔已发货并确认收货、1 笔部分退款。")

    bulk = [p for p in stocked if p.bulk_moq and stock[p.id] >= p.bulk_moq]
    if bulk:
        product = bulk[0]
        quantity = product.bulk_moq
        order, _ = services.place_order(canteen, {
            "lines": [{"product_id": product.id, "quantity": quantity}], "payment_method": "bank_transfer",
            "shipping": dict(zip(("name", "phone", "address"), CANTEEN_SHIPPING)),
            "purchase_order_no": "XZJG-2026-0615", "invoice": CANTEEN_INVOICE})
        stock[product.id] -= quantity
        services.confirm_transfer(finance, order.id, {"amount_fen": order.total_fen, "reference": "HX20260620-0088"})
        _backdate(order.id, _month(6, 20, 15))
        lines.append(f"已创建 1 笔机关食堂订单（{product.name} {quantity}{product.unit}，对公转账，财务已确认到账）。")
        waiting = [p for p in bulk if stock[p.id] >= p.bulk_moq]
        if waiting:
            product = waiting[-1]
            services.place_order(canteen, {
                "lines": [{"product_id": product.id, "quantity": product.bulk_moq}], "payment_method": "bank_transfer",
                "shipping": dict(zip(("name", "phone", "address"), CANTEEN_SHIPPING)),
                "purchase_order_no": "XZJG-2026-1128", "invoice": CANTEEN_INVOICE})
            lines.append("另有 1 笔机关食堂订单待财务确认对公转账（见“收款与退款”）。")
    return lines
