"""CSV and XLSX files of the village sales report: the same rows, in the same order, as the screen.

CSV is UTF-8 with a BOM so Excel on Chinese Windows opens it without garbling; XLSX is written
with openpyxl (money as numbers in yuan with a ¥ format, progress as a percentage).
"""
import csv
import io
from decimal import Decimal
from urllib.parse import quote

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from core.timeutil import to_shanghai, utcnow
from shop.reports.services import VillageSalesReport

def cell_values(values) -> list:
    """A worksheet row with the control characters XLSX cannot hold removed from its text.

    Filters and names are the callers' text (a township filter, a unit's name): openpyxl refuses
    a cell with, say, a form feed, which turned a download into a 500.
    """
    return [ILLEGAL_CHARACTERS_RE.sub("", value) if isinstance(value, str) else value for value in values]


#: (header, row key) — Chinese headers, fixed so spreadsheets built on them keep working.
COLUMNS = (
    ("村编号", "village_id"),
    ("县市", "county"),
    ("乡镇", "township"),
    ("村", "village"),
    ("分区", "zone_label"),
    ("销售额（元）", "sales_yuan"),
    ("订单数", "orders"),
    ("年度目标（元）", "target_yuan"),
    ("完成率", "progress"),
    ("是否达标", "at_target"),
)
HEADERS = tuple(header for header, _ in COLUMNS)
_YUAN = "¥#,##0.00"


def yuan_decimal(fen: int) -> Decimal:
    """Fen as an exact decimal amount of yuan (2 places)."""
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def _values(item: dict) -> dict:
    """A report item with the derived export columns."""
    return {**item, "sales_yuan": yuan_decimal(item["sales_fen"]), "target_yuan": yuan_decimal(item["target_fen"]),
            "at_target": "是" if item["sales_fen"] >= item["target_fen"] else "否"}


def filename(report: VillageSalesReport, extension: str) -> str:
    """A descriptive file name: 村级销售报表_2026年_花垣县_机关食堂.csv."""
    return "_".join(["村级销售报表", *report.filters.describe().split(" · ")]) + "." + extension


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the UTF-8 name (RFC 6266/5987)."""
    return f"attachment; filename=\"village-sales.{name.rsplit('.', 1)[1]}\"; filename*=UTF-8''{quote(name)}"


def village_sales_csv(report: VillageSalesReport) -> bytes:
    """The report's rows as CSV (UTF-8 with BOM, Chinese headers); progress as a percentage."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADERS)
    for item in report.items:
        values = _values(item)
        values["progress"] = f"{item['progress'] * 100:.2f}%"
        writer.writerow([values[key] if values[key] is not None else "" for _, key in COLUMNS])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def village_sales_xlsx(report: VillageSalesReport) -> bytes:
    """The report's rows as an XLSX workbook: the table, then a sheet saying what it covers."""
    book = Workbook()
    sheet = book.active
    sheet.title = "村级销售"
    sheet.append(HEADERS)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.alignment = Alignment(horizontal="center")
    for item in report.items:
        values = _values(item)
        sheet.append(cell_values([values[key] for _, key in COLUMNS]))
    money = {HEADERS.index("销售额（元）") + 1, HEADERS.index("年度目标（元）") + 1}
    percent = HEADERS.index("完成率") + 1
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            if cell.column in money:
                cell.number_format = _YUAN
            elif cell.column == percent:
                cell.number_format = "0.00%"
    for index, width in enumerate((8, 10, 14, 16, 18, 16, 8, 16, 10, 9), start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = sheet.dimensions

    about = book.create_sheet("说明")
    totals = report.totals
    for label, value in (
        ("报表", "湘西香伴消费帮扶 · 村级销售报表"),
        ("范围", report.filters.describe()),
        ("口径", "已付款订单的商品金额扣除退款，计入所售批次的产地村，按付款时间（北京时间）所在年度统计"),
        ("村数", totals["villages"]),
        ("销售额合计（元）", yuan_decimal(totals["sales_fen"])),
        ("目标合计（元）", yuan_decimal(totals["target_fen"])),
        ("达标村数", totals["villages_at_target"]),
        ("生成时间", to_shanghai(utcnow()).strftime("%Y-%m-%d %H:%M")),
    ):
        about.append(cell_values([label, value]))
    about.column_dimensions["A"].width = 18
    about.column_dimensions["B"].width = 70
    for cell in (about["B5"], about["B6"]):
        cell.number_format = _YUAN
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
