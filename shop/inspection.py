"""验货 and the refunds it opens: the buyer inspects a delivered order line by line; what is
missing or refused is claimed back, and finance refunds (or declines) the claim.

For each line the buyer records the units received and, of those, the units refused for
quality. The shortfall is ordered − (received − refused); it is claimed at the line's own unit
price, capped by what the line still holds unrefunded. A claim is a ``RefundRequest``, not a
refund: money only moves when finance refunds it, and then it is taken from that line's own
allocations, so the village report and the unit's reserved share drop by exactly the value of
the goods that did not arrive, and no other village loses a fen.

Recording the inspection completes the order (that is what a canteen's audit asks for: a public
body's purchase is complete when its buyer has inspected it); it is kept as recorded.
"""
import sqlalchemy as sa

from certification import uploads
from core.audit import record_event
from core.db import transaction
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.models import Role, User
from core.money import format_yuan
from core.timeutil import utcnow
from shop import services
from shop.models import InspectionLine, Order, OrderInspection, RefundIntent, RefundRequest
from shop.states import OrderStatus

#: Where inspection photos are stored (``certification.uploads``).
PHOTO_KIND = "inspections"


def can_inspect(user: User, order: Order) -> bool:
    """True when ``user`` may record the 验货 of ``order`` now."""
    return order.buyer_id == user.id and _awaiting_inspection(order)


def _awaiting_inspection(order: Order) -> bool:
    """Every part shipped (or cancelled), something shipped, not completed yet."""
    if order.completed_at is not None or order.status not in (OrderStatus.SHIPPED.value,
                                                              OrderStatus.PARTIALLY_REFUNDED.value):
        return False
    statuses = {f.status for f in order.fulfilments}
    return "shipped" in statuses and statuses <= {"shipped", "cancelled"}


def record_inspection(user: User, order_id: int, data: dict, photo: bytes | None = None) -> Order:
    """Record the buyer's 验货 of a delivered order, complete it, and open a refund request for
    any shortfall.

    :param data: ``{"lines": [{"product_id", "received_quantity", "rejected_quantity", "note"}],
        "note": str}``, one entry per product of the order.
    :param photo: an optional picture of the problem (JPEG/PNG/WebP bytes).
    :raise NotFound: the caller cannot see the order.
    :raise Forbidden: not the order's buyer.
    :raise Conflict: not delivered yet, or already inspected (409).
    :raise ValidationFailed: a product missing or foreign, a quantity out of range, or a
        shortfall without a word on what was wrong (422); nothing is recorded.
    """
    order, _ = services.get_order(user, order_id)
    if order.buyer_id != user.id:
        raise Forbidden("只有下单人可以验货")
    stored_photo = uploads.store(PHOTO_KIND, uploads.process_image(photo, "photo")) if photo else None
    try:
        with transaction():
            order = services.lock_order(order_id)
            if order.completed_at is not None or db.session.scalar(
                    sa.select(OrderInspection.id).where(OrderInspection.order_id == order.id)) is not None:
                raise Conflict("该订单已验货", code="already_inspected")
            if not _awaiting_inspection(order):
                raise Conflict(f"订单当前状态为“{order.status_label}”，全部发货后才能验货", code="invalid_order_status")
            inspection = _inspection_rows(user, order, data)
            inspection.photo = stored_photo
            db.session.add(inspection)
            db.session.flush()
            summary = {"inspection_id": inspection.id, "claim_fen": inspection.claim_fen,
                       "lines": [[row.line.product_id, row.received_quantity, row.rejected_quantity, row.claim_fen]
                                 for row in inspection.lines]}
            if inspection.claim_fen:
                request = RefundRequest(order_id=order.id, inspection_id=inspection.id,
                                        amount_fen=inspection.claim_fen, requested_by_id=user.id,
                                        reason=_claim_reason(inspection), status="open")
                db.session.add(request)
                db.session.flush()
                summary["refund_request_id"] = request.id
            services.complete_locked(order, actor=user, comment=_outcome(inspection), data=summary)
    except BaseException:
        uploads.remove(PHOTO_KIND, stored_photo)
        raise
    return order


