"""Demo orders through the real shop code, along the demo's timeline.

Online orders are paid in the simulated checkout (the signed webhook path) over the last twelve
months, one of them in this month's days so far. Each is shipped the day after payment and
received four days after it when those days have come (one was partly refunded after it arrived
damaged), so the latest two are one on its way and one still to ship. A canteen order was paid by bank transfer
(finance confirmed it two days after it was placed, this year, so this year's canteen report has
a purchase even in January) and received; another, placed a few hours ago, awaits its transfer.
Finance issues each month's settlement statements (结算单) on the 5th of the next month and pays
them on the 10th; the latest statement issued may still await payment.

Each order takes only stock produced before its day (see ``stock_produced_before``).
"""
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa

from certification.gate import is_sellable, sellable_clause
from certification.models import Product
from core.demo import DemoTimeline
from core.extensions import db
from core.models import User
from core.timeutil import to_shanghai
from core.errors import Conflict
from shop import inspection, payments, ratings, services, settlements
from shop.models import Order, SettlementStatement
from traceability.demo import stock_produced_before

# (months ago, day of the month) of the online orders paid in earlier months, at 10:00 and later.
MONTHLY_ORDERS = ((11, 6), (9, 17), (8, 23), (6, 12), (5, 9), (3, 20), (2, 14), (1, 8))
# Besides those: one this month (this fraction of its days so far) and two in the last hours.
THIS_MONTH_FRACTION = 0.4
RECENT_HOURS_AGO = (50, 4)
# Units of the first and of the second product (0: none) of each online order, oldest first.
ORDER_UNITS = ((2, 0), (1, 1), (3, 0), (2, 1), (1, 0), (2, 2), (1, 0), (2, 1), (1, 0), (2, 0), (1, 1))
# Which online order (oldest first) was partly refunded after it arrived.
REFUNDED_ORDER = 2
SHIPPED_AFTER = timedelta(hours=22)
RECEIVED_AFTER = timedelta(days=4, hours=3)
REFUNDED_AFTER = timedelta(days=5, hours=2)
# The canteen's transfer arrives this long after its order; the paid one is confirmed this far
# into this year's days so far.
TRANSFER_TAKES = timedelta(days=2)
CANTEEN_PAID_FRACTION = 0.5
PENDING_CANTEEN_HOURS_AGO = 3
# A month's settlement statements are issued on this day of the next month at 10:00 and paid on
# this one at 15:00 (statements of the last SETTLED_MONTHS months).
STATEMENT_ISSUE_DAY, STATEMENT_PAY_DAY = 5, 10
SETTLED_MONTHS = 11
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


def _shipping(index: int) -> dict:
    """One of the demo shipping addresses."""
    name, phone, address = ADDRESSES[index % len(ADDRESSES)]
    return {"name": name, "phone": phone, "address": address}


def online_payment_times(timeline: DemoTimeline) -> list[datetime]:
    """When each demo online order is placed and paid, oldest first (``ORDER_UNITS`` long)."""
    monthly = [timeline.moment(timeline.month_start(months_ago).replace(day=day), 10 + index % 9, 5 * index)
               for index, (months_ago, day) in enumerate(MONTHLY_ORDERS)]
    this_month = timeline.so_far(timeline.moment(timeline.month_start(0), 0), THIS_MONTH_FRACTION)
    recent = [timeline.now - timedelta(hours=hours) for hours in RECENT_HOURS_AGO]
    return sorted([*monthly, this_month, *recent])


def _stock_on(products: list[Product], moment: datetime) -> dict[int, int]:
    """Units per product sellable on ``moment``'s day, from batches produced before that day."""
    day = to_shanghai(moment).date()
    stock = stock_produced_before([p.id for p in products], day)
    return {p.id: stock[p.id] for p in products if is_sellable(p, day)}


