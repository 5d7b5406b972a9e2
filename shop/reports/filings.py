"""The annual reserved-share filing (预留份额年度报备) as CSV or XLSX: for one budget unit (its
share, month by month, and every order that counted) and for officials (every unit, one row each).

The figures are the reports' own (``services.report_reserved_share``, ``report_canteen_months``,
``list_canteen_orders``, ``report_reserved_shares``), so a filed spreadsheet and the dashboard
never disagree. CSV is UTF-8 with a BOM (Excel on Chinese Windows); the XLSX has one sheet per part.
"""
import csv
import io
from decimal import Decimal

from openpyxl import Workbook
from openpyxl.styles import Font

from core.models import User
from core.timeutil import to_shanghai, utcnow
from shop.models import PAYMENT_METHOD_LABELS
from shop.reports import services
from shop.reports.exports import cell_values
from shop.reports.exports import yuan_decimal as _yuan

_YUAN = "¥#,##0.00"
#: A unit files at most this many orders a year through here; more is a data problem, not a filing.
MAX_ORDERS = 10_000


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def unit_filing(actor: User, unit_id: int, year: int) -> dict:
    """One unit's year: summary rows, months and the orders that counted toward its share.

    :raise NotFound: no such unit, or another unit's buyer asking. :raise Forbidden: no report rights.
    """
    share = services.report_reserved_share(actor, unit_id, year)
    months = services.report_canteen_months(actor, unit_id, year)
    orders = services.list_canteen_orders(actor, unit_id, year, limit=MAX_ORDERS)
    summary = [
        ("单位", share["name"]), ("年度", year),
        ("年度食堂食材采购预算（元）", _yuan(share["budget_fen"])), ("预留比例", _percent(float(share["reserved_share"]))),
        ("预留份额目标（元）", _yuan(share["reserved_target_fen"])), ("已采购脱贫地区农副产品（元）", _yuan(share["purchased_fen"])),
        ("完成率", _percent(share["progress"])), ("尚需采购（元）", _yuan(share["remaining_fen"])),
        ("口径", "已付款的机关食堂订单商品金额扣除退款，按付款时间（北京时间）所在年度计入"),
        ("生成时间", to_shanghai(utcnow()).strftime("%Y-%m-%d %H:%M")),
    ]
    month_rows = [(item["month"], _yuan(item["purchased_fen"]), _yuan(item["cumulative_fen"]), _percent(item["progress"]))
                  for item in months["items"]]
    order_rows = [(row["order"].number, to_shanghai(row["order"].paid_at).strftime("%Y-%m-%d") if row["order"].paid_at else "",
                   row["order"].purchase_order_no or "", row["order"].status_label,
                   PAYMENT_METHOD_LABELS.get(row["order"].payment_method, row["order"].payment_method),
                   _yuan(row["order"].total_fen), _yuan(row["order"].refunded_fen), _yuan(row["counted_fen"]))
                  for row in orders["items"]]
    return {"name": share["name"], "year": year, "summary": summary, "months": month_rows, "orders": order_rows}


MONTH_HEADERS = ("月份", "当月采购（元）", "累计采购（元）", "累计完成率")
ORDER_HEADERS = ("订单号", "付款日期", "采购单号", "状态", "付款方式", "订单金额（元）", "已退款（元）", "计入预留份额（元）")
UNITS_HEADERS = ("单位编号", "单位", "年度预算（元）", "预留比例", "预留份额目标（元）", "已采购（元）", "完成率",
                 "尚需采购（元）", "预留比例低于10%")


def units_filing(actor: User, year: int) -> dict:
    """Every unit's year, furthest behind first, with the totals.

    :raise Forbidden: a role without the canteen overview.
    """
    report = services.report_reserved_shares(actor, year)
    rows = [(item["budget_unit_id"], item["name"], _yuan(item["budget_fen"]), _percent(float(item["reserved_share"])),
             _yuan(item["reserved_target_fen"]), _yuan(item["purchased_fen"]), _percent(item["progress"]),
             _yuan(item["remaining_fen"]), "是" if item["below_policy_minimum"] else "否")
            for item in report["items"]]
    totals = report["totals"]
    summary = [("年度", year), ("单位数", totals["units"]), ("有预留任务的单位", totals["units_with_quota"]),
               ("已完成的单位", totals["units_at_target"]), ("预留份额目标合计（元）", _yuan(totals["reserved_target_fen"])),
               ("已采购合计（元）", _yuan(totals["purchased_fen"])), ("总体完成率", _percent(totals["progress"])),
               ("生成时间", to_shanghai(utcnow()).strftime("%Y-%m-%d %H:%M"))]
    return {"year": year, "summary": summary, "rows": rows}


def unit_filing_file(filing: dict, extension: str) -> tuple[bytes, str]:
    """(bytes, file name) of a unit's filing."""
    name = f"预留份额年度报备_{filing['name']}_{filing['year']}年.{extension}"
    parts = [("汇总", ("项目", "内容"), filing["summary"]), ("月度", MONTH_HEADERS, filing["months"]),
             ("订单", ORDER_HEADERS, filing["orders"])]
    return (_csv(parts) if extension == "csv" else _xlsx(parts)), name


def units_filing_file(filing: dict, extension: str) -> tuple[bytes, str]:
    """(bytes, file name) of the all-units filing."""
    name = f"各单位预留份额_{filing['year']}年.{extension}"
    parts = [("各单位", UNITS_HEADERS, filing["rows"]), ("汇总", ("项目", "内容"), filing["summary"])]
    return (_csv(parts) if extension == "csv" else _xlsx(parts)), name


def _csv(parts) -> bytes:
    """Every part one after another, each under its title, separated by a blank line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for index, (title, headers, rows) in enumerate(parts):
        if index:
            writer.writerow([])
        writer.writerow([f"【{title}】"])
        writer.writerow(headers)
        writer.writerows(rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _xlsx(parts) -> bytes:
    """One sheet per part; money cells in yuan with a ¥ format."""
    book = Workbook()
    book.remove(book.active)
    for title, headers, rows in parts:
        sheet = book.create_sheet(title)
        sheet.append(headers)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append(cell_values(row))
        for row in sheet.iter_rows(min_row=2):
            for cell in row:
                if isinstance(cell.value, Decimal):
                    cell.number_format = _YUAN
        for index in range(1, len(headers) + 1):
            sheet.column_dimensions[sheet.cell(row=1, column=index).column_letter].width = 18
        sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
