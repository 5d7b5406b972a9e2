"""marshmallow schemas for orders: what callers may send, and what each viewer is shown."""
from datetime import timedelta

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from core.schemas import ROW_ID
from core.timeutil import isoformat, shanghai_today
from shop.models import (APPROVAL_LABELS, APPROVAL_STATUSES, CHANNEL_LABELS, FULFILMENT_LABELS, PAYMENT_METHODS,
                         REFUND_REQUEST_LABELS, REFUND_REQUEST_STATUSES, STATEMENT_LINE_KINDS, STATEMENT_PERIOD_PATTERN,
                         STATEMENT_STATUSES)
from shop.settings import bank_transfer_account
from shop.states import OrderStatus

REQUIRED = {"required": "必填", "null": "不能为空"}
INTEGER = {**REQUIRED, "invalid": "必须是整数"}
MAX_QUANTITY = 100_000
MAX_DELIVERY_DAYS = 366


class _Lenient(Schema):
    """Unknown keys are ignored (query strings: paging and future parameters are not filters)."""

    class Meta:
        unknown = EXCLUDE


class _Strict(Schema):
    """Order bodies: an unknown key is a 422, never silently dropped (a canteen's ``delivery_date``
    once was, before the field existed, and the buyer believed it had been taken)."""

    error_messages = {"unknown": "未知字段（不是订单的一部分，请检查字段名）"}

    class Meta:
        unknown = RAISE


class OrderLineInSchema(_Strict):
    product_id = fields.Integer(required=True, strict=True, error_messages=INTEGER, validate=ROW_ID)
    quantity = fields.Integer(required=True, strict=True, error_messages=INTEGER,
                              validate=validate.Range(min=1, max=MAX_QUANTITY,
                                                      error=f"数量须在 1 到 {MAX_QUANTITY} 之间"))


class ShippingSchema(_Strict):
    name = fields.String(required=True, error_messages=REQUIRED,
                         validate=validate.Length(min=1, max=50, error="长度须为 1 到 50"))
    phone = fields.String(required=True, error_messages=REQUIRED,
                          validate=validate.Regexp(r"^[0-9+\-\s]{5,30}$", error="电话号码格式不正确"))
    address = fields.String(required=True, error_messages=REQUIRED,
                            validate=validate.Length(min=5, max=300, error="地址长度须为 5 到 300"))


class InvoiceSchema(_Strict):
    title = fields.String(required=True, error_messages=REQUIRED,
                          validate=validate.Length(min=1, max=120, error="长度须为 1 到 120"))
    # 纳税人识别号: the 18-character credit code today, 15 or 20 characters for older ones.
    tax_id = fields.String(required=True, error_messages=REQUIRED,
                           validate=validate.Regexp(r"^[0-9A-Z]{15,20}$", error="纳税人识别号须为 15 到 20 位数字或大写字母"))


class OrderCreateSchema(_Strict):
    lines = fields.List(fields.Nested(OrderLineInSchema), required=True, error_messages=REQUIRED,
                        validate=validate.Length(min=1, max=50, error="订单须有 1 到 50 行"))
    payment_method = fields.String(required=True, error_messages=REQUIRED,
                                   validate=validate.OneOf(PAYMENT_METHODS, error="支付方式须为在线支付（stripe）或对公转账（bank_transfer）"))
    shipping = fields.Nested(ShippingSchema, required=True, error_messages=REQUIRED)
    purchase_order_no = fields.String(load_default=None, allow_none=True,
                                      validate=validate.Length(min=1, max=64, error="长度须为 1 到 64"))
    invoice = fields.Nested(InvoiceSchema, load_default=None, allow_none=True)
    # When the goods should arrive (canteens plan meals around it); the address is ``shipping``'s.
    delivery_date = fields.Date(load_default=None, allow_none=True,
                                error_messages={"invalid": "日期格式应为 YYYY-MM-DD"})

    @validates("delivery_date")
    def validate_delivery_date(self, value, **kwargs):
        """Today (Asia/Shanghai) at the earliest, and within a year."""
        if value is None:
            return
        today = shanghai_today()
        if value < today:
            raise ValidationError(f"送达日期不能早于今天（{today.isoformat()}）")
        if value > today + timedelta(days=MAX_DELIVERY_DAYS):
            raise ValidationError(f"送达日期须在 {MAX_DELIVERY_DAYS} 天以内")