class _OrderStory:
    """The demo's orders as steps on the timeline: what is bought when, and what follows each payment."""

    def __init__(self, timeline: DemoTimeline, products: list[Product], consumer: User, canteen: User,
                 finance: User, admin: User):
        """Start with no steps and no orders."""
        self.timeline, self.products = timeline, products
        self.consumer, self.canteen, self.finance, self.admin = consumer, canteen, finance, admin
        self.steps: list[tuple[datetime, partial]] = []
        self.orders: dict[str, int] = {}  # a planned order's name → the order made, once made
        self.statements: list[int] = []  # settlement statements issued, in order

    def plan_online(self) -> None:
        """Online orders over the last twelve months, each followed by what was due by now."""
        for index, moment in enumerate(online_payment_times(self.timeline)):
            self.steps.append((moment, partial(self.sell_online, index, moment)))
            self.plan_follow_up(f"online-{index}", self.consumer, moment, refund=index == REFUNDED_ORDER)

    def plan_canteen(self) -> None:
        """The canteen's order paid this year (and received if due) and the one awaiting its transfer."""
        paid = self.timeline.so_far(self.timeline.year_start, CANTEEN_PAID_FRACTION)
        placed = paid - TRANSFER_TAKES
        self.steps.append((placed, partial(self.order_for_canteen, "canteen", placed, False)))
        self.steps.append((paid, partial(self.confirm_transfer, "canteen", paid)))
        self.plan_follow_up("canteen", self.canteen, paid)
        pending = self.timeline.now - timedelta(hours=PENDING_CANTEEN_HOURS_AGO)
        self.steps.append((pending, partial(self.order_for_canteen, "canteen-pending", pending, True)))

    def plan_settlements(self) -> None:
        """Each past month's statements, issued early in the next month and paid a few days later."""
        for months_ago in range(SETTLED_MONTHS, 0, -1):
            month = self.timeline.month_start(months_ago)
            next_month = self.timeline.month_start(months_ago - 1)
            issue = self.timeline.moment(next_month.replace(day=STATEMENT_ISSUE_DAY), 10)
            pay = self.timeline.moment(next_month.replace(day=STATEMENT_PAY_DAY), 15)
            period = f"{month:%Y-%m}"
            if issue <= self.timeline.now:
                self.steps.append((issue, partial(self.issue_statements, period)))
            if pay <= self.timeline.now:
                self.steps.append((pay, partial(self.pay_statements, period, pay)))

    def plan_follow_up(self, name: str, buyer: User, paid: datetime, refund: bool = False) -> None:
        """Plan what follows the payment of order ``name`` and is due by now: shipment, receipt, a refund."""
        due = [(SHIPPED_AFTER, self.ship), (RECEIVED_AFTER, partial(self.receive, buyer))]
        if refund:
            due.append((REFUNDED_AFTER, self.refund_part))
        for after, step in due:
            if paid + after <= self.timeline.now:
                self.steps.append((paid + after, partial(step, name)))

    # ---- the steps (each runs at its moment; a step whose order was never made does nothing)

    def sell_online(self, index: int, moment: datetime) -> None:
        """Online order ``index``: placed and paid in the simulated checkout at ``moment``."""
        first_qty, second_qty = ORDER_UNITS[index]
        stock = _stock_on(self.products, moment)
        firsts = [p for p in self.products if stock.get(p.id, 0) >= first_qty]
        if not firsts:
            return
        first = firsts[index % len(firsts)]
        wanted = {first.id: first_qty}
        seconds = [p for p in self.products if second_qty and p.id != first.id and stock.get(p.id, 0) >= second_qty]
        if seconds:
            wanted[seconds[index % len(seconds)].id] = second_qty
        order, _ = services.place_order(self.consumer, {
            "lines": [{"product_id": pid, "quantity": qty} for pid, qty in wanted.items()],
            "payment_method": "stripe", "shipping": _shipping(index)})
        services.pay_in_sandbox(self.consumer, order.checkout_session_id)
        self.orders[f"online-{index}"] = order.id

    def order_for_canteen(self, name: str, moment: datetime, pick_last: bool) -> None:
        """A canteen order of one bulk product at its minimum quantity, by 对公转账."""
        stock = _stock_on(self.products, moment)
        bulk = [p for p in self.products if p.bulk_moq and stock.get(p.id, 0) >= p.bulk_moq]
        if not bulk:
            return
        product = bulk[-1] if pick_last else bulk[0]
        order, _ = services.place_order(self.canteen, {
            "lines": [{"product_id": product.id, "quantity": product.bulk_moq}], "payment_method": "bank_transfer",
            "shipping": dict(zip(("name", "phone", "address"), CANTEEN_SHIPPING)),
            "purchase_order_no": f"XZJG-{to_shanghai(moment):%Y-%m%d}", "invoice": CANTEEN_INVOICE})
        self.orders[name] = order.id

    def confirm_transfer(self, name: str, moment: datetime) -> None:
        """Finance confirms the canteen's transfer for order ``name``."""
        if name in self.orders:
            order = db.session.get(Order, self.orders[name])
            services.confirm_transfer(self.finance, order.id, {
                "amount_fen": order.total_fen, "reference": f"HX{to_shanghai(moment):%Y%m%d}-0088"})

    def ship(self, name: str) -> None:
        """Every cooperative of order ``name`` ships its part."""
        if name in self.orders:
            order = db.session.get(Order, self.orders[name])
            for cooperative_id in [f.cooperative_id for f in order.fulfilments]:
                services.ship_part(self.admin, order.id, {"carrier": "顺丰速运", "tracking_number": f"SF7{order.id:09d}",
                                                          "cooperative_id": cooperative_id})

    def receive(self, buyer: User, name: str) -> None:
        """The buyer confirms receipt of order ``name``; a canteen inspects it (验货, all there) and
        rates its suppliers (履约评价)."""
        if name not in self.orders:
            return
        order = db.session.get(Order, self.orders[name])
        if order.channel != "canteen":
            services.confirm_receipt(buyer, order.id)
            return
        inspection.record_inspection(buyer, order.id, {"note": "", "lines": [
            {"product_id": line.product_id, "received_quantity": line.quantity, "rejected_quantity": 0, "note": ""}
            for line in order.lines]})
        for cooperative_id in sorted({line.cooperative_id for line in order.lines}):
            ratings.rate_cooperative(buyer, order.id, {"cooperative_id": cooperative_id, "quality": 5, "delivery": 4,
                                                       "service": 5, "comment": "货品新鲜，按约定日期送达"})

    def refund_part(self, name: str) -> None:
        """Finance refunds a third of order ``name`` after one item arrived damaged."""
        if name in self.orders:
            order = db.session.get(Order, self.orders[name])
            services.refund_order(self.finance, order.id, {"amount_fen": order.total_fen // 3,
                                                           "reason": "到货一件包装破损，协商部分退款"})

    def issue_statements(self, period: str) -> None:
        """Finance issues the statements of ``period`` (nothing when no cooperative sold anything)."""
        try:
            self.statements.extend(s.id for s in settlements.issue_statements(self.finance, period))
        except Conflict:
            pass

    def pay_statements(self, period: str, moment: datetime) -> None:
        """Finance records the bank transfers that paid ``period``'s statements (none for a
        statement of net zero or less: nothing to pay)."""
        for statement_id in self.statements:
            statement = db.session.get(SettlementStatement, statement_id)
            if statement.period == period and statement.status == "issued" and statement.net_fen > 0:
                settlements.pay_statement(self.finance, statement_id, {
                    "bank_reference": f"JS{to_shanghai(moment):%Y%m%d}-{statement_id:04d}"})

    def report(self) -> list[str]:
        """What was made, line by line."""
        lines = []
        online = [db.session.get(Order, order_id) for name, order_id in self.orders.items()
                  if name.startswith("online-")]
        if online:
            statuses = [order.status for order in online]
            first, last = min(o.paid_at for o in online), max(o.paid_at for o in online)
            lines.append(f"已创建 {len(online)} 笔在线订单（模拟支付，{to_shanghai(first):%Y-%m-%d} 至 "
                         f"{to_shanghai(last):%Y-%m-%d}），其中 {statuses.count('completed')} 笔已确认收货、"
                         f"{statuses.count('partially_refunded')} 笔部分退款、{statuses.count('shipped')} 笔运输中、"
                         f"{statuses.count('paid')} 笔待发货。")
        if "canteen" in self.orders:
            order = db.session.get(Order, self.orders["canteen"])
            line = order.lines[0]
            lines.append(f"已创建 1 笔机关食堂订单（{line.product_name} {line.quantity}{line.unit}，对公转账，"
                         f"财务于 {to_shanghai(order.paid_at):%Y-%m-%d} 确认到账"
                         f"{'，已验货并完成履约评价' if order.completed_at else ''}）。")
        if "canteen-pending" in self.orders:
            lines.append("另有 1 笔机关食堂订单待财务确认对公转账（见“收款与退款”）。")
        if self.statements:
            paid = sum(db.session.get(SettlementStatement, i).status == "paid" for i in self.statements)
            lines.append(f"财务已出具 {len(self.statements)} 份合作社月度结算单，其中 {paid} 份已付款"
                         f"{'，其余待付款' if paid < len(self.statements) else ''}（见“合作社结算单”）。")
        return lines


