"""Orders and payment JSON API (``/api/v1``): thin — parse, load, call a service, dump."""
from flask import Blueprint, jsonify, request, url_for
from marshmallow import fields, validate

from core.auth import current_user, require_login, require_roles
from core.errors import ValidationFailed
from core.http import file_download, json_body, list_envelope, page_params
from core.identifiers import whole_number
from core.timeutil import isoformat
from core.models import Role
from core.openapi import api_doc, api_tag
from shop import approval, documents, inspection, ratings, services, settlements
from shop.models import DOCUMENT_KINDS
from shop.schemas import (CooperativeRatingOutSchema, CooperativeRatingSchema, DecisionSchema, InspectionSchema,
                          OrderCreateSchema, OrderOutSchema, OrderQuerySchema, ProductReviewSchema, RefundCreateSchema,
                          RefundDecisionSchema, RefundRequestOutSchema, RefundRequestQuerySchema, ReviewOutSchema,
                          SettlementIssuedSchema, SettlementIssueSchema, SettlementPaySchema, SettlementQuerySchema,
                          SettlementStatementOutSchema, ShipSchema,
                          TransferConfirmSchema, dump_order)

bp = Blueprint("shop_api", __name__, url_prefix="/api/v1")
api_tag(bp, "订单与支付", "下单、取消、Stripe 回调、对公转账确认、退款、发货、验货、内部审批、评价、订单文件")

IDEMPOTENCY_HEADER = {"Idempotency-Key": {
    "required": False, "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "可选：同一键与同一请求体的重试返回同一订单（响应头 Idempotent-Replayed）"}}
#: Rating averages are exact one-decimal strings ("4.3"), never floats (``ratings._average``).
AVERAGE = {"type": ["string", "null"], "pattern": r"^\d\.\d$", "description": "一位小数的字符串，如 \"4.3\"；无评价为 null"}
#: What Stripe posts: an event whose ``data.object`` is a Checkout Session or a charge.
STRIPE_EVENT = {"type": "object", "required": ["id", "type", "data"], "description": "Stripe 事件（原样转发的请求体）",
                "properties": {"id": {"type": "string"},
                               "type": {"type": "string", "examples": ["checkout.session.completed", "charge.refunded",
                                                                      "charge.dispute.created"]},
                               "data": {"type": "object", "properties": {"object": {"type": "object"}}}}}
STRIPE_SIGNATURE = {"Stripe-Signature": {"required": True, "schema": {"type": "string"},
                                         "description": "Stripe 用 STRIPE_WEBHOOK_SECRET 对原始请求体的签名；不符为 400"}}
RATINGS = {"type": "object", "properties": {
    "cooperative_id": {"type": "integer"}, "count": {"type": "integer"},
    "averages": {"type": "object", "description": "quality、delivery、service 各自的平均分", "additionalProperties": AVERAGE},
    "items": {"type": "array", "items": CooperativeRatingOutSchema}}}
REVIEWS = {"type": "object", "properties": {
    "product_id": {"type": "integer"}, "count": {"type": "integer"}, "average": AVERAGE,
    "items": {"type": "array", "items": ReviewOutSchema}}}
DOCUMENTS = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {
    "kind": {"type": "string", "enum": list(DOCUMENT_KINDS)},
    "scope": {"type": "integer"}, "label": {"type": "string"}, "issued": {"type": "boolean"},
    "sha256": {"type": ["string", "null"]}, "url": {"type": "string"}}}}}}