class TransferConfirmSchema(_Strict):
    amount_fen = fields.Integer(required=True, strict=True, error_messages=INTEGER,
                                validate=validate.Range(min=1, error="金额须大于 0"))
    reference = fields.String(required=True, error_messages=REQUIRED,
                              validate=validate.Length(min=1, max=120, error="长度须为 1 到 120"))


class RefundCreateSchema(_Strict):
    amount_fen = fields.Integer(required=True, strict=True, error_messages=INTEGER,
                                validate=validate.Range(min=1, error="金额须大于 0"))
    reason = fields.String(required=True, error_messages=REQUIRED,
                           validate=validate.Length(min=1, max=500, error="长度须为 1 到 500"))


class ShipSchema(_Strict):
    carrier = fields.String(required=True, error_messages=REQUIRED,
                            validate=validate.Length(min=1, max=40, error="长度须为 1 到 40"))
    tracking_number = fields.String(required=True, error_messages=REQUIRED,
                                    validate=validate.Regexp(r"^[A-Za-z0-9\-]{6,40}$",
                                                             error="运单号须为 6 到 40 位字母、数字或连字符"))
    # Only admins name the cooperative; a cooperative member always ships its own part.
    cooperative_id = fields.Integer(load_default=None, allow_none=True, strict=True, validate=ROW_ID)

    @validates_schema
    def strip_blank(self, data, **kwargs):
        """Refuse a carrier made only of spaces."""
        if not data.get("carrier", "").strip():
            raise ValidationError({"carrier": ["不能为空"]})


class OrderQuerySchema(_Lenient):
    status = fields.String(validate=validate.OneOf([s.value for s in OrderStatus], error="未知的订单状态"))
    approval = fields.String(validate=validate.OneOf(APPROVAL_STATUSES, error="未知的审批状态"))


def _comment():
    """An optional comment of up to 500 characters."""
    return fields.String(load_default="", validate=validate.Length(max=500, error="最多 500 字"))


class DecisionSchema(_Strict):
    """An approver's decision on an order: a reason is required to reject."""

    decision = fields.String(required=True, error_messages=REQUIRED,
                             validate=validate.OneOf(("approve", "reject"), error="须为 approve（通过）或 reject（驳回）"))
    comment = _comment()

    @validates_schema
    def reason_to_reject(self, data, **kwargs):
        if data.get("decision") == "reject" and not data.get("comment", "").strip():
            raise ValidationError({"comment": ["驳回时请填写原因"]})


class InspectionLineInSchema(_Strict):
    product_id = fields.Integer(required=True, strict=True, error_messages=INTEGER, validate=ROW_ID)
    received_quantity = fields.Integer(required=True, strict=True, error_messages=INTEGER,
                                       validate=validate.Range(min=0, max=MAX_QUANTITY * 10, error="不能为负数"))
    rejected_quantity = fields.Integer(load_default=0, strict=True, error_messages=INTEGER,
                                       validate=validate.Range(min=0, max=MAX_QUANTITY * 10, error="不能为负数"))
    note = fields.String(load_default="", validate=validate.Length(max=300, error="最多 300 字"))


class InspectionSchema(_Strict):
    """验货: one entry per product of the order, and what was wrong (required with a shortfall)."""

    lines = fields.List(fields.Nested(InspectionLineInSchema), required=True, error_messages=REQUIRED,
                        validate=validate.Length(min=1, max=50, error="须有 1 到 50 行"))
    note = fields.String(load_default="", validate=validate.Length(max=1000, error="最多 1000 字"))


class RefundDecisionSchema(_Strict):
    """Finance on a 验货 refund request: refund it, or decline it with a reason."""

    decision = fields.String(required=True, error_messages=REQUIRED,
                             validate=validate.OneOf(("refund", "decline"), error="须为 refund（退款）或 decline（不予退款）"))
    comment = _comment()

    @validates_schema
    def reason_to_decline(self, data, **kwargs):
        if data.get("decision") == "decline" and not data.get("comment", "").strip():
            raise ValidationError({"comment": ["不予退款时请填写原因"]})


#: A settlement period, YYYY-MM (``settlements.parse_period`` then checks the month's range).
PERIOD = validate.Regexp(STATEMENT_PERIOD_PATTERN, error="须为“年-月”，如 2026-11")


