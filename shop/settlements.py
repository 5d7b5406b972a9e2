"""Settlement (结算): what the platform owes each cooperative, one frozen statement per period.

Why here, in ``shop`` and not in ``shop/reports``: a statement is a money obligation built from
shop's own movements (order allocations and refund parts, ``shop/models.py``) and it writes rows
(issue, pay); the reports package only reads. It is a use-case module like ``approval.py`` or
``inspection.py`` (it commits its own transactions); the reports' reconciliation calls
``reconcile_settlements`` to prove statements and village sales agree.

How a figure is made: the same movements the village sales report counts (a sale is the goods
value of a paid order line net of refunds, ``shop/sales.py``), credited to the cooperative whose
product the order line is:

- a **sale movement** is one ``OrderAllocation`` once paid: ``+amount_fen`` at ``paid_at``;
- a **refund movement** is one ``RefundAllocation`` (the part of a refund taken from one
  allocation): ``-amount_fen`` at the refund's ``created_at``.

Each movement is settled by exactly one statement: the ``SettlementLine`` that freezes it carries
its id under a unique key (``allocation_id`` for sales, ``refund_part_id`` for refunds). Issuing a
statement for a period (an Asia/Shanghai calendar month, ``YYYY-MM``) takes every movement of the
cooperative that happened before the period's end and is not settled yet. So a refund arriving
after a statement was issued leaves that statement as it is and lands in the next period's
statement as a negative line; a payment confirmed late (a bank transfer dated back) lands in the
next statement too. Summed over all statements plus what is not settled yet, a cooperative's
figure equals its village sales across the same movements: nothing counted twice, nothing lost
(``reconcile_settlements`` proves it, from ``flask --app wsgi reports reconcile``).

Frozen: totals, lines and the SHA-256 over them (``content_sha256``) are written at issue and
never updated; only the payment (date, bank reference, who) is added once.

Nothing to pay: a statement whose net is zero or negative (a period with only refunds, say a late
refund of an order settled before) records no payment: ``pay_statement`` refuses it (409
``nothing_to_pay``) and it stays issued, as the record of what the cooperative owes back. The
platform offsets a negative amount against its next payment to that cooperative; the next
statement itself is not changed (frozen, and every movement is settled by exactly one statement),
so finance pays that statement's net less what is owed and notes it with the bank reference.
Such statements are not counted as awaiting payment on the settlement desk.

Concurrency: issuing locks each cooperative's row (PostgreSQL; SQLite serialises writers) before
reading its unsettled movements, so two issues of one cooperative run one after the other and
the second sees the first's statement (409) or only what is left; the unique keys on
(cooperative, period) and on each movement are the last net (``unique_or_conflict``, 409).
Statements never touch the order or allocation rows, so they cannot deadlock with refunds.
"""
import csv
import hashlib
import io
import json
import re
from datetime import timezone

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.orm import aliased
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from core.audit import record_event
from core.db import transaction, unique_or_conflict
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.http import file_download
from core.models import Cooperative, Role, User, Village
from core.money import format_yuan
from core.notifications import active_users, notify
from core.timeutil import (isoformat, shanghai_month_bounds, shanghai_today, shanghai_year_bounds, to_shanghai,
                           utcnow)
from shop import stock
from shop.models import (STATEMENT_PERIOD_PATTERN, STATEMENT_STATUS_LABELS, Order, OrderAllocation, OrderLine,
                         Refund, RefundAllocation, SettlementLine, SettlementStatement)
from shop.reports.exports import cell_values, yuan_decimal
from shop.sales import NET_SALES_FEN, paid_in_year_clause

#: Who sees every statement; a cooperative member sees its own cooperative's only.
ALL_STATEMENTS_ROLES = (Role.FINANCE, Role.ADMIN, Role.OFFICIAL)
#: Who issues statements and records their payment.
SETTLEMENT_MANAGERS = (Role.FINANCE, Role.ADMIN)
READ_ROLES = (*ALL_STATEMENTS_ROLES, Role.COOPERATIVE)

_PERIOD = re.compile(STATEMENT_PERIOD_PATTERN)


# ---------------------------------------------------------------- periods