def _idempotency_key() -> str | None:
    """The optional ``Idempotency-Key`` header (1–255 printable characters)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ValidationFailed("Idempotency-Key 须为 1 到 255 个可打印字符", code="invalid_idempotency_key")
    return key


@bp.post("/orders")
@api_doc(request=OrderCreateSchema, headers=IDEMPOTENCY_HEADER, response=OrderOutSchema, status=201,
         errors=(403, 409, 502, 503))
@require_login
def create_order():
    """Place an order: prices from the server, stock reserved at once (201).

    A retry with the same ``Idempotency-Key`` and body answers the same order again (marked by
    the ``Idempotent-Replayed`` header) instead of ordering twice.
    """
    data = OrderCreateSchema().load(json_body())
    order, created = services.place_order(current_user(), data, idempotency_key=_idempotency_key())
    response = jsonify(dump_order(order))
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 201


@bp.get("/orders")
@api_doc(query=OrderQuerySchema, paged=True, response=OrderOutSchema, many=True)
@require_login
def list_orders():
    """The caller's orders (a cooperative: orders holding its products; finance, admin: all)."""
    filters = OrderQuerySchema().load(request.args.to_dict())
    page = page_params()
    user = current_user()
    orders, total = services.list_orders(user, status=filters.get("status"), approval=filters.get("approval"),
                                         offset=page.offset, limit=page.size)
    return jsonify(list_envelope([dump_order(o, services.order_scope(user, o)) for o in orders], total, page))


@bp.get("/orders/<int:order_id>")
@api_doc(response=OrderOutSchema, errors=(403,))
@require_login
def get_order(order_id: int):
    """One order: all of it for its buyer, finance and admin; a cooperative sees its own part."""
    order, scope = services.get_order(current_user(), order_id)
    return jsonify(dump_order(order, scope))


@bp.post("/orders/<int:order_id>/cancel")
@api_doc(response=OrderOutSchema, errors=(403, 409, 502))
@require_login
def cancel_order(order_id: int):
    """The buyer cancels an unpaid order; stock is released at once."""
    return jsonify(dump_order(services.cancel_order(current_user(), order_id)))


@bp.post("/orders/<int:order_id>/confirm-transfer")
@api_doc(request=TransferConfirmSchema, response=OrderOutSchema, errors=(409,))
@require_roles(Role.FINANCE)
def confirm_transfer(order_id: int):
    """Finance confirms a bank transfer of exactly the order's total."""
    data = TransferConfirmSchema().load(json_body())
    return jsonify(dump_order(services.confirm_transfer(current_user(), order_id, data)))


@bp.post("/orders/<int:order_id>/refund")
@api_doc(request=RefundCreateSchema, response=OrderOutSchema, errors=(409, 502))
@require_roles(Role.FINANCE, Role.ADMIN)
def refund_order(order_id: int):
    """Refund part or all of a paid order (through Stripe for Stripe payments)."""
    data = RefundCreateSchema().load(json_body())
    return jsonify(dump_order(services.refund_order(current_user(), order_id, data)))


@bp.post("/orders/<int:order_id>/ship")
@api_doc(request=ShipSchema, response=OrderOutSchema, errors=(409,))
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def ship_order(order_id: int):
    """A cooperative marks its part of the order shipped with a tracking number."""
    data = ShipSchema().load(json_body())
    user = current_user()
    order = services.ship_part(user, order_id, data)
    return jsonify(dump_order(order, services.order_scope(user, order)))


@bp.post("/orders/<int:order_id>/confirm-receipt")
@api_doc(response=OrderOutSchema, errors=(403, 409))
@require_login
def confirm_receipt(order_id: int):
    """The buyer confirms receipt (验货), completing a shipped order."""
    return jsonify(dump_order(services.confirm_receipt(current_user(), order_id)))


@bp.post("/orders/<int:order_id>/approval")
@api_doc(request=DecisionSchema, response=OrderOutSchema, errors=(409, 502))
@require_roles(Role.CANTEEN_BUYER)
def decide_approval(order_id: int):
    """The unit's approver approves or rejects an order above the unit's threshold (内部审批)."""
    data = DecisionSchema().load(json_body())
    return jsonify(dump_order(approval.decide(current_user(), order_id, data)))


@bp.post("/orders/<int:order_id>/inspection")
@api_doc(request=InspectionSchema, response=OrderOutSchema, status=201, errors=(403, 409))
@require_login
def record_inspection(order_id: int):
    """The buyer records 验货 line by line; a shortfall opens a refund request for finance (201)."""
    data = InspectionSchema().load(json_body())
    return jsonify(dump_order(inspection.record_inspection(current_user(), order_id, data))), 201