class SettlementIssueSchema(_Strict):
    """Finance issues a period's statements: every cooperative with something to settle, or one."""

    period = fields.String(required=True, error_messages=REQUIRED, validate=PERIOD)
    cooperative_id = fields.Integer(load_default=None, allow_none=True, strict=True, error_messages=INTEGER,
                                    validate=ROW_ID)


class SettlementPaySchema(_Strict):
    """Finance records the bank transfer that paid a statement."""

    bank_reference = fields.String(required=True, error_messages=REQUIRED,
                                   validate=validate.Length(min=1, max=120, error="长度须为 1 到 120"))
    paid_on = fields.Date(load_default=None, allow_none=True, error_messages={"invalid": "日期格式须为 YYYY-MM-DD"})

    @validates("bank_reference")
    def not_blank(self, value, **kwargs):
        if not value.strip():
            raise ValidationError("不能为空")


class SettlementQuerySchema(_Lenient):
    period = fields.String(validate=PERIOD)
    cooperative_id = fields.Integer(validate=ROW_ID, error_messages={"invalid": "必须是整数"})
    status = fields.String(validate=validate.OneOf(STATEMENT_STATUSES, error="须为 issued 或 paid"))


class RefundRequestQuerySchema(_Lenient):
    status = fields.String(validate=validate.OneOf(REFUND_REQUEST_STATUSES, error="未知的处理状态"))


_MARK = dict(required=True, strict=True, error_messages=INTEGER, validate=validate.Range(min=1, max=5, error="须为 1 到 5 分"))


class CooperativeRatingSchema(_Strict):
    cooperative_id = fields.Integer(required=True, strict=True, error_messages=INTEGER, validate=ROW_ID)
    quality = fields.Integer(**_MARK)
    delivery = fields.Integer(**_MARK)
    service = fields.Integer(**_MARK)
    comment = _comment()


class ProductReviewSchema(_Strict):
    product_id = fields.Integer(required=True, strict=True, error_messages=INTEGER, validate=ROW_ID)
    rating = fields.Integer(**_MARK)
    comment = _comment()


# ---- output ----

class LineOutSchema(Schema):
    id = fields.Integer()
    product_id = fields.Integer()
    product_name = fields.String()
    cooperative_id = fields.Integer()
    unit = fields.String()
    quantity = fields.Integer()
    unit_price_fen = fields.Integer()
    line_total_fen = fields.Integer()
    refunded_fen = fields.Integer()
    allocations = fields.Method("get_allocations")

    def get_allocations(self, line):
        """Which batches (and villages) the line's units came from."""
        return [{"batch_id": a.batch_id, "lot": a.batch.lot, "village_id": a.village_id, "quantity": a.quantity}
                for a in line.allocations]


class FulfilmentOutSchema(Schema):
    cooperative_id = fields.Integer()
    cooperative = fields.Function(lambda f: f.cooperative.name)
    status = fields.String()
    status_label = fields.Function(lambda f: FULFILMENT_LABELS[f.status])
    carrier = fields.String(allow_none=True)
    tracking_number = fields.String(allow_none=True)
    shipped_at = fields.Function(lambda f: isoformat(f.shipped_at))


class RefundOutSchema(Schema):
    id = fields.Integer()
    amount_fen = fields.Integer()
    reason = fields.String()
    provider = fields.String()
    provider_refund_id = fields.String(allow_none=True)
    created_at = fields.Function(lambda r: isoformat(r.created_at))


class InspectionLineOutSchema(Schema):
    product_id = fields.Function(lambda row: row.line.product_id)
    product_name = fields.Function(lambda row: row.line.product_name)
    cooperative_id = fields.Function(lambda row: row.line.cooperative_id)
    ordered_quantity = fields.Function(lambda row: row.line.quantity)
    received_quantity = fields.Integer()
    rejected_quantity = fields.Integer()
    shortfall = fields.Integer()
    claim_fen = fields.Integer()
    note = fields.String()


class InspectionOutSchema(Schema):
    inspector_id = fields.Integer()
    note = fields.String()
    has_photo = fields.Function(lambda i: i.photo is not None)
    claim_fen = fields.Integer()
    created_at = fields.Function(lambda i: isoformat(i.created_at))
    lines = fields.Nested(InspectionLineOutSchema, many=True)


