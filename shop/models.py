"""Orders, their lines, per-batch stock allocations, per-cooperative fulfilment, refunds,
processed payment events and signed-in users' carts.

How a sale is counted (reports build on this): every unit of an order line is allocated to
one batch, and each ``OrderAllocation`` row carries that batch's village, the goods value of
its units (``amount_fen`` = unit price × quantity, exact), how much of it was refunded
(``refunded_fen``), the order's channel and, once the order is paid, the payment time
(``paid_at``, UTC). So a village's sales in a Shanghai year are

    SUM(amount_fen - refunded_fen) WHERE village_id = ? AND paid_at in the year's UTC bounds

over one indexed table (see ``shop/sales.py``); ``paid_at`` is NULL for unpaid or cancelled orders.
"""
import sqlalchemy as sa

from core.extensions import db
from core.timeutil import UTCDateTime, utcnow
from shop.states import ORDER_STATUS_VALUES, OrderStatus

CHANNELS = ("online", "canteen")
CHANNEL_LABELS = {"online": "线上零售", "canteen": "机关食堂"}
PAYMENT_METHODS = ("stripe", "bank_transfer")
PAYMENT_METHOD_LABELS = {"stripe": "在线支付", "bank_transfer": "对公转账"}
#: Who actually moved the money: real Stripe, the offline simulated checkout, or a bank.
PAYMENT_PROVIDERS = ("stripe", "sandbox", "bank_transfer")
FULFILMENT_STATUSES = ("pending", "shipped", "received", "cancelled")
FULFILMENT_LABELS = {"pending": "待发货", "shipped": "已发货", "received": "已收货", "cancelled": "已取消"}
#: A canteen order above its budget unit's threshold waits for the unit's approver (内部审批).
APPROVAL_STATUSES = ("pending", "approved", "rejected")
APPROVAL_LABELS = {"pending": "待内部审批", "approved": "内部审批已通过", "rejected": "内部审批未通过"}
REFUND_REQUEST_STATUSES = ("open", "refunded", "declined")
REFUND_REQUEST_LABELS = {"open": "待财务处理", "refunded": "已退款", "declined": "不予退款"}