@bp.get("/refund-requests")
@api_doc(query=RefundRequestQuerySchema, paged=True, response=RefundRequestOutSchema, many=True)
@require_roles(Role.FINANCE, Role.ADMIN)
def list_refund_requests():
    """验货 refund requests, newest first (``?status=open`` is finance's to-do list)."""
    filters = RefundRequestQuerySchema().load(request.args.to_dict())
    page = page_params()
    items, total = inspection.list_refund_requests(filters.get("status"), page.offset, page.size)
    return jsonify(list_envelope(RefundRequestOutSchema(many=True).dump(items), total, page))


@bp.post("/refund-requests/<int:request_id>/decision")
@api_doc(request=RefundDecisionSchema, response=RefundRequestOutSchema, errors=(409, 502))
@require_roles(Role.FINANCE, Role.ADMIN)
def decide_refund_request(request_id: int):
    """Finance refunds a 验货 claim from the claimed lines, or declines it with a reason."""
    data = RefundDecisionSchema().load(json_body())
    refund_request = inspection.decide_refund_request(current_user(), request_id, data)
    return jsonify(RefundRequestOutSchema().dump(refund_request))


@bp.post("/orders/<int:order_id>/ratings")
@api_doc(request=CooperativeRatingSchema, response=CooperativeRatingOutSchema, status=201, errors=(403, 409))
@require_login
def rate_cooperative(order_id: int):
    """履约评价: the buyer of a completed order rates one of its cooperatives (201)."""
    data = CooperativeRatingSchema().load(json_body())
    return jsonify(CooperativeRatingOutSchema().dump(ratings.rate_cooperative(current_user(), order_id, data))), 201


@bp.post("/orders/<int:order_id>/reviews")
@api_doc(request=ProductReviewSchema, response=ReviewOutSchema, status=201, errors=(403, 409))
@require_login
def review_product(order_id: int):
    """The buyer of a completed order reviews one of its products (201)."""
    data = ProductReviewSchema().load(json_body())
    review = ratings.review_product(current_user(), order_id, data)
    return jsonify(_review_body(review)), 201


@bp.get("/cooperatives/<int:cooperative_id>/ratings")
@api_doc(response=RATINGS, errors=(403,))
@require_login
def cooperative_ratings(cooperative_id: int):
    """A cooperative's 履约评价 (its members, reviewers, officials, admins): averages and latest."""
    summary = ratings.cooperative_ratings(current_user(), cooperative_id)
    return jsonify({"cooperative_id": cooperative_id, "count": summary["count"], "averages": summary["averages"],
                    "items": CooperativeRatingOutSchema(many=True).dump(summary["items"])})


@bp.get("/products/<int:product_id>/reviews")
@api_doc(response=REVIEWS)
def product_reviews(product_id: int):
    """A product's reviews, public: the average mark, how many, the latest ones."""
    summary = ratings.product_reviews(product_id)
    return jsonify({"product_id": product_id, "count": summary["count"], "average": summary["average"],
                    "items": [_review_body(review) for review in summary["items"]]})


def _review_body(review) -> dict:
    return {"id": review.id, "product_id": review.product_id, "rating": review.rating, "comment": review.comment,
            "reviewer": ratings.public_reviewer_name(review.reviewer), "created_at": isoformat(review.created_at)}


@bp.post("/payments/stripe/webhook")
@api_doc(request=STRIPE_EVENT, headers=STRIPE_SIGNATURE, response={"type": "object", "properties": {
    "received": {"type": "boolean"}, "duplicate": {"type": "boolean"}, "outcome": {"type": "string"}}})
def stripe_webhook():
    """Stripe's webhook: the signature is checked over the raw body; redeliveries change nothing."""
    result = services.handle_stripe_webhook(request.get_data(cache=False),
                                            request.headers.get("Stripe-Signature"))
    return jsonify(result)