def parse_period(text) -> tuple[int, int]:
    """Read a period ``YYYY-MM`` (an Asia/Shanghai calendar month).

    :raise ValidationFailed: not a month between 2000-01 and 2100-12 (422).
    """
    match = _PERIOD.match(text.strip()) if isinstance(text, str) else None
    if not match or not 2000 <= int(match.group(1)) <= 2100 or not 1 <= int(match.group(2)) <= 12:
        raise ValidationFailed("结算期须为“年-月”，如 2026-11", code="invalid_period",
                               fields={"period": ["须为“年-月”，如 2026-11"]})
    return int(match.group(1)), int(match.group(2))


def re_period_ok(text: str) -> bool:
    """True when ``text`` is a well-formed period (for optional filters that ignore junk)."""
    try:
        parse_period(text)
    except ValidationFailed:
        return False
    return True


def period_label(period: str) -> str:
    """``2026-11`` → ``2026年11月``."""
    year, month = period.split("-")
    return f"{year}年{int(month)}月"


def last_closed_period() -> str:
    """The latest period that is over (last month, Asia/Shanghai): what finance issues by default."""
    today = shanghai_today()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{year:04d}-{month:02d}"


# ---------------------------------------------------------------- movements

def _village_label():
    return Village.county + Village.township + Village.name


#: "A statement has settled this sale / this refund part" (correlated on the outer query's row).
_SALE_SETTLED = sa.select(SettlementLine.id).where(SettlementLine.allocation_id == OrderAllocation.id).exists()
_REFUND_SETTLED = sa.select(SettlementLine.id).where(SettlementLine.refund_part_id == RefundAllocation.id).exists()


def _unsettled_sales(cutoff, cooperative_id: int | None = None):
    """Paid allocations before ``cutoff`` that no statement has settled yet."""
    query = (sa.select(OrderAllocation, OrderLine.cooperative_id, OrderLine.product_name, Order.number,
                       _village_label().label("village_name"))
             .join(OrderLine, OrderLine.id == OrderAllocation.line_id)
             .join(Order, Order.id == OrderAllocation.order_id)
             .join(Village, Village.id == OrderAllocation.village_id)
             .where(OrderAllocation.paid_at.is_not(None), OrderAllocation.paid_at < cutoff, ~_SALE_SETTLED)
             .order_by(OrderAllocation.paid_at, OrderAllocation.id))
    if cooperative_id is not None:
        query = query.where(OrderLine.cooperative_id == cooperative_id)
    return query


def _unsettled_refunds(cutoff, cooperative_id: int | None = None):
    """Refund parts recorded before ``cutoff`` that no statement has settled yet."""
    query = (sa.select(RefundAllocation, Refund.created_at, OrderAllocation, OrderLine.cooperative_id,
                       OrderLine.product_name, Order.number, _village_label().label("village_name"))
             .join(Refund, Refund.id == RefundAllocation.refund_id)
             .join(OrderAllocation, OrderAllocation.id == RefundAllocation.allocation_id)
             .join(OrderLine, OrderLine.id == OrderAllocation.line_id)
             .join(Order, Order.id == OrderAllocation.order_id)
             .join(Village, Village.id == OrderAllocation.village_id)
             .where(Refund.created_at < cutoff, ~_REFUND_SETTLED)
             .order_by(Refund.created_at, RefundAllocation.id))
    if cooperative_id is not None:
        query = query.where(OrderLine.cooperative_id == cooperative_id)
    return query


def _cooperatives_with_movements(cutoff, cooperative_id: int | None) -> list[int]:
    """Cooperatives that have something to settle before ``cutoff`` (one, if asked for one)."""
    sales = _unsettled_sales(cutoff, cooperative_id).with_only_columns(OrderLine.cooperative_id).order_by(None)
    refunds = _unsettled_refunds(cutoff, cooperative_id).with_only_columns(OrderLine.cooperative_id).order_by(None)
    return sorted(set(db.session.scalars(sales)) | set(db.session.scalars(refunds)))


# ---------------------------------------------------------------- digest

