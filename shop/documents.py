"""An order's paper trail as PDF: 采购单 (purchase order), 送货单 (delivery note, one per shipping
cooperative) and 付款回单 (payment receipt), in Chinese (reportlab's built-in CID font
STSong-Light, so no font file ships with the app and every PDF reader has the glyphs).

A document is issued the first time anyone may and does ask for it, once the fact it records has
happened (the order placed, the cooperative's part shipped, the payment received). From then on it
is frozen: its bytes and SHA-256 are stored and served unchanged, audited once at issue. Issuing
on demand keeps PDF rendering off the order, payment and shipping paths; what each document
states (lines, prices, payment, shipment) does not change after its event anyway, and the names
around it (a unit renamed later) are kept as they were at issue.
"""
import hashlib
import io
from dataclasses import dataclass

import sqlalchemy as sa
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from core.audit import record_event
from core.db import unique_or_conflict
from core.errors import Conflict, NotFound
from core.extensions import db
from core.models import Role, User
from core.money import format_yuan
from core.timeutil import to_shanghai, utcnow
from shop.models import CHANNEL_LABELS, DOCUMENT_KINDS, DOCUMENT_LABELS, PAYMENT_METHOD_LABELS, Order, OrderDocument
from shop.states import PAID_STATUSES

FONT = "STSong-Light"
PLATFORM = "湘西州消费帮扶服务平台 · 湘西香伴"


@dataclass(frozen=True)
class Available:
    """A document the viewer may download now (issued already or issuable on request)."""

    kind: str
    scope: int  # 0: the whole order; else the cooperative of a delivery note
    label: str
    issued: OrderDocument | None


def available_documents(viewer: User, order: Order) -> list[Available]:
    """The documents of ``order`` that ``viewer`` may download, in paper order.

    Buyer, members of its budget unit, finance and admin get all; a cooperative gets the
    delivery note of its own part only.
    """
    whole = _sees_whole_order(viewer, order)
    issued = {(doc.kind, doc.scope): doc for doc in db.session.scalars(
        sa.select(OrderDocument).where(OrderDocument.order_id == order.id))}
    found = []
    if whole and order.channel == "canteen":
        found.append(Available("purchase_order", 0, DOCUMENT_LABELS["purchase_order"],
                               issued.get(("purchase_order", 0))))
    for fulfilment in order.fulfilments:
        if fulfilment.shipped_at is None:
            continue
        if whole or viewer.cooperative_id == fulfilment.cooperative_id:
            found.append(Available("delivery_note", fulfilment.cooperative_id,
                                   f"{DOCUMENT_LABELS['delivery_note']}（{fulfilment.cooperative.name}）",
                                   issued.get(("delivery_note", fulfilment.cooperative_id))))
    if whole and order.paid_at is not None and order.status in {s.value for s in PAID_STATUSES}:
        found.append(Available("payment_receipt", 0, DOCUMENT_LABELS["payment_receipt"],
                               issued.get(("payment_receipt", 0))))
    return found


def order_for_documents(viewer: User, order_id: int) -> Order:
    """The order whose documents ``viewer`` may see.

    :raise NotFound: no such order, or none of its documents are the viewer's to see.
    """
    order = db.session.get(Order, order_id)
    if order is None or not _may_view(viewer, order):
        raise NotFound("订单不存在")
    return order


def get_document(viewer: User, order_id: int, kind: str, scope: int = 0) -> OrderDocument:
    """The frozen document, issuing it first if this is the first request.

    :raise NotFound: no such order or document for this viewer, or its event has not happened.
    """
    order = order_for_documents(viewer, order_id)
    if kind not in DOCUMENT_KINDS:
        raise NotFound("单据不存在")
    wanted = next((a for a in available_documents(viewer, order) if a.kind == kind and a.scope == scope), None)
    if wanted is None:
        raise NotFound("单据不存在（尚未生成或无权查看）")
    if wanted.issued is not None:
        return wanted.issued
    return _issue(viewer, order, kind, scope)


def _issue(viewer: User, order: Order, kind: str, scope: int) -> OrderDocument:
    """Render, store and audit the document; two first requests at once keep the first one."""
    content = render(order, kind, scope)
    digest = hashlib.sha256(content).hexdigest()
    number = f"{_PREFIX[kind]}-{order.number}" + (f"-{scope}" if scope else "")
    try:
        with unique_or_conflict("单据刚刚生成，请重试", "document_issued"):
            document = OrderDocument(order_id=order.id, kind=kind, scope=scope, number=number, issued_at=utcnow(),
                                     sha256=digest, content=content)
            db.session.add(document)
            db.session.flush()
            record_event(subject_type="order", subject_id=order.id, action="document_issued", actor=viewer,
                         from_state=order.status, to_state=order.status, comment=DOCUMENT_LABELS[kind],
                         data={"kind": kind, "scope": scope, "number": number, "sha256": digest})
    except Conflict:  # a concurrent first request issued it: that one is the document
        existing = db.session.scalar(sa.select(OrderDocument).where(
            OrderDocument.order_id == order.id, OrderDocument.kind == kind, OrderDocument.scope == scope))
        if existing is None:
            raise
        return existing
    return document