@bp.get("/orders/<int:order_id>/documents")
@api_doc(response=DOCUMENTS, errors=(403,))
@require_login
def list_documents(order_id: int):
    """The order's PDF documents the caller may download (purchase order, delivery notes, receipt)."""
    user = current_user()
    order = documents.order_for_documents(user, order_id)
    items = [{"kind": item.kind, "scope": item.scope, "label": item.label,
              "issued": item.issued is not None,
              "sha256": item.issued.sha256 if item.issued else None,
              "url": url_for("shop_api.get_document", order_id=order.id, kind=item.kind,
                             cooperative_id=item.scope or None)}
             for item in documents.available_documents(user, order)]
    return jsonify({"items": items})


@bp.get("/orders/<int:order_id>/documents/<any(purchase_order, delivery_note, payment_receipt):kind>.pdf")
@api_doc(files=("pdf",), query={"cooperative_id": fields.Integer(validate=validate.Range(min=1), metadata={
    "description": "送货单所属合作社（不填：整单）"})}, errors=(403, 409))
@require_login
def get_document(order_id: int, kind: str):
    """One document as PDF, issued on the first request and frozen (``X-Content-SHA256``)."""
    document = documents.get_document(current_user(), order_id, kind, _scope_arg())
    return file_download(document.content, f"{document.label}-{document.number}.pdf", document.sha256)


def _scope_arg() -> int:
    """``?cooperative_id=`` names a delivery note's cooperative (absent: the whole order)."""
    raw = request.args.get("cooperative_id")
    if raw in (None, ""):
        return 0
    value = whole_number(raw)
    if not value:
        raise ValidationFailed(fields={"cooperative_id": ["必须是正整数"]})
    return value


# ---------------------------------------------------------------- settlement (结算)

@bp.get("/settlements")
@api_doc(query=SettlementQuerySchema, paged=True, response=SettlementStatementOutSchema, many=True)
@require_roles(*settlements.READ_ROLES)
def list_settlements():
    """Statements the caller may see (a cooperative: its own), newest period first."""
    filters = SettlementQuerySchema().load(request.args.to_dict())
    page = page_params()
    statements, total = settlements.list_statements(current_user(), **filters, offset=page.offset, limit=page.size)
    return jsonify(list_envelope([settlements.dump_statement(s) for s in statements], total, page))


@bp.post("/settlements")
@api_doc(request=SettlementIssueSchema, response=SettlementIssuedSchema, status=201, errors=(409,),
         also=((200, "本期没有待结算的款项，未出具结算单（items 为空）"),))
@require_roles(*settlements.SETTLEMENT_MANAGERS)
def issue_settlements():
    """Issue a period's statements (201 with those issued; 200 and none when nothing is left to settle)."""
    data = SettlementIssueSchema().load(json_body())
    issued = settlements.issue_statements(current_user(), data["period"], data["cooperative_id"])
    return jsonify({"items": [settlements.dump_statement(s) for s in issued]}), 201 if issued else 200


@bp.get("/settlements/<int:statement_id>")
@api_doc(response=SettlementStatementOutSchema)
@require_roles(*settlements.READ_ROLES)
def get_settlement(statement_id: int):
    """One statement with its frozen lines (404 for another cooperative's)."""
    return jsonify(settlements.dump_statement(settlements.get_statement(current_user(), statement_id), lines=True))


@bp.post("/settlements/<int:statement_id>/pay")
@api_doc(request=SettlementPaySchema, response=SettlementStatementOutSchema, errors=(409,))
@require_roles(*settlements.SETTLEMENT_MANAGERS)
def pay_settlement(statement_id: int):
    """Record the bank transfer that paid a statement (once; again: 409)."""
    data = SettlementPaySchema().load(json_body())
    return jsonify(settlements.dump_statement(settlements.pay_statement(current_user(), statement_id, data)))


@bp.get("/settlements/<int:statement_id>/statement.<any(csv, xlsx):extension>")
@api_doc(files=("csv", "xlsx"))
@require_roles(*settlements.READ_ROLES)
def download_settlement(statement_id: int, extension: str):
    """The statement as CSV or XLSX, with the SHA-256 of its frozen content (``content_sha256``, not
    of the file's bytes) in ``X-Statement-SHA256``."""
    statement = settlements.get_statement(current_user(), statement_id)
    return settlements.statement_download(statement, extension)