def load(timeline: DemoTimeline | None = None) -> list[str]:
    """Create the demo orders once, along ``timeline``; report what was done."""
    timeline = timeline or DemoTimeline.ending_today()
    consumer, canteen = _user("consumer@xiangban.test"), _user("canteen@xiangban.test")
    finance, admin = _user("finance@xiangban.test"), _user("admin@xiangban.test")
    if None in (consumer, canteen, finance, admin):
        return ["演示账号缺失，未加载演示订单。"]
    if db.session.scalar(sa.select(sa.func.count(Order.id))):
        return ["已有订单，未重复加载演示订单。"]
    products = list(db.session.scalars(
        sa.select(Product).where(sellable_clause(timeline.today)).order_by(Product.id)))
    if not any(_stock_on(products, timeline.now).values()):
        return ["没有可售库存（需先有认定产品和批次），未创建演示订单。"]
    story = _OrderStory(timeline, products, consumer, canteen, finance, admin)
    lines = []
    if payments.stripe_enabled():
        lines.append("已配置 STRIPE_SECRET_KEY：跳过演示在线订单，以免在 Stripe 上创建支付会话。")
    elif not payments.sandbox_enabled():
        lines.append("未开启模拟支付（SANDBOX_PAYMENTS=1）：跳过演示在线订单。")
    else:
        story.plan_online()
    story.plan_canteen()
    story.plan_settlements()
    timeline.run(story.steps)
    return lines + story.report()