class RefundRequestOutSchema(Schema):
    id = fields.Integer()
    order_id = fields.Integer()
    order_number = fields.Function(lambda r: r.order.number)
    amount_fen = fields.Integer()
    reason = fields.String()
    status = fields.String()
    status_label = fields.Function(lambda r: REFUND_REQUEST_LABELS[r.status])
    created_at = fields.Function(lambda r: isoformat(r.created_at))
    decided_at = fields.Function(lambda r: isoformat(r.decided_at))
    decision_comment = fields.String(allow_none=True)
    refund_id = fields.Integer(allow_none=True)


class CooperativeRatingOutSchema(Schema):
    id = fields.Integer()
    order_id = fields.Integer()
    cooperative_id = fields.Integer()
    quality = fields.Integer()
    delivery = fields.Integer()
    service = fields.Integer()
    comment = fields.String()
    created_at = fields.Function(lambda r: isoformat(r.created_at))


class ReviewOutSchema(Schema):
    """A product review as the API shows it (``api._review_body``)."""

    id = fields.Integer()
    product_id = fields.Integer()
    rating = fields.Integer()
    comment = fields.String()
    reviewer = fields.String(metadata={"description": "公开显示的评价人（已脱敏）"})
    created_at = fields.String()


class SettlementLineOutSchema(Schema):
    """One frozen movement of a statement: a sale (+) or a refund (−)."""

    kind = fields.String(metadata={"enum": list(STATEMENT_LINE_KINDS)})
    order_number = fields.String()
    product_id = fields.Integer()
    product_name = fields.String()
    village_id = fields.Integer()
    village = fields.String()
    quantity = fields.Integer(allow_none=True)
    amount_fen = fields.Integer(metadata={"description": "销售为正，退款为负"})
    occurred_at = fields.String()


class SettlementStatementOutSchema(Schema):
    """A settlement statement (结算单) as ``settlements.dump_statement`` shapes it; ``lines`` on the
    single-statement answer only."""

    id = fields.Integer()
    cooperative_id = fields.Integer()
    cooperative = fields.String()
    period = fields.String(metadata={"description": "结算期（北京时间的自然月），YYYY-MM"})
    status = fields.String(metadata={"enum": list(STATEMENT_STATUSES)})
    status_label = fields.String()
    gross_fen = fields.Integer()
    refunds_fen = fields.Integer()
    net_fen = fields.Integer()
    net = fields.String()
    line_count = fields.Integer()
    content_sha256 = fields.String()
    issued_at = fields.String()
    issued_by_id = fields.Integer(allow_none=True)
    paid_at = fields.String(allow_none=True)
    paid_on = fields.String(allow_none=True)
    paid_by_id = fields.Integer(allow_none=True)
    bank_reference = fields.String(allow_none=True)
    lines = fields.List(fields.Nested(SettlementLineOutSchema))


class SettlementIssuedSchema(Schema):
    """``POST /settlements``: the statements issued now (none when nothing was left to settle)."""

    items = fields.List(fields.Nested(SettlementStatementOutSchema))


class OrderOutSchema(Schema):
    """An order as ``dump_order`` shapes it; a cooperative (``scope: cooperative``) sees its own part only,
    without the fields from ``buyer_id`` on."""

    id = fields.Integer()
    number = fields.String()
    status = fields.String(metadata={"enum": [s.value for s in OrderStatus]})
    status_label = fields.String()
    channel = fields.String(metadata={"enum": list(CHANNEL_LABELS)})
    channel_label = fields.String()
    currency = fields.String()
    total_fen = fields.Integer()
    lines = fields.List(fields.Nested(LineOutSchema))
    shipping = fields.Dict(metadata={"description": "{name, phone, address}"})
    fulfilments = fields.List(fields.Nested(FulfilmentOutSchema))
    purchase_order_no = fields.String(allow_none=True)
    delivery_date = fields.String(allow_none=True)
    created_at = fields.String()
    paid_at = fields.String(allow_none=True)
    shipped_at = fields.String(allow_none=True)
    completed_at = fields.String(allow_none=True)
    approval = fields.Dict(allow_none=True, metadata={"description": "{status, label, by, at, comment}：内部审批"})
    inspection = fields.Nested(InspectionOutSchema, allow_none=True)
    scope = fields.String(metadata={"enum": ["order", "cooperative"]})
    buyer_id = fields.Integer()
    budget_unit_id = fields.Integer(allow_none=True)
    refunded_fen = fields.Integer()
    payment_method = fields.String(metadata={"enum": list(PAYMENT_METHODS)})
    payment = fields.Dict(metadata={"description": "{provider, checkout_session_id, checkout_url, payment_intent_id, "
                                                   "reference, bank_transfer}"})
    invoice = fields.Dict(allow_none=True)
    reserved_until = fields.String(allow_none=True)
    cancelled_at = fields.String(allow_none=True)
    cancel_reason = fields.String(allow_none=True)
    refunds = fields.List(fields.Nested(RefundOutSchema))
    refund_requests = fields.List(fields.Nested(RefundRequestOutSchema))