def _inspection_rows(user: User, order: Order, data: dict) -> OrderInspection:
    """Check the inspected quantities against the order and build the rows (not added yet).

    :raise ValidationFailed: every wrong entry, keyed like the request (``lines.0.received_quantity``).
    """
    lines_by_product = {line.product_id: line for line in order.lines}
    errors: dict = {}
    seen: dict[int, dict] = {}
    for index, entry in enumerate(data["lines"]):
        problems: dict[str, list[str]] = {}
        line = lines_by_product.get(entry["product_id"])
        if line is None:
            problems["product_id"] = ["该商品不在此订单中"]
        elif entry["product_id"] in seen:
            problems["product_id"] = ["同一商品只能填写一次"]
        else:
            if entry["received_quantity"] > line.quantity:
                problems["received_quantity"] = [f"不能超过订购数量 {line.quantity}{line.unit}"]
            if entry["rejected_quantity"] > entry["received_quantity"]:
                problems["rejected_quantity"] = ["不能超过实收数量"]
            seen[entry["product_id"]] = entry
        if problems:
            errors.setdefault("lines", {})[str(index)] = problems
    missing = [line for pid, line in lines_by_product.items() if pid not in seen]
    if missing:
        errors.setdefault("lines", {}).setdefault("_missing", []).extend(
            f"请填写“{line.product_name}”的实收数量" for line in missing)
    note = data.get("note", "").strip()
    if not errors:
        short = any(entry["received_quantity"] - entry["rejected_quantity"] < lines_by_product[pid].quantity
                    for pid, entry in seen.items())
        if short and not note and not any(entry.get("note", "").strip() for entry in seen.values()):
            errors["note"] = ["有短缺或质量问题时，请说明情况"]
    if errors:
        raise ValidationFailed("验货信息有误，请更正后再提交", code="invalid_inspection", fields=errors)
    inspection = OrderInspection(order_id=order.id, inspector_id=user.id, note=note, created_at=utcnow())
    for line in order.lines:
        entry = seen[line.product_id]
        accepted = entry["received_quantity"] - entry["rejected_quantity"]
        shortfall = line.quantity - accepted
        claim = min(shortfall * line.unit_price_fen, line.line_total_fen - line.refunded_fen)
        inspection.lines.append(InspectionLine(
            line_id=line.id, line=line, received_quantity=entry["received_quantity"],
            rejected_quantity=entry["rejected_quantity"], shortfall=shortfall, claim_fen=claim,
            note=entry.get("note", "").strip()))
    inspection.claim_fen = sum(row.claim_fen for row in inspection.lines)
    return inspection


def _claim_reason(inspection: OrderInspection) -> str:
    """What the refund request says, line by line (it is what finance reads)."""
    parts = []
    for row in inspection.lines:
        if row.shortfall:
            missing = row.line.quantity - row.received_quantity
            what = "，".join(text for text in (f"缺 {missing}{row.line.unit}" if missing else "",
                                               f"质量不合格 {row.rejected_quantity}{row.line.unit}"
                                               if row.rejected_quantity else "") if text)
            parts.append(f"{row.line.product_name}：{what}，{format_yuan(row.claim_fen)}")
    text = "验货短缺：" + "；".join(parts)
    return f"{text}。{inspection.note}" if inspection.note else text


def _outcome(inspection: OrderInspection) -> str:
    return f"验货完成，申请退款 {format_yuan(inspection.claim_fen)}" if inspection.claim_fen else "验货合格，已确认收货"


def inspection_of(order: Order) -> OrderInspection | None:
    """The order's 验货 record, if it has one."""
    return db.session.scalar(sa.select(OrderInspection).where(OrderInspection.order_id == order.id))


def refund_requests_of(order: Order) -> list[RefundRequest]:
    return list(db.session.scalars(sa.select(RefundRequest).where(RefundRequest.order_id == order.id)
                                   .order_by(RefundRequest.id)))