_PREFIX = {"purchase_order": "PO", "delivery_note": "DN", "payment_receipt": "RC"}


def _sees_whole_order(viewer: User, order: Order) -> bool:
    if order.buyer_id == viewer.id or viewer.has_role(Role.FINANCE, Role.ADMIN):
        return True
    # Colleagues of the buying canteen file the same purchase.
    return (order.budget_unit_id is not None and viewer.has_role(Role.CANTEEN_BUYER)
            and viewer.budget_unit_id == order.budget_unit_id)


def _may_view(viewer: User, order: Order) -> bool:
    if _sees_whole_order(viewer, order):
        return True
    return viewer.cooperative_id is not None and any(f.cooperative_id == viewer.cooperative_id
                                                     for f in order.fulfilments)


# ---------------------------------------------------------------- rendering

def _font() -> str:
    if FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(FONT))
    return FONT


def _styles() -> dict[str, ParagraphStyle]:
    font = _font()
    return {
        "title": ParagraphStyle("title", fontName=font, fontSize=18, leading=24, alignment=1),
        "platform": ParagraphStyle("platform", fontName=font, fontSize=9, leading=12, alignment=1,
                                   textColor=colors.grey),
        "body": ParagraphStyle("body", fontName=font, fontSize=10, leading=15),
        "cell": ParagraphStyle("cell", fontName=font, fontSize=9, leading=12),
    }


def _local(moment) -> str:
    return to_shanghai(moment).strftime("%Y-%m-%d %H:%M") if moment else "—"


def render(order: Order, kind: str, scope: int = 0) -> bytes:
    """The PDF of one document of ``order`` as it stands now (``_issue`` freezes it)."""
    styles = _styles()
    lines = [line for line in order.lines if not scope or line.cooperative_id == scope]
    story = [Paragraph(PLATFORM, styles["platform"]), Paragraph(DOCUMENT_LABELS[kind], styles["title"]),
             Spacer(1, 4 * mm)]
    facts = [("订单号", order.number), ("下单时间", _local(order.created_at)),
             ("渠道", CHANNEL_LABELS[order.channel])]
    buyer = order.buyer
    unit = buyer.budget_unit if order.budget_unit_id else None
    facts.append(("采购单位" if unit else "购买人", unit.name if unit else buyer.display_name))
    if order.purchase_order_no:
        facts.append(("采购单号", order.purchase_order_no))
    if order.delivery_date:
        facts.append(("希望送达", order.delivery_date.isoformat()))
    facts.append(("收货", f"{order.shipping_name} {order.shipping_phone} {order.shipping_address}"))
    if kind == "delivery_note":
        fulfilment = next(f for f in order.fulfilments if f.cooperative_id == scope)
        facts += [("发货合作社", fulfilment.cooperative.name), ("发货时间", _local(fulfilment.shipped_at)),
                  ("承运", f"{fulfilment.carrier or ''} {fulfilment.tracking_number or ''}".strip() or "—")]
    if kind == "payment_receipt":
        facts += [("付款方式", PAYMENT_METHOD_LABELS.get(order.payment_method, order.payment_method)),
                  ("到账时间", _local(order.paid_at)), ("付款金额", format_yuan(order.total_fen))]
        if order.payment_reference:
            facts.append(("银行流水号", order.payment_reference))
        if order.payment_provider == "sandbox":
            facts.append(("说明", "模拟支付（离线演示），未真实收款"))
    if order.invoice_title:
        facts.append(("发票抬头", f"{order.invoice_title}（{order.invoice_tax_id}）"))
    for name, value in facts:
        story.append(Paragraph(f"{name}：{_escape(value)}", styles["body"]))
    story.append(Spacer(1, 4 * mm))

    rows = [["品名", "单位", "数量", "单价", "金额"]]
    for line in lines:
        rows.append([Paragraph(_escape(line.product_name), styles["cell"]), line.unit, str(line.quantity),
                     format_yuan(line.unit_price_fen), format_yuan(line.line_total_fen)])
    rows.append(["合计", "", str(sum(line.quantity for line in lines)), "",
                 format_yuan(sum(line.line_total_fen for line in lines))])
    table = Table(rows, colWidths=[70 * mm, 18 * mm, 20 * mm, 30 * mm, 32 * mm], repeatRows=1)
    table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, -1), _font(), 9),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
        ("ALIGN", (2, 1), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
    ]))
    story += [table, Spacer(1, 10 * mm)]
    signature = {"purchase_order": "采购经办人：＿＿＿＿＿＿　　审批人：＿＿＿＿＿＿　　日期：＿＿＿＿",
                 "delivery_note": "送货人：＿＿＿＿＿＿　　验收人（签字）：＿＿＿＿＿＿　　验收日期：＿＿＿＿",
                 "payment_receipt": "本回单由平台根据到账记录生成，可在平台按订单号核验。"}[kind]
    story.append(Paragraph(signature, styles["body"]))
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, title=f"{DOCUMENT_LABELS[kind]} {order.number}", author=PLATFORM,
                      leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=15 * mm).build(story)
    return buffer.getvalue()


def _escape(text) -> str:
    """Paragraph text is a small markup language: a cooperative's ``<`` or ``&`` must stay text."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