def _in(column: str, values) -> str:
    """A CHECK clause restricting ``column`` to ``values`` (same SQL on both databases)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Order(db.Model):
    """One purchase by one buyer, paid once, possibly spanning several cooperatives."""

    __tablename__ = "orders"
    __table_args__ = (
        sa.CheckConstraint(_in("status", ORDER_STATUS_VALUES), name="status_known"),
        sa.CheckConstraint(_in("channel", CHANNELS), name="channel_known"),
        sa.CheckConstraint(_in("payment_method", PAYMENT_METHODS), name="payment_method_known"),
        sa.CheckConstraint("total_fen > 0", name="total_positive"),
        sa.CheckConstraint("refunded_fen >= 0 AND refunded_fen <= total_fen", name="refund_in_range"),
        sa.CheckConstraint("refund_reserved_fen >= 0 AND refunded_fen + refund_reserved_fen <= total_fen",
                           name="refund_reserved_in_range"),
        sa.CheckConstraint("approval_status IS NULL OR " + _in("approval_status", APPROVAL_STATUSES),
                           name="approval_status_known"),
        sa.UniqueConstraint("buyer_id", "idempotency_key", name="uq_orders_buyer_idempotency_key"),
        # Reservation expiry scans pending orders by deadline.
        sa.Index("ix_orders_status_reserved_until", "status", "reserved_until"),
        sa.Index("ix_orders_buyer_id_id", "buyer_id", "id"),
        # Canteen purchases per budget unit and year (reserved share).
        sa.Index("ix_orders_budget_unit_paid_at", "budget_unit_id", "paid_at"),
        sa.Index("ix_orders_paid_at", "paid_at"),
    )

    id = db.Column(db.Integer, primary_key=True)
    number = db.Column(db.String(32), nullable=False, unique=True)
    buyer_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    # Set for canteen orders: the budget unit whose reserved share the purchase counts toward.
    budget_unit_id = db.Column(db.Integer, db.ForeignKey("budget_units.id"), nullable=True)
    channel = db.Column(db.String(20), nullable=False)
    status = db.Column(db.String(24), nullable=False, default=OrderStatus.PENDING_PAYMENT.value)
    payment_method = db.Column(db.String(20), nullable=False)
    payment_provider = db.Column(db.String(20), nullable=False)
    currency = db.Column(db.String(3), nullable=False, default="cny")
    total_fen = db.Column(db.BigInteger, nullable=False)
    refunded_fen = db.Column(db.BigInteger, nullable=False, default=0)
    #: Refunds asked of the payment provider and not finished yet (``RefundIntent`` pending):
    #: held back so that two refunds in flight can never exceed what was paid.
    refund_reserved_fen = db.Column(db.BigInteger, nullable=False, default=0, server_default="0")
    shipping_name = db.Column(db.String(50), nullable=False)
    shipping_phone = db.Column(db.String(30), nullable=False)
    shipping_address = db.Column(db.String(300), nullable=False)
    purchase_order_no = db.Column(db.String(64), nullable=True)
    #: The day the buyer wants the goods (Asia/Shanghai date); the address is ``shipping_address``.
    delivery_date = db.Column(db.Date, nullable=True)
    invoice_title = db.Column(db.String(120), nullable=True)
    invoice_tax_id = db.Column(db.String(20), nullable=True)
    checkout_session_id = db.Column(db.String(255), nullable=True, unique=True)
    checkout_url = db.Column(db.Text, nullable=True)
    payment_intent_id = db.Column(db.String(255), nullable=True)
    # Bank reference of a confirmed transfer.
    payment_reference = db.Column(db.String(120), nullable=True)
    idempotency_key = db.Column(db.String(255), nullable=True)
    # SHA-256 of the request that used the key, so a reused key with another body is refused.
    request_fingerprint = db.Column(db.String(64), nullable=True)
    reserved_until = db.Column(UTCDateTime, nullable=False)
    cancel_reason = db.Column(db.String(200), nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    paid_at = db.Column(UTCDateTime, nullable=True)
    cancelled_at = db.Column(UTCDateTime, nullable=True)
    shipped_at = db.Column(UTCDateTime, nullable=True)
    completed_at = db.Column(UTCDateTime, nullable=True)
    #: NULL when the order needed no internal approval; else pending → approved or rejected.
    approval_status = db.Column(db.String(12), nullable=True)
    approval_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    approval_at = db.Column(UTCDateTime, nullable=True)
    approval_comment = db.Column(db.String(500), nullable=True)

    buyer = db.relationship("User", foreign_keys=[buyer_id])
    approval_by = db.relationship("User", foreign_keys=[approval_by_id])
    lines = db.relationship("OrderLine", back_populates="order", order_by="OrderLine.id",
                            cascade="all, delete-orphan")
    allocations = db.relationship("OrderAllocation", back_populates="order", order_by="OrderAllocation.id",
                                  cascade="all, delete-orphan")
    fulfilments = db.relationship("OrderFulfilment", back_populates="order", order_by="OrderFulfilment.id",
                                  cascade="all, delete-orphan")
    refunds = db.relationship("Refund", back_populates="order", order_by="Refund.id",
                              cascade="all, delete-orphan")
    inspection = db.relationship("OrderInspection", uselist=False, viewonly=True)
    refund_requests = db.relationship("RefundRequest", order_by="RefundRequest.id", viewonly=True)

    @property
    def status_label(self) -> str:
        """Chinese name of the status."""
        return OrderStatus(self.status).label

    @property
    def channel_label(self) -> str:
        """Chinese name of the sales channel."""
        return CHANNEL_LABELS[self.channel]

    @property
    def payment_method_label(self) -> str:
        """Chinese name of the payment method."""
        return PAYMENT_METHOD_LABELS[self.payment_method]

    @property
    def approval_label(self) -> str | None:
        """Chinese name of the internal approval state (None when none was needed)."""
        return APPROVAL_LABELS.get(self.approval_status)


class OrderLine(db.Model):
    """One product in an order, priced by the server at ordering time (a snapshot)."""

    __tablename__ = "order_lines"
    __table_args__ = (
        sa.UniqueConstraint("order_id", "product_id", name="uq_order_lines_order_product"),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("unit_price_fen > 0", name="price_positive"),
        sa.CheckConstraint("line_total_fen = unit_price_fen * quantity", name="total_is_price_times_quantity"),
        sa.CheckConstraint("refunded_fen >= 0 AND refunded_fen <= line_total_fen", name="refund_in_range"),
        # A cooperative's order book: its lines, newest orders first.
        sa.Index("ix_order_lines_cooperative_order", "cooperative_id", "order_id"),
        sa.Index("ix_order_lines_product_id", "product_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id"), nullable=False)
    cooperative_id = db.Column(db.Integer, db.ForeignKey("cooperatives.id"), nullable=False)
    product_name = db.Column(db.String(120), nullable=False)
    unit = db.Column(db.String(20), nullable=False)
    unit_price_fen = db.Column(db.BigInteger, nullable=False)
    quantity = db.Column(db.Integer, nullable=False)
    line_total_fen = db.Column(db.BigInteger, nullable=False)
    refunded_fen = db.Column(db.BigInteger, nullable=False, default=0)

    order = db.relationship("Order", back_populates="lines")
    allocations = db.relationship("OrderAllocation", back_populates="line", order_by="OrderAllocation.id",
                                  viewonly=True)


class OrderAllocation(db.Model):
    """Units of one order line taken from one batch; the sale is credited to the batch's village.

    ``village_id``, ``product_id``, ``channel`` and ``paid_at`` are copied here on purpose:
    the yearly village report is then one indexed aggregate over this table alone.
    ``released_at`` is set when a reservation is given back to the batch (exactly once).
    """

    __tablename__ = "order_allocations"
    __table_args__ = (
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("amount_fen >= 0", name="amount_not_negative"),
        sa.CheckConstraint("refunded_fen >= 0 AND refunded_fen <= amount_fen", name="refund_in_range"),
        sa.CheckConstraint(_in("channel", CHANNELS), name="channel_known"),
        sa.Index("ix_order_allocations_village_paid", "village_id", "paid_at"),
        sa.Index("ix_order_allocations_paid_village", "paid_at", "village_id"),
        sa.Index("ix_order_allocations_order_id", "order_id"),
        sa.Index("ix_order_allocations_line_id", "line_id"),
        sa.Index("ix_order_allocations_batch_id", "batch_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    line_id = db.Column(db.Integer, db.ForeignKey("order_lines.id", ondelete="CASCADE"), nullable=False)
    batch_id = db.Column(db.Integer, db.ForeignKey("batches.id"), nullable=False)
    village_id = db.Column(db.Integer, db.ForeignKey("villages.id"), nullable=False)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id"), nullable=False)
    channel = db.Column(db.String(20), nullable=False)
    quantity = db.Column(db.Integer, nullable=False)
    amount_fen = db.Column(db.BigInteger, nullable=False)
    refunded_fen = db.Column(db.BigInteger, nullable=False, default=0)
    paid_at = db.Column(UTCDateTime, nullable=True)
    released_at = db.Column(UTCDateTime, nullable=True)

    order = db.relationship("Order", back_populates="allocations")
    line = db.relationship("OrderLine", back_populates="allocations")
    batch = db.relationship("Batch", lazy="joined")


class OrderFulfilment(db.Model):
    """One cooperative's part of an order: it ships its own lines with its own tracking number."""

    __tablename__ = "order_fulfilments"
    __table_args__ = (
        sa.UniqueConstraint("order_id", "cooperative_id", name="uq_order_fulfilments_order_cooperative"),
        sa.CheckConstraint(_in("status", FULFILMENT_STATUSES), name="status_known"),
        sa.Index("ix_order_fulfilments_cooperative_status", "cooperative_id", "status"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    cooperative_id = db.Column(db.Integer, db.ForeignKey("cooperatives.id"), nullable=False)
    status = db.Column(db.String(20), nullable=False, default="pending")
    carrier = db.Column(db.String(40), nullable=True)
    tracking_number = db.Column(db.String(60), nullable=True)
    shipped_at = db.Column(UTCDateTime, nullable=True)
    shipped_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)

    order = db.relationship("Order", back_populates="fulfilments")
    cooperative = db.relationship("Cooperative")

    @property
    def status_label(self) -> str:
        """Chinese name of the status."""
        return FULFILMENT_LABELS[self.status]


class Refund(db.Model):
    """Money given back on a paid order; split over its allocations in ``RefundAllocation`` rows."""

    __tablename__ = "refunds"
    __table_args__ = (
        sa.CheckConstraint("amount_fen > 0", name="amount_positive"),
        sa.CheckConstraint(_in("provider", PAYMENT_PROVIDERS), name="provider_known"),
        sa.Index("ix_refunds_order_id", "order_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    amount_fen = db.Column(db.BigInteger, nullable=False)
    reason = db.Column(db.Text, nullable=False)
    provider = db.Column(db.String(20), nullable=False)
    provider_refund_id = db.Column(db.String(255), nullable=True, unique=True)
    actor_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    order = db.relationship("Order", back_populates="refunds")
    actor = db.relationship("User")
    parts = db.relationship("RefundAllocation", back_populates="refund", order_by="RefundAllocation.id",
                            cascade="all, delete-orphan")


class RefundAllocation(db.Model):
    """The part of one refund taken from one allocation (so village sales stay exact to the fen)."""

    __tablename__ = "refund_allocations"
    __table_args__ = (
        sa.UniqueConstraint("refund_id", "allocation_id", name="uq_refund_allocations_refund_allocation"),
        sa.CheckConstraint("amount_fen > 0", name="amount_positive"),
        sa.Index("ix_refund_allocations_allocation_id", "allocation_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    refund_id = db.Column(db.Integer, db.ForeignKey("refunds.id", ondelete="CASCADE"), nullable=False)
    allocation_id = db.Column(db.Integer, db.ForeignKey("order_allocations.id", ondelete="CASCADE"),
                              nullable=False)
    amount_fen = db.Column(db.BigInteger, nullable=False)

    refund = db.relationship("Refund", back_populates="parts")


REFUND_INTENT_STATUSES = ("pending", "succeeded", "failed")
REFUND_INTENT_LABELS = {"pending": "退款处理中", "succeeded": "退款成功", "failed": "退款失败"}


class RefundIntent(db.Model):
    """A refund asked for, written and committed before the payment provider is called.

    Why: the provider call is slow and may hang; it must not run while the order row is locked.
    The intent reserves its amount on the order (``Order.refund_reserved_fen``) in a short
    transaction, the provider is called outside any transaction with ``idempotency_key``, and a
    second short transaction finishes it (a ``Refund`` applied to the allocations) or marks it
    failed and releases the reservation. A pending intent left by a crash is retried with the
    same key (``flask --app wsgi payments resume-refunds``), so the money moves at most once.
    """

    __tablename__ = "refund_intents"
    __table_args__ = (
        sa.CheckConstraint("amount_fen > 0", name="amount_positive"),
        sa.CheckConstraint(_in("status", REFUND_INTENT_STATUSES), name="status_known"),
        sa.Index("ix_refund_intents_status_created_at", "status", "created_at"),
        sa.Index("ix_refund_intents_order_id", "order_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    amount_fen = db.Column(db.BigInteger, nullable=False)
    reason = db.Column(db.Text, nullable=False)
    actor_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    idempotency_key = db.Column(db.String(255), nullable=False, unique=True)
    status = db.Column(db.String(12), nullable=False, default="pending")
    #: JSON {line id: fen} when the refund is for given lines (验货 shortfall); NULL: the whole order.
    line_amounts = db.Column(db.Text, nullable=True)
    refund_request_id = db.Column(db.Integer, db.ForeignKey("refund_requests.id", ondelete="SET NULL"),
                                  nullable=True, index=True)
    refund_id = db.Column(db.Integer, db.ForeignKey("refunds.id", ondelete="SET NULL"), nullable=True)
    provider_refund_id = db.Column(db.String(255), nullable=True)
    failure = db.Column(db.String(500), nullable=True)
    #: Times Stripe was asked and answered or left it unknown (shown on the finance desk).
    attempts = db.Column(db.Integer, nullable=False, default=0)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    finished_at = db.Column(UTCDateTime, nullable=True)

    order = db.relationship("Order")
    actor = db.relationship("User")

    @property
    def status_label(self) -> str:
        return REFUND_INTENT_LABELS[self.status]


class PaymentEvent(db.Model):
    """A payment provider event already processed; the unique id makes redelivery a no-op."""

    __tablename__ = "payment_events"

    id = db.Column(db.Integer, primary_key=True)
    provider = db.Column(db.String(20), nullable=False, default="stripe")
    event_id = db.Column(db.String(255), nullable=False, unique=True)
    type = db.Column(db.String(80), nullable=False)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="SET NULL"), nullable=True, index=True)
    outcome = db.Column(db.String(40), nullable=False)
    received_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class CartItem(db.Model):
    """A signed-in user's cart line (guests keep theirs in a signed cookie, merged at sign-in)."""

    __tablename__ = "cart_items"
    __table_args__ = (sa.CheckConstraint("quantity > 0", name="quantity_positive"),)

    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True)
    quantity = db.Column(db.Integer, nullable=False)
    added_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


#: The PDF documents an order can have, and what each is called on paper.
DOCUMENT_KINDS = ("purchase_order", "delivery_note", "payment_receipt")
DOCUMENT_LABELS = {"purchase_order": "采购单", "delivery_note": "送货单", "payment_receipt": "付款回单"}


class OrderDocument(db.Model):
    """A PDF issued for an order, frozen: the bytes and their SHA-256 are stored once and served
    as they are ever after, so what an auditor downloads next year is what the buyer filed."""

    __tablename__ = "order_documents"
    __table_args__ = (
        # ``scope``: 0 for the whole order, else the cooperative a delivery note is for.
        sa.UniqueConstraint("order_id", "kind", "scope", name="uq_order_documents_order_kind_scope"),
        sa.CheckConstraint(_in("kind", DOCUMENT_KINDS), name="kind_known"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    kind = db.Column(db.String(20), nullable=False)
    scope = db.Column(db.Integer, nullable=False, default=0)
    number = db.Column(db.String(48), nullable=False)
    issued_at = db.Column(UTCDateTime, nullable=False)
    sha256 = db.Column(db.String(64), nullable=False)
    content = db.Column(db.LargeBinary, nullable=False)

    @property
    def label(self) -> str:
        return DOCUMENT_LABELS[self.kind]


class OrderInspection(db.Model):
    """验货: what the buyer found on delivery, line by line; recorded once and then kept as it is.

    A line's shortfall (units missing, plus units refused for quality) is claimed back at the
    line's unit price in a ``RefundRequest`` that finance settles."""

    __tablename__ = "order_inspections"

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, unique=True)
    inspector_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    note = db.Column(db.Text, nullable=False, default="")
    #: A stored upload name (``certification.uploads``), or NULL.
    photo = db.Column(db.String(80), nullable=True)
    claim_fen = db.Column(db.BigInteger, nullable=False, default=0)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    inspector = db.relationship("User")
    lines = db.relationship("InspectionLine", back_populates="inspection", order_by="InspectionLine.id",
                            cascade="all, delete-orphan")

    @property
    def has_problem(self) -> bool:
        return any(line.shortfall for line in self.lines)


class InspectionLine(db.Model):
    """One order line as inspected: units received, units of those refused for quality."""

    __tablename__ = "inspection_lines"
    __table_args__ = (
        sa.UniqueConstraint("inspection_id", "line_id", name="uq_inspection_lines_inspection_line"),
        sa.CheckConstraint("received_quantity >= 0", name="received_not_negative"),
        sa.CheckConstraint("rejected_quantity >= 0 AND rejected_quantity <= received_quantity",
                           name="rejected_within_received"),
        sa.CheckConstraint("claim_fen >= 0", name="claim_not_negative"),
    )

    id = db.Column(db.Integer, primary_key=True)
    inspection_id = db.Column(db.Integer, db.ForeignKey("order_inspections.id", ondelete="CASCADE"),
                              nullable=False)
    line_id = db.Column(db.Integer, db.ForeignKey("order_lines.id", ondelete="CASCADE"), nullable=False)
    received_quantity = db.Column(db.Integer, nullable=False)
    rejected_quantity = db.Column(db.Integer, nullable=False, default=0)
    #: Units ordered minus units accepted (missing + refused).
    shortfall = db.Column(db.Integer, nullable=False, default=0)
    claim_fen = db.Column(db.BigInteger, nullable=False, default=0)
    note = db.Column(db.String(300), nullable=False, default="")

    inspection = db.relationship("OrderInspection", back_populates="lines")
    line = db.relationship("OrderLine")


class RefundRequest(db.Model):
    """Money the buyer asks back (from a 验货 shortfall), per line, until finance refunds or declines it."""

    __tablename__ = "refund_requests"
    __table_args__ = (
        sa.CheckConstraint("amount_fen > 0", name="amount_positive"),
        sa.CheckConstraint(_in("status", REFUND_REQUEST_STATUSES), name="status_known"),
        sa.Index("ix_refund_requests_status", "status"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    inspection_id = db.Column(db.Integer, db.ForeignKey("order_inspections.id", ondelete="CASCADE"),
                              nullable=True, unique=True)
    amount_fen = db.Column(db.BigInteger, nullable=False)
    reason = db.Column(db.Text, nullable=False)
    status = db.Column(db.String(12), nullable=False, default="open")
    requested_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    decided_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    decided_at = db.Column(UTCDateTime, nullable=True)
    decision_comment = db.Column(db.String(500), nullable=True)
    refund_id = db.Column(db.Integer, db.ForeignKey("refunds.id", ondelete="SET NULL"), nullable=True)

    order = db.relationship("Order")
    inspection = db.relationship("OrderInspection")

    @property
    def status_label(self) -> str:
        return REFUND_REQUEST_LABELS[self.status]


RATING_ASPECTS = ("quality", "delivery", "service")
RATING_ASPECT_LABELS = {"quality": "产品质量", "delivery": "按时配送", "service": "服务态度"}


class CooperativeRating(db.Model):
    """履约评价: a buyer's marks (1-5) for one cooperative's part of one completed order."""

    __tablename__ = "cooperative_ratings"
    __table_args__ = (
        sa.UniqueConstraint("order_id", "cooperative_id", name="uq_cooperative_ratings_order_cooperative"),
        *(sa.CheckConstraint(f"{aspect} BETWEEN 1 AND 5", name=f"{aspect}_in_range") for aspect in RATING_ASPECTS),
        sa.Index("ix_cooperative_ratings_cooperative_id", "cooperative_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    cooperative_id = db.Column(db.Integer, db.ForeignKey("cooperatives.id"), nullable=False)
    rater_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    quality = db.Column(db.SmallInteger, nullable=False)
    delivery = db.Column(db.SmallInteger, nullable=False)
    service = db.Column(db.SmallInteger, nullable=False)
    comment = db.Column(db.String(500), nullable=False, default="")
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    order = db.relationship("Order")
    rater = db.relationship("User")


class ProductReview(db.Model):
    """A buyer's mark (1-5) and words for one product of one received order."""

    __tablename__ = "product_reviews"
    __table_args__ = (
        sa.UniqueConstraint("order_id", "product_id", name="uq_product_reviews_order_product"),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name="rating_in_range"),
        sa.Index("ix_product_reviews_product_id", "product_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    order_id = db.Column(db.Integer, db.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    reviewer_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=False)
    rating = db.Column(db.SmallInteger, nullable=False)
    comment = db.Column(db.String(500), nullable=False, default="")
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    reviewer = db.relationship("User")


#: A settlement statement is issued, then paid (once, with the bank's reference).
STATEMENT_STATUSES = ("issued", "paid")
STATEMENT_STATUS_LABELS = {"issued": "已出具，待付款", "paid": "已付款"}
STATEMENT_LINE_KINDS = ("sale", "refund")
STATEMENT_LINE_LABELS = {"sale": "销售", "refund": "退款"}
#: A statement's period: an Asia/Shanghai calendar month, written YYYY-MM.
STATEMENT_PERIOD_PATTERN = r"^(\d{4})-(\d{2})$"


class SettlementStatement(db.Model):
    """结算单: what the platform owes one cooperative for the movements settled in one period.

    Frozen once issued: the totals, the lines and their SHA-256 (``content_sha256``) never change;
    only the payment fields are filled in later. See ``shop/settlements.py`` for how movements are
    settled exactly once.
    """

    __tablename__ = "settlement_statements"
    __table_args__ = (
        sa.UniqueConstraint("cooperative_id", "period", name="uq_settlement_statements_cooperative_period"),
        sa.CheckConstraint(_in("status", STATEMENT_STATUSES), name="status_known"),
        sa.CheckConstraint("gross_fen >= 0 AND refunds_fen >= 0 AND net_fen = gross_fen - refunds_fen",
                           name="net_is_gross_minus_refunds"),
        sa.CheckConstraint("status <> 'paid' OR (paid_at IS NOT NULL AND bank_reference IS NOT NULL)",
                           name="paid_has_reference"),
        sa.Index("ix_settlement_statements_period", "period"),
    )

    id = db.Column(db.Integer, primary_key=True)
    cooperative_id = db.Column(db.Integer, db.ForeignKey("cooperatives.id"), nullable=False)
    #: The Asia/Shanghai calendar month, ``YYYY-MM``.
    period = db.Column(db.String(7), nullable=False)
    #: The first instant after the period (UTC): movements before it were eligible.
    cutoff_at = db.Column(UTCDateTime, nullable=False)
    status = db.Column(db.String(12), nullable=False, default="issued")
    gross_fen = db.Column(db.BigInteger, nullable=False)
    refunds_fen = db.Column(db.BigInteger, nullable=False)
    net_fen = db.Column(db.BigInteger, nullable=False)
    line_count = db.Column(db.Integer, nullable=False)
    content_sha256 = db.Column(db.String(64), nullable=False)
    issued_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    issued_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    paid_at = db.Column(UTCDateTime, nullable=True)
    #: The value date of the bank transfer (Asia/Shanghai), as finance reads it on the bank slip.
    paid_on = db.Column(db.Date, nullable=True)
    paid_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    bank_reference = db.Column(db.String(120), nullable=True)

    cooperative = db.relationship("Cooperative")
    issued_by = db.relationship("User", foreign_keys=[issued_by_id])
    paid_by = db.relationship("User", foreign_keys=[paid_by_id])
    lines = db.relationship("SettlementLine", back_populates="statement", order_by="SettlementLine.id",
                            cascade="all, delete-orphan")

    @property
    def status_label(self) -> str:
        """Chinese name of the status."""
        return STATEMENT_STATUS_LABELS[self.status]


class SettlementLine(db.Model):
    """One movement settled by a statement, frozen at issue: a sale (an allocation's goods value)
    or a refund (one refund part, negative). The unique movement ids are what make a movement
    settled exactly once: a second statement cannot take it."""

    __tablename__ = "settlement_lines"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", STATEMENT_LINE_KINDS), name="kind_known"),
        sa.CheckConstraint("(kind = 'sale' AND allocation_id IS NOT NULL AND refund_part_id IS NULL "
                           "AND amount_fen >= 0) OR (kind = 'refund' AND refund_part_id IS NOT NULL "
                           "AND allocation_id IS NULL AND amount_fen < 0)", name="movement_matches_kind"),
        sa.UniqueConstraint("allocation_id", name="uq_settlement_lines_allocation_id"),
        sa.UniqueConstraint("refund_part_id", name="uq_settlement_lines_refund_part_id"),
        sa.Index("ix_settlement_lines_statement_id", "statement_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    statement_id = db.Column(db.Integer, db.ForeignKey("settlement_statements.id", ondelete="CASCADE"),
                             nullable=False)
    kind = db.Column(db.String(8), nullable=False)
    #: The allocation whose sale this line settles (sale lines).
    allocation_id = db.Column(db.Integer, db.ForeignKey("order_allocations.id"), nullable=True)
    #: The refund part this line settles (refund lines).
    refund_part_id = db.Column(db.Integer, db.ForeignKey("refund_allocations.id"), nullable=True)
    #: The allocation the movement belongs to, for both kinds (which village, which year of payment).
    source_allocation_id = db.Column(db.Integer, db.ForeignKey("order_allocations.id"), nullable=False)
    order_number = db.Column(db.String(32), nullable=False)
    product_id = db.Column(db.Integer, nullable=False)
    product_name = db.Column(db.String(120), nullable=False)
    village_id = db.Column(db.Integer, nullable=False)
    village_name = db.Column(db.String(120), nullable=False)
    #: Units sold (sale lines); NULL for a refund, which is money, not units.
    quantity = db.Column(db.Integer, nullable=True)
    #: Signed: the goods value of a sale, minus the amount of a refund.
    amount_fen = db.Column(db.BigInteger, nullable=False)
    #: When the movement happened: the payment (sale) or the refund.
    occurred_at = db.Column(UTCDateTime, nullable=False)

    statement = db.relationship("SettlementStatement", back_populates="lines")

    @property
    def kind_label(self) -> str:
        """Chinese name of the kind of movement."""
        return STATEMENT_LINE_LABELS[self.kind]