def open_refund_requests(limit: int = 50) -> list[RefundRequest]:
    """Claims waiting for finance, oldest first (the finance desk's list)."""
    return list(db.session.scalars(sa.select(RefundRequest).where(RefundRequest.status == "open")
                                   .order_by(RefundRequest.id).limit(limit)))


def list_refund_requests(status: str | None, offset: int, limit: int) -> tuple[list[RefundRequest], int]:
    query = sa.select(RefundRequest)
    if status:
        query = query.where(RefundRequest.status == status)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    return list(db.session.scalars(query.order_by(RefundRequest.id.desc()).offset(offset).limit(limit))), int(total)


def order_id_of_request(request_id: int) -> int:
    """:raise NotFound: no such refund request."""
    request = db.session.get(RefundRequest, request_id)
    if request is None:
        raise NotFound("退款申请不存在")
    return request.order_id


def decide_refund_request(user: User, request_id: int, data: dict) -> RefundRequest:
    """Finance refunds a 验货 claim (from the claimed lines' own allocations) or declines it.

    A claim larger than what a line still holds (finance refunded it by hand meanwhile) is
    refunded up to what is left; the refund request records the amount actually refunded.

    :param data: ``{"decision": "refund"|"decline", "comment": str}`` (comment required to decline).
    :raise Forbidden: not finance or an administrator.
    :raise NotFound: no such request.
    :raise Conflict: already decided, or nothing left to refund on its lines (409).
    """
    if not user.has_role(Role.FINANCE, Role.ADMIN):
        raise Forbidden("只有财务人员可以处理退款申请")
    request = db.session.get(RefundRequest, request_id)
    if request is None:
        raise NotFound("退款申请不存在")
    comment = data.get("comment", "").strip()
    with transaction():
        order = services.lock_order(request.order_id)
        db.session.refresh(request)
        if request.status != "open":
            raise Conflict(f"该退款申请{request.status_label}，不能重复处理", code="refund_request_decided")
        in_flight = db.session.scalar(sa.select(RefundIntent.id).where(
            RefundIntent.refund_request_id == request.id, RefundIntent.status == "pending"))
        if in_flight is not None:
            raise Conflict("该退款申请正在退款处理中，请稍后刷新查看结果", code="refund_in_progress")
        request.decided_by_id = user.id
        request.decided_at = utcnow()
        request.decision_comment = comment or None
        if data["decision"] == "decline":
            request.status = "declined"
            record_event(subject_type="order", subject_id=order.id, action="refund_request_declined", actor=user,
                         from_state=order.status, to_state=order.status, comment=comment,
                         data={"refund_request_id": request.id, "amount_fen": request.amount_fen})
            return request
        lines = {line.id: line for line in order.lines}
        wanted = {row.line_id: min(row.claim_fen, lines[row.line_id].line_total_fen - lines[row.line_id].refunded_fen)
                  for row in request.inspection.lines if row.claim_fen}
        amount = sum(wanted.values())
        if amount <= 0:
            raise Conflict("申请退款的商品已全部退款，无可退金额", code="nothing_to_refund")
        services.check_refundable(order, amount)
        # Reserved and committed here; the money moves below, outside this transaction (no lock
        # held while Stripe answers), and the request is marked refunded when the refund finishes.
        intent = services.reserve_refund(order, amount, request.reason, user, line_amounts=wanted,
                                         refund_request_id=request.id)
    services.carry_out_refund(intent.id)
    return db.session.get(RefundRequest, request_id, populate_existing=True)


def photo_path(user: User, order_id: int):
    """The stored 验货 photo of an order the caller may see.

    :raise NotFound: no such order for the caller, or no photo.
    """
    order, _ = services.get_order(user, order_id)
    inspection = inspection_of(order)
    path = uploads.stored_path(PHOTO_KIND, inspection.photo) if inspection and inspection.photo else None
    if path is None:
        raise NotFound("没有验货照片")
    return path