_LINES = LineOutSchema(many=True)
_FULFILMENTS = FulfilmentOutSchema(many=True)
_REFUNDS = RefundOutSchema(many=True)


def dump_order(order, cooperative_id: int | None = None) -> dict:
    """The order as the contract shows it; a cooperative (``cooperative_id``) sees only its part.

    A cooperative sees its own lines, their total, its fulfilment and the shipping address;
    not the buyer's payment, invoice, refunds or other cooperatives' lines.
    """
    lines = [line for line in order.lines if cooperative_id is None or line.cooperative_id == cooperative_id]
    fulfilments = [f for f in order.fulfilments if cooperative_id is None or f.cooperative_id == cooperative_id]
    body = {
        "id": order.id,
        "number": order.number,
        "status": order.status,
        "status_label": order.status_label,
        "channel": order.channel,
        "channel_label": CHANNEL_LABELS[order.channel],
        "currency": order.currency,
        "total_fen": sum(line.line_total_fen for line in lines) if cooperative_id else order.total_fen,
        "lines": _LINES.dump(lines),
        "shipping": {"name": order.shipping_name, "phone": order.shipping_phone, "address": order.shipping_address},
        "fulfilments": _FULFILMENTS.dump(fulfilments),
        "purchase_order_no": order.purchase_order_no,
        "delivery_date": order.delivery_date.isoformat() if order.delivery_date else None,
        "created_at": isoformat(order.created_at),
        "paid_at": isoformat(order.paid_at),
        "shipped_at": isoformat(order.shipped_at),
        "completed_at": isoformat(order.completed_at),
        "approval": ({"status": order.approval_status, "label": APPROVAL_LABELS[order.approval_status],
                      "by": order.approval_by.display_name if order.approval_by else None,
                      "at": isoformat(order.approval_at), "comment": order.approval_comment}
                     if order.approval_status else None),
    }
    inspection = order.inspection
    if inspection is not None:
        body["inspection"] = InspectionOutSchema().dump(inspection)
        if cooperative_id is not None:  # a cooperative sees what was found of its own goods
            own = [row for row in body["inspection"]["lines"] if row["cooperative_id"] == cooperative_id]
            body["inspection"].update(lines=own, claim_fen=sum(row["claim_fen"] for row in own))
    else:
        body["inspection"] = None
    if cooperative_id is not None:
        body["scope"] = "cooperative"
        return body
    body.update({
        "scope": "order",
        "buyer_id": order.buyer_id,
        "budget_unit_id": order.budget_unit_id,
        "refunded_fen": order.refunded_fen,
        "payment_method": order.payment_method,
        "payment": {"provider": order.payment_provider, "checkout_session_id": order.checkout_session_id,
                    "checkout_url": order.checkout_url, "payment_intent_id": order.payment_intent_id,
                    "reference": order.payment_reference},
        "invoice": ({"title": order.invoice_title, "tax_id": order.invoice_tax_id}
                    if order.invoice_title else None),
        "reserved_until": isoformat(order.reserved_until),
        "cancelled_at": isoformat(order.cancelled_at),
        "cancel_reason": order.cancel_reason,
        "refunds": _REFUNDS.dump(order.refunds),
        "refund_requests": RefundRequestOutSchema(many=True).dump(order.refund_requests),
    })
    if order.payment_method == "bank_transfer":
        # Where to pay and what to write in the transfer note (None until the platform has an account).
        account = bank_transfer_account()
        body["payment"]["bank_transfer"] = (
            {"payee": account.payee, "bank": account.bank, "account": account.account, "note": order.number}
            if account else None)
    return body