def content_digest(statement: SettlementStatement, lines=None) -> str:
    """SHA-256 over what a statement says: its cooperative, period, totals and every line.

    Lines are taken in movement order (kind, movement id), not row order, and moments in UTC
    (a datetime still held as given, say in Asia/Shanghai, is the same instant read back as
    UTC), so the same content always gives the same digest.
    """
    lines = statement.lines if lines is None else lines
    rows = sorted(([line.kind, line.allocation_id, line.refund_part_id, line.source_allocation_id, line.order_number,
                    line.product_id, line.product_name, line.village_id, line.village_name, line.quantity,
                    int(line.amount_fen), _utc_iso(line.occurred_at)] for line in lines),
                  key=lambda row: (row[0], row[1] or 0, row[2] or 0))
    payload = json.dumps([statement.cooperative_id, statement.period, _utc_iso(statement.cutoff_at),
                          int(statement.gross_fen), int(statement.refunds_fen), int(statement.net_fen),
                          int(statement.line_count), rows], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _utc_iso(moment) -> str:
    """An aware moment as ISO 8601 in UTC (how the database gives it back)."""
    return moment.astimezone(timezone.utc).isoformat()


# ---------------------------------------------------------------- issue

def _lock_cooperative(cooperative_id: int) -> None:
    """Serialise issuing for one cooperative (PostgreSQL row lock; SQLite holds the write lock)."""
    query = sa.select(Cooperative.id).where(Cooperative.id == cooperative_id)
    if stock.dialect() == "postgresql":
        query = query.with_for_update()
    db.session.execute(query)


def _build_statement(actor: User | None, cooperative_id: int, period: str, cutoff) -> SettlementStatement | None:
    """Freeze every unsettled movement of one cooperative before ``cutoff`` into a new statement."""
    lines = []
    for allocation, _, product_name, number, village_name in db.session.execute(_unsettled_sales(cutoff, cooperative_id)):
        lines.append(SettlementLine(kind="sale", allocation_id=allocation.id, source_allocation_id=allocation.id,
                                    order_number=number, product_id=allocation.product_id, product_name=product_name,
                                    village_id=allocation.village_id, village_name=village_name,
                                    quantity=allocation.quantity, amount_fen=int(allocation.amount_fen),
                                    occurred_at=allocation.paid_at))
    for part, refunded_at, allocation, _, product_name, number, village_name in db.session.execute(
            _unsettled_refunds(cutoff, cooperative_id)):
        lines.append(SettlementLine(kind="refund", refund_part_id=part.id, source_allocation_id=allocation.id,
                                    order_number=number, product_id=allocation.product_id, product_name=product_name,
                                    village_id=allocation.village_id, village_name=village_name, quantity=None,
                                    amount_fen=-int(part.amount_fen), occurred_at=refunded_at))
    if not lines:
        return None
    gross = sum(line.amount_fen for line in lines if line.kind == "sale")
    refunds = -sum(line.amount_fen for line in lines if line.kind == "refund")
    statement = SettlementStatement(cooperative_id=cooperative_id, period=period, cutoff_at=cutoff, status="issued",
                                    gross_fen=gross, refunds_fen=refunds, net_fen=gross - refunds,
                                    line_count=len(lines), issued_at=utcnow(),
                                    issued_by_id=actor.id if actor else None)
    statement.content_sha256 = content_digest(statement, lines)
    statement.lines = lines
    db.session.add(statement)
    return statement


def issue_statements(actor: User | None, period: str, cooperative_id: int | None = None) -> list[SettlementStatement]:
    """Issue the statements of ``period`` (``YYYY-MM``, Asia/Shanghai) for every cooperative with
    something to settle, or for one; return those issued (empty when there was nothing to settle).

    ``actor`` None is the command line (recorded as the system).

    :raise Forbidden: not finance or an administrator.
    :raise ValidationFailed: a malformed period, or one not over yet in Asia/Shanghai (422).
    :raise NotFound: no such cooperative.
    :raise Conflict: the period's statements were already issued (also when another issue won a race).
    """
    if actor is not None and not actor.has_role(*SETTLEMENT_MANAGERS):
        raise Forbidden("只有财务人员可以出具结算单")
    year, month = parse_period(period)
    period = f"{year:04d}-{month:02d}"
    _, cutoff = shanghai_month_bounds(year, month)
    if utcnow() < cutoff:
        raise ValidationFailed(f"{period_label(period)}尚未结束（北京时间），不能出具结算单", code="period_not_over",
                               fields={"period": ["结算期尚未结束"]})
    if cooperative_id is not None and db.session.get(Cooperative, cooperative_id) is None:
        raise NotFound("合作社不存在")
    issued, already = [], []
    with unique_or_conflict("该合作社本期结算单已出具", "statement_exists"):
        stock.take_write_lock()
        for candidate in _cooperatives_with_movements(cutoff, cooperative_id):
            _lock_cooperative(candidate)
            exists = db.session.scalar(sa.select(SettlementStatement.id).where(
                SettlementStatement.cooperative_id == candidate, SettlementStatement.period == period))
            if exists is not None:
                already.append(exists)
                continue
            statement = _build_statement(actor, candidate, period, cutoff)
            if statement is not None:
                issued.append(statement)
        if not issued and (already or _period_issued(period, cooperative_id)):
            raise Conflict(f"{period_label(period)}的结算单已出具，本期没有新的待结算款项", code="statement_exists")
        db.session.flush()
        for statement in issued:
            record_event(subject_type="settlement_statement", subject_id=statement.id, action="issued", actor=actor,
                         to_state="issued", comment=f"{period_label(period)}结算单",
                         data={"cooperative_id": statement.cooperative_id, "period": period,
                               "gross_fen": statement.gross_fen, "refunds_fen": statement.refunds_fen,
                               "net_fen": statement.net_fen, "line_count": statement.line_count,
                               "content_sha256": statement.content_sha256})
            notify(active_users(Role.COOPERATIVE, cooperative_ids=[statement.cooperative_id]), "statement_issued",
                   f"{period_label(period)}结算单已出具：应结 {format_yuan(statement.net_fen)}",
                   f"平台已出具本社{period_label(period)}的结算单，共 {statement.line_count} 笔款项，"
                   f"应结金额 {format_yuan(statement.net_fen)}。"
                   + ("付款后会再通知。" if statement.net_fen > 0 else nothing_to_pay_text(statement) + "。"),
                   f"/settlements/{statement.id}")
    return issued


def _period_issued(period: str, cooperative_id: int | None) -> bool:
    query = sa.select(SettlementStatement.id).where(SettlementStatement.period == period)
    if cooperative_id is not None:
        query = query.where(SettlementStatement.cooperative_id == cooperative_id)
    return db.session.scalar(query.limit(1)) is not None


# ---------------------------------------------------------------- pay

def nothing_to_pay_text(statement: SettlementStatement) -> str:
    """Why a statement of net zero or less is not paid (the API's 409 and the page say the same)."""
    if statement.net_fen == 0:
        return "该结算单应结金额为 ¥0.00，无需付款"
    return (f"该结算单应结金额为 {format_yuan(statement.net_fen)}（退款多于销售），无需付款；"
            f"合作社应退回的 {format_yuan(-statement.net_fen)} 由平台在下次向该合作社付款时抵扣")


def pay_statement(actor: User, statement_id: int, data: dict) -> SettlementStatement:
    """Record that the platform paid a statement to the cooperative (once), with the bank reference.

    :raise Forbidden: not finance or an administrator.
    :raise NotFound: no such statement.
    :raise ValidationFailed: a payment date in the future or before the statement was issued (422).
    :raise Conflict: already paid, or nothing to pay: a net of zero or less (409; module docstring).
    """
    if not actor.has_role(*SETTLEMENT_MANAGERS):
        raise Forbidden("只有财务人员可以登记结算付款")
    with transaction():
        stock.take_write_lock()
        query = (sa.select(SettlementStatement).where(SettlementStatement.id == statement_id)
                 .execution_options(populate_existing=True))
        if stock.dialect() == "postgresql":
            query = query.with_for_update()
        statement = db.session.scalar(query)
        if statement is None:
            raise NotFound("结算单不存在")
        if statement.status == "paid":
            raise Conflict(f"该结算单已于 {statement.paid_on} 付款（银行流水号 {statement.bank_reference}），不能重复登记",
                           code="statement_already_paid")
        if statement.net_fen <= 0:
            raise Conflict(nothing_to_pay_text(statement), code="nothing_to_pay")
        paid_on = data.get("paid_on") or shanghai_today()
        if paid_on > shanghai_today():
            raise ValidationFailed("付款日期不能晚于今天", fields={"paid_on": ["不能晚于今天"]})
        if paid_on < to_shanghai(statement.issued_at).date():
            raise ValidationFailed("付款日期不能早于结算单出具日期", fields={"paid_on": ["不能早于出具日期"]})
        statement.status = "paid"
        statement.paid_at = utcnow()
        statement.paid_on = paid_on
        statement.paid_by_id = actor.id
        statement.bank_reference = data["bank_reference"].strip()
        record_event(subject_type="settlement_statement", subject_id=statement.id, action="paid", actor=actor,
                     from_state="issued", to_state="paid", comment=statement.bank_reference,
                     data={"bank_reference": statement.bank_reference, "paid_on": paid_on.isoformat(),
                           "net_fen": statement.net_fen, "cooperative_id": statement.cooperative_id})
        notify(active_users(Role.COOPERATIVE, cooperative_ids=[statement.cooperative_id]), "statement_paid",
               f"{period_label(statement.period)}结算款已支付：{format_yuan(statement.net_fen)}",
               f"平台已于 {paid_on.isoformat()} 支付本社{period_label(statement.period)}的结算款 "
               f"{format_yuan(statement.net_fen)}，银行流水号 {statement.bank_reference}。",
               f"/settlements/{statement.id}")
    return statement


# ---------------------------------------------------------------- read

def _visible(actor: User):
    """Conditions limiting statements to what ``actor`` may see.

    :raise Forbidden: a role that sees no statements.
    """
    if actor.has_role(*ALL_STATEMENTS_ROLES):
        return []
    if actor.has_role(Role.COOPERATIVE) and actor.cooperative_id:
        return [SettlementStatement.cooperative_id == actor.cooperative_id]
    raise Forbidden("无权查看结算单")


def list_statements(actor: User, *, period: str | None = None, cooperative_id: int | None = None,
                    status: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[SettlementStatement], int]:
    """Statements the actor may see, newest period first; and how many match.

    :raise Forbidden: a role that sees no statements.
    """
    conditions = _visible(actor)
    if period:
        year, month = parse_period(period)
        conditions.append(SettlementStatement.period == f"{year:04d}-{month:02d}")
    if cooperative_id is not None:
        conditions.append(SettlementStatement.cooperative_id == cooperative_id)
    if status:
        conditions.append(SettlementStatement.status == status)
    total = db.session.scalar(sa.select(sa.func.count(SettlementStatement.id)).where(*conditions)) or 0
    statements = db.session.scalars(
        sa.select(SettlementStatement).where(*conditions)
        .options(orm.joinedload(SettlementStatement.cooperative))  # every row shows its cooperative's name
        .order_by(SettlementStatement.period.desc(), SettlementStatement.cooperative_id, SettlementStatement.id)
        .offset(offset).limit(limit)).all()
    return list(statements), total


def get_statement(actor: User, statement_id: int) -> SettlementStatement:
    """One statement, if the actor may see it.

    :raise NotFound: no such statement, or another cooperative's (its existence is not told).
    :raise Forbidden: a role that sees no statements.
    """
    conditions = _visible(actor)
    statement = db.session.scalar(sa.select(SettlementStatement).where(
        SettlementStatement.id == statement_id, *conditions))
    if statement is None:
        raise NotFound("结算单不存在")
    return statement


def settlement_overview() -> dict:
    """Figures for the settlement desk: the default period and how much is unpaid."""
    unpaid = db.session.execute(sa.select(sa.func.count(SettlementStatement.id),
                                          sa.func.coalesce(sa.func.sum(SettlementStatement.net_fen), 0))
                                .where(SettlementStatement.status == "issued", SettlementStatement.net_fen > 0)).one()
    return {"default_period": last_closed_period(), "unpaid_count": int(unpaid[0]), "unpaid_fen": int(unpaid[1])}


# ---------------------------------------------------------------- files

#: (header, line → value) — Chinese headers, fixed so spreadsheets built on them keep working.
LINE_COLUMNS = (
    ("类型", lambda line: line.kind_label),
    ("订单号", lambda line: line.order_number),
    ("产品", lambda line: line.product_name),
    ("产地村", lambda line: line.village_name),
    ("数量", lambda line: line.quantity if line.quantity is not None else ""),
    ("金额（元）", lambda line: yuan_decimal(line.amount_fen)),
    ("发生时间（北京时间）", lambda line: to_shanghai(line.occurred_at).strftime("%Y-%m-%d %H:%M:%S")),
)


def _summary(statement: SettlementStatement) -> list[tuple[str, object]]:
    return [
        ("结算单编号", statement.id),
        ("合作社", statement.cooperative.name),
        ("统一社会信用代码", statement.cooperative.credit_code),
        ("结算期", period_label(statement.period)),
        ("状态", STATEMENT_STATUS_LABELS[statement.status]),
        ("销售额（元）", yuan_decimal(statement.gross_fen)),
        ("退款（元）", yuan_decimal(statement.refunds_fen)),
        ("应结算金额（元）", yuan_decimal(statement.net_fen)),
        ("明细笔数", statement.line_count),
        ("出具时间", to_shanghai(statement.issued_at).strftime("%Y-%m-%d %H:%M")),
        ("付款日期", statement.paid_on.isoformat() if statement.paid_on else ""),
        ("银行流水号", statement.bank_reference or ""),
        ("口径", "已付款订单的商品金额（计入付款时间所在期）减去退款（计入退款时间所在期），与村级销售报表同源；"
                 "出具后不再改动"),
        ("校验码（SHA-256）", statement.content_sha256),
    ]


def statement_filename(statement: SettlementStatement, extension: str) -> str:
    """结算单_测试合作社_2026年11月.csv"""
    return f"结算单_{statement.cooperative.name}_{period_label(statement.period)}.{extension}"


def statement_file(statement: SettlementStatement, extension: str) -> tuple[bytes, str]:
    """The statement as CSV (UTF-8 with BOM: summary, blank row, lines) or XLSX (a sheet each).

    :raise NotFound: an extension other than csv or xlsx.
    """
    if extension == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        for label, value in _summary(statement):
            writer.writerow([label, value])
        writer.writerow([])
        writer.writerow([header for header, _ in LINE_COLUMNS])
        for line in statement.lines:
            writer.writerow([value(line) for _, value in LINE_COLUMNS])
        return ("\ufeff" + out.getvalue()).encode("utf-8"), statement_filename(statement, "csv")
    if extension == "xlsx":
        book = Workbook()
        sheet = book.active
        sheet.title = "结算单"
        money = ("销售额（元）", "退款（元）", "应结算金额（元）")
        for label, value in _summary(statement):
            sheet.append(cell_values([label, value]))
            if label in money:
                sheet.cell(row=sheet.max_row, column=2).number_format = "¥#,##0.00"
        sheet.column_dimensions["A"].width = 20
        sheet.column_dimensions["B"].width = 70
        details = book.create_sheet("明细")
        details.append(cell_values([header for header, _ in LINE_COLUMNS]))
        for cell in details[1]:
            cell.font = Font(bold=True)
            cell.alignment = Alignment(horizontal="center")
        for line in statement.lines:
            details.append(cell_values([value(line) for _, value in LINE_COLUMNS]))
            details.cell(row=details.max_row, column=6).number_format = "¥#,##0.00"
        for index, width in enumerate((8, 20, 24, 30, 8, 14, 20), start=1):
            details.column_dimensions[get_column_letter(index)].width = width
        details.freeze_panes = "A2"
        out = io.BytesIO()
        book.save(out)
        return out.getvalue(), statement_filename(statement, "xlsx")
    raise NotFound("不支持的文件格式")


def statement_download(statement: SettlementStatement, extension: str):
    """The statement file as a download. ``X-Statement-SHA256`` carries the statement's content
    digest (``content_sha256``, what reconcile checks), not a hash of the file's bytes, so it is
    not named ``X-Content-SHA256`` as on the order documents.

    :raise NotFound: an extension other than csv or xlsx.
    """
    response = file_download(*statement_file(statement, extension))
    response.headers["X-Statement-SHA256"] = statement.content_sha256
    return response


def dump_statement(statement: SettlementStatement, *, lines: bool = False) -> dict:
    """A statement as the API shows it (with its lines on request)."""
    body = {
        "id": statement.id, "cooperative_id": statement.cooperative_id, "cooperative": statement.cooperative.name,
        "period": statement.period, "status": statement.status, "status_label": statement.status_label,
        "gross_fen": int(statement.gross_fen), "refunds_fen": int(statement.refunds_fen),
        "net_fen": int(statement.net_fen), "net": format_yuan(statement.net_fen), "line_count": statement.line_count,
        "content_sha256": statement.content_sha256, "issued_at": isoformat(statement.issued_at),
        "issued_by_id": statement.issued_by_id, "paid_at": isoformat(statement.paid_at),
        "paid_on": statement.paid_on.isoformat() if statement.paid_on else None,
        "paid_by_id": statement.paid_by_id, "bank_reference": statement.bank_reference,
    }
    if lines:
        body["lines"] = [{"kind": line.kind, "order_number": line.order_number, "product_id": line.product_id,
                          "product_name": line.product_name, "village_id": line.village_id,
                          "village": line.village_name, "quantity": line.quantity, "amount_fen": int(line.amount_fen),
                          "occurred_at": isoformat(line.occurred_at)} for line in statement.lines]
    return body


# ---------------------------------------------------------------- reconciliation

def reconcile_settlements(year: int) -> list[dict]:
    """Prove the statements say what the movements say; return the problems found (empty: none).

    1. Every statement of a period in ``year``: its totals equal the sum of its lines, each line
       equals the movement it settled (belongs to the statement's cooperative, and happened
       before the statement's cutoff: a sale's payment, a refund's ``created_at``), and the
       SHA-256 over it is the one written at issue.
    2. For every cooperative, over the allocations paid in ``year`` (the village report's year):
       what statements settled + what is not settled yet == its village sales (net of refunds);
       and over every cooperative, that total equals the village report's summary for the year.
    """
    from shop.reports.models import VillageMonthSales

    problems: list[dict] = []
    statements = db.session.scalars(sa.select(SettlementStatement).where(
        SettlementStatement.period.like(f"{year:04d}-%")).order_by(SettlementStatement.id)).all()
    for statement in statements:
        problems.extend(_check_statement(statement))

    start, end = shanghai_year_bounds(year)
    in_year = paid_in_year_clause(year)
    coop = OrderLine.cooperative_id
    village = _by_cooperative(sa.select(coop, sa.func.sum(NET_SALES_FEN))
                              .join(OrderLine, OrderLine.id == OrderAllocation.line_id).where(in_year).group_by(coop))
    source = aliased(OrderAllocation)
    settled = _by_cooperative(
        sa.select(SettlementStatement.cooperative_id, sa.func.sum(SettlementLine.amount_fen))
        .join(SettlementStatement, SettlementStatement.id == SettlementLine.statement_id)
        .join(source, source.id == SettlementLine.source_allocation_id)
        .where(source.paid_at >= start, source.paid_at < end).group_by(SettlementStatement.cooperative_id))
    unsettled_sales = _by_cooperative(
        sa.select(coop, sa.func.sum(OrderAllocation.amount_fen))
        .join(OrderLine, OrderLine.id == OrderAllocation.line_id).where(in_year, ~_SALE_SETTLED).group_by(coop))
    unsettled_refunds = _by_cooperative(
        sa.select(coop, sa.func.sum(RefundAllocation.amount_fen))
        .join(OrderAllocation, OrderAllocation.id == RefundAllocation.allocation_id)
        .join(OrderLine, OrderLine.id == OrderAllocation.line_id).where(in_year, ~_REFUND_SETTLED).group_by(coop))
    names = dict(db.session.execute(sa.select(Cooperative.id, Cooperative.name)).all())
    for cooperative_id in sorted(village.keys() | settled.keys() | unsettled_sales.keys() | unsettled_refunds.keys()):
        settled_fen = settled.get(cooperative_id, 0)
        unsettled_fen = unsettled_sales.get(cooperative_id, 0) - unsettled_refunds.get(cooperative_id, 0)
        village_fen = village.get(cooperative_id, 0)
        if settled_fen + unsettled_fen != village_fen:
            problems.append({"statement_id": None, "cooperative_id": cooperative_id, "period": None,
                             "problem": f"{names.get(cooperative_id, f'合作社#{cooperative_id}')} {year} 年：结算单已结 "
                                        f"{format_yuan(settled_fen)} + 未结 {format_yuan(unsettled_fen)} ≠ 村级销售 "
                                        f"{format_yuan(village_fen)}"})
    report_total = int(db.session.scalar(sa.select(sa.func.coalesce(sa.func.sum(VillageMonthSales.sales_fen), 0))
                                         .where(VillageMonthSales.year == year)) or 0)
    if sum(village.values()) != report_total:
        problems.append({"statement_id": None, "cooperative_id": None, "period": None,
                         "problem": f"{year} 年各合作社销售合计 {format_yuan(sum(village.values()))} ≠ 村级销售报表合计 "
                                    f"{format_yuan(report_total)}"})
    return problems


def _by_cooperative(query) -> dict[int, int]:
    return {cooperative_id: int(total or 0) for cooperative_id, total in db.session.execute(query)}


def _check_statement(statement: SettlementStatement) -> list[dict]:
    """What is wrong with one issued statement (empty: nothing)."""
    def problem(text):
        return {"statement_id": statement.id, "cooperative_id": statement.cooperative_id, "period": statement.period,
                "problem": f"结算单#{statement.id}（{statement.cooperative.name} {period_label(statement.period)}）：{text}"}

    problems = []
    lines = statement.lines
    gross = sum(line.amount_fen for line in lines if line.kind == "sale")
    refunds = -sum(line.amount_fen for line in lines if line.kind == "refund")
    if (gross, refunds, gross - refunds, len(lines)) != (statement.gross_fen, statement.refunds_fen,
                                                         statement.net_fen, statement.line_count):
        problems.append(problem(f"合计（销售 {format_yuan(statement.gross_fen)}，退款 {format_yuan(statement.refunds_fen)}，"
                                f"应结 {format_yuan(statement.net_fen)}，{statement.line_count} 笔）与明细（销售 "
                                f"{format_yuan(gross)}，退款 {format_yuan(refunds)}，应结 {format_yuan(gross - refunds)}，"
                                f"{len(lines)} 笔）不符"))
    sales = {line.allocation_id: line for line in lines if line.kind == "sale"}
    parts = {line.refund_part_id: line for line in lines if line.kind == "refund"}
    recomputed_gross = recomputed_refunds = 0
    for allocation, cooperative_id in db.session.execute(
            sa.select(OrderAllocation, OrderLine.cooperative_id).join(OrderLine, OrderLine.id == OrderAllocation.line_id)
            .where(OrderAllocation.id.in_(sales))):
        recomputed_gross += int(allocation.amount_fen)
        line = sales[allocation.id]
        if line.amount_fen != allocation.amount_fen or cooperative_id != statement.cooperative_id \
                or allocation.paid_at is None or allocation.paid_at >= statement.cutoff_at:
            problems.append(problem(f"订单 {line.order_number} 的销售明细与原始分配行#{allocation.id}不符"))
    for part, cooperative_id, refunded_at in db.session.execute(
            sa.select(RefundAllocation, OrderLine.cooperative_id, Refund.created_at)
            .join(Refund, Refund.id == RefundAllocation.refund_id)
            .join(OrderAllocation, OrderAllocation.id == RefundAllocation.allocation_id)
            .join(OrderLine, OrderLine.id == OrderAllocation.line_id).where(RefundAllocation.id.in_(parts))):
        recomputed_refunds += int(part.amount_fen)
        line = parts[part.id]
        if -line.amount_fen != part.amount_fen or cooperative_id != statement.cooperative_id \
                or refunded_at >= statement.cutoff_at:
            problems.append(problem(f"订单 {line.order_number} 的退款明细与原始退款分摊#{part.id}不符"))
    if (recomputed_gross, recomputed_refunds) != (statement.gross_fen, statement.refunds_fen):
        problems.append(problem(f"按所结算的原始记录重算为销售 {format_yuan(recomputed_gross)}、退款 "
                                f"{format_yuan(recomputed_refunds)}，应结 {format_yuan(recomputed_gross - recomputed_refunds)}，"
                                f"与结算单应结 {format_yuan(statement.net_fen)} 不符"))
    if content_digest(statement) != statement.content_sha256:
        problems.append(problem("校验码不符：结算单出具后被改动"))
    return problems
