"""JSON (and file) API of the sales reports, under /api/v1 (contract: "Reports", "Budget units")."""
from flask import Blueprint, Response, jsonify, request
from marshmallow import fields, validate

from core.auth import current_user, require_login, require_roles
from core.errors import ValidationFailed
from core.http import file_download, page_params
from core.openapi import api_doc, api_tag
from shop.reports import exports, filings, services
from shop.reports.schemas import (FORMATS, YEAR, CountySalesOutSchema, CountySalesSchema, MonthlySalesOutSchema,
                                  MonthlySalesSchema, ReportQuerySchema, ReservedShareSchema, ReservedSharesSchema,
                                  TotalsSchema, VillageSalesSchema, YearQuerySchema)

bp = Blueprint("reports_api", __name__, url_prefix="/api/v1")

#: Every village fits one page: the contract lets this report return up to 2000 per page.
MAX_PER_PAGE = 2000

api_tag(bp, "报表", "脱贫村销售额对照目标、县与分区汇总、月度趋势、食堂预留份额（JSON、CSV、Excel）")

#: ``?year=&format=`` of the reserved-share reports (read by ``YearQuerySchema`` and ``file_format``).
YEAR_AND_FORMAT = {"year": fields.Integer(validate=YEAR, metadata={"description": "年份（默认本年，上海时间）"}),
                   "format": fields.String(validate=validate.OneOf(FORMATS), metadata={
                       "description": "json（默认）；csv 或 xlsx 下载年度报备表"})}


def file_response(report, extension: str) -> Response:
    """A CSV or XLSX download of every row of ``report``."""
    if extension == "csv":
        body, mimetype = exports.village_sales_csv(report), "text/csv; charset=utf-8"
    else:
        body = exports.village_sales_xlsx(report)
        mimetype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = exports.content_disposition(exports.filename(report, extension))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/reports/village-sales")
@api_doc(query=ReportQuerySchema, paged=MAX_PER_PAGE, response=VillageSalesSchema, files=("csv", "xlsx"))
@require_roles(*services.REPORT_ROLES)
def village_sales():
    """Every village matching the filters with sales, orders, target and progress (or a CSV/XLSX file).

    JSON is paginated (``per_page`` up to 2000, default 2000 so one page holds every village);
    a file always holds every matching village, in the same order.
    """
    query = ReportQuerySchema().load_args(request.args)
    page = page_params(max_per_page=MAX_PER_PAGE, default_per_page=MAX_PER_PAGE)
    if query["format"] != "json":
        report = services.report_village_sales(current_user(), query["filters"], sort=query["sort"])
        return file_response(report, query["format"])
    report = services.report_village_sales(current_user(), query["filters"], sort=query["sort"],
                                           offset=page.offset, limit=page.size)
    # The service's rows already have exactly VillageSalesItemSchema's shape and types (a test
    # proves it); dumping 1,110 of them through marshmallow would add ~40 ms to every call.
    return jsonify({"year": report.filters.year, "sort": report.sort, "items": report.items,
                    "totals": TotalsSchema().dump(report.totals),
                    "simulated_payment_orders": services.simulated_payment_orders(report.filters.year),
                    "total": report.total, "page": page.number, "per_page": page.size})


@bp.get("/reports/county-sales")
@api_doc(query=ReportQuerySchema, response=CountySalesOutSchema)
@require_roles(*services.REPORT_ROLES)
def county_sales():
    """Sales, villages, villages at target, target and progress per county and per zone."""
    query = ReportQuerySchema().load_args(request.args)
    body = CountySalesSchema().dump(services.report_county_sales(current_user(), query["filters"]))
    return jsonify({**body, "simulated_payment_orders": services.simulated_payment_orders(query["filters"].year)})


@bp.get("/reports/monthly-sales")
@api_doc(query=ReportQuerySchema, response=MonthlySalesOutSchema)
@require_roles(*services.REPORT_ROLES)
def monthly_sales():
    """Sales per Asia/Shanghai month of the year, with the running total against the target."""
    query = ReportQuerySchema().load_args(request.args)
    body = MonthlySalesSchema().dump(services.report_monthly_sales(current_user(), query["filters"]))
    return jsonify({**body, "simulated_payment_orders": services.simulated_payment_orders(query["filters"].year)})


@bp.get("/budget-units/<int:unit_id>/reserved-share")
@api_doc(query=YEAR_AND_FORMAT, response=ReservedShareSchema, files=("csv", "xlsx"), errors=(403,))
@require_login
def reserved_share(unit_id: int):
    """A canteen's paid purchases in ``?year=`` (default this year) against that year's reserved share:
    the budget and share in force that year, which later changes to the unit never move."""
    year = YearQuerySchema().load_args(request.args)["year"]
    if (extension := file_format()) is not None:  # the unit's annual filing (预留份额年度报备)
        return file_download(*filings.unit_filing_file(filings.unit_filing(current_user(), unit_id, year), extension))
    return jsonify(ReservedShareSchema().dump(services.report_reserved_share(current_user(), unit_id, year)))


@bp.get("/reports/reserved-shares")
@api_doc(query=YEAR_AND_FORMAT, response=ReservedSharesSchema, files=("csv", "xlsx"))
@require_roles(*services.CANTEEN_OVERVIEW_ROLES)
def reserved_shares():
    """Every budget unit's paid canteen purchases this year against its reserved share, furthest behind first."""
    year = YearQuerySchema().load_args(request.args)["year"]
    if (extension := file_format()) is not None:
        return file_download(*filings.units_filing_file(filings.units_filing(current_user(), year), extension))
    return jsonify(ReservedSharesSchema().dump(services.report_reserved_shares(current_user(), year)))


def file_format() -> str | None:
    """``?format=csv|xlsx`` asks for a file instead of JSON (absent or ``json``: None).

    :raise ValidationFailed: another format (422).
    """
    value = request.args.get("format") or "json"
    if value not in ("json", "csv", "xlsx"):
        raise ValidationFailed(fields={"format": ["格式须为 json、csv 或 xlsx"]})
    return None if value == "json" else value
