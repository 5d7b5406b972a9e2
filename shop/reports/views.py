"""Pages of the sales reports: the officials' dashboard, the full village table, file downloads,
and each government canteen's reserved-share page with its orders."""
import math

from flask import Blueprint, redirect, render_template, request, url_for

from certification.models import CATEGORY_LABELS
from core.auth import current_user, require_roles
from core.budget_units import POLICY_MIN_SHARE
from core.errors import Forbidden
from core.http import file_download, page_params
from core.models import Role
from core.money import format_wan_yuan, format_yuan
from core.navigation import register_nav
from core.timeutil import shanghai_today
from core.village_registry import COUNTIES, ZONE_LABELS
from shop.models import CHANNEL_LABELS
from shop.reports import filings, services
from shop.reports.api import file_response
from shop.reports.schemas import ReportQuerySchema, YearQuerySchema

bp = Blueprint("reports", __name__, url_prefix="/reports")

register_nav("reports.dashboard", "销售报表", roles=services.REPORT_ROLES, order=65)

#: Lagging villages listed on the dashboard, and rows per page of the village table.
LAGGING = 10
TABLE_PAGE = 100
#: Canteens shown on the dashboard before the rest fold away, and orders per page of a unit.
CANTEENS_SHOWN = 10
CANTEEN_ORDERS_PAGE = 50
#: Who may open a canteen's page: its own buyers (their unit only) and the staff who oversee canteens.
CANTEEN_PAGE_ROLES = (Role.CANTEEN_BUYER, Role.ADMIN, Role.OFFICIAL, Role.FINANCE)
FIRST_YEAR = 2021  # the plan's first year (“十四五”)

SORT_LABELS = {
    "progress": "完成率从低到高", "-progress": "完成率从高到低", "sales_fen": "销售额从低到高",
    "-sales_fen": "销售额从高到低", "-orders": "订单数从多到少", "registry": "名录顺序",
}


def _percent(ratio: float) -> str:
    """A progress ratio as a percentage for people (0.4567 → 45.7%; a start is never shown as 0.0%)."""
    if 0 < ratio < 0.001:
        return "<0.1%"
    return f"{ratio * 100:.1f}%"


def _bar(ratio: float) -> float:
    """Bar length in percent of the track, capped at the track (over-target bars stay full)."""
    return round(max(0.0, min(ratio, 1.0)) * 100, 2)


def _money(fen: int) -> str:
    """Short money for chart notes: yuan below ¥10,000, 万元 above (¥150,000 → 15.0万元)."""
    return format_yuan(fen) if abs(fen) < 1_000_000 else format_wan_yuan(fen)


def _years(chosen: int) -> list[int]:
    """The years a page offers: this Shanghai year back to the plan's first, plus ``chosen``."""
    years = list(range(services.default_year(), FIRST_YEAR - 1, -1))
    if chosen not in years:
        years.append(chosen)
    return years


def _context(query: dict) -> dict:
    """What every report page needs: the filters, the choices, and the formatting helpers."""
    user = current_user()
    filters = query["filters"]
    years = _years(filters.year)
    args = {key: value for key, value in (("year", filters.year), ("county", filters.county),
                                          ("township", filters.township), ("zone", filters.zone),
                                          ("channel", filters.channel), ("category", filters.category))
            if value}
    return {
        "filters": filters, "sort": query["sort"], "args": args, "years": years,
        "counties": COUNTIES, "zone_labels": ZONE_LABELS, "channel_labels": CHANNEL_LABELS,
        "category_labels": CATEGORY_LABELS, "sort_labels": SORT_LABELS,
        "county_locked": user.has_role(Role.COUNTY_REVIEWER),
        "simulated_orders": services.simulated_payment_orders(filters.year),
        "percent": _percent, "bar": _bar, "money": _money,
    }


def _query() -> dict:
    """Parse the page's filters; a county reviewer's county is shown as the filter they get."""
    query = ReportQuerySchema().load_args(request.args)
    query["filters"] = services.scoped_filters(current_user(), query["filters"])
    return query


@bp.get("")
@require_roles(*services.REPORT_ROLES)
def dashboard():
    """Headline figures, county and zone charts, the monthly trend and the villages furthest behind."""
    query = _query()
    user, filters = current_user(), query["filters"]
    overview = services.report_village_sales(user, filters, limit=0)
    rollups = services.report_county_sales(user, filters)
    trend = services.report_monthly_sales(user, filters)
    lagging = services.find_lagging_villages(user, filters, limit=LAGGING)
    canteens = (services.report_reserved_shares(user, filters.year)
                if user.has_role(*services.CANTEEN_OVERVIEW_ROLES) else None)
    peak = max((month["sales_fen"] for month in trend["items"]), default=0)
    return render_template("reports/dashboard.html", totals=overview.totals, rollups=rollups, trend=trend,
                           trend_peak=peak, lagging=lagging, canteens=canteens, canteens_shown=CANTEENS_SHOWN,
                           can_open_canteens=user.has_role(*CANTEEN_PAGE_ROLES), **_context(query))


@bp.get("/villages")
@require_roles(*services.REPORT_ROLES)
def villages():
    """Every village matching the filters, sorted, 100 to a page, with download links for all of them."""
    query = _query()
    page = page_params(max_per_page=TABLE_PAGE, default_per_page=TABLE_PAGE)
    report = services.report_village_sales(current_user(), query["filters"], sort=query["sort"],
                                           offset=page.offset, limit=page.size)
    pages = max(1, -(-report.total // page.size))
    return render_template("reports/villages.html", report=report, page=page, pages=pages, **_context(query))


@bp.get("/village-sales.<any(csv, xlsx):extension>")
@require_roles(*services.REPORT_ROLES)
def download(extension: str):
    """The village table as a file (every matching village, in the page's order), for signed-in staff."""
    query = _query()
    report = services.report_village_sales(current_user(), query["filters"], sort=query["sort"])
    return file_response(report, extension)


# ---------------------------------------------------------------- government canteens

def _pace(share: dict) -> dict | None:
    """What the rest of this year asks each month (the current year only, target not yet met)."""
    today = shanghai_today()
    if share["year"] != today.year or not share["has_quota"] or share["remaining_fen"] <= 0:
        return None
    months_left = 12 - today.month + 1  # this month still counts
    return {"months_left": months_left, "per_month_fen": math.ceil(share["remaining_fen"] / months_left)}


def _canteen_context(year: int) -> dict:
    """What both canteen pages need: the year choices (next year too: its budget is set in
    advance) and the formatting helpers."""
    years = _years(year)
    if services.default_year() + 1 not in years:
        years.insert(0, services.default_year() + 1)
    return {"years": years, "percent": _percent, "bar": _bar, "money": _money,
            "current_year": services.default_year(), "policy_min_share": POLICY_MIN_SHARE}


@bp.get("/canteen")
@require_roles(Role.CANTEEN_BUYER)
def my_canteen():
    """A canteen buyer's own unit (the header link "本单位食堂")."""
    user = current_user()
    if user.budget_unit_id is None:
        raise Forbidden("该采购员账号未关联预算单位，请联系管理员", code="no_budget_unit")
    year = request.args.get("year")
    return redirect(url_for("reports.canteen", unit_id=user.budget_unit_id, **({"year": year} if year else {})))


@bp.get("/canteens/<int:unit_id>")
@require_roles(*CANTEEN_PAGE_ROLES)
def canteen(unit_id: int):
    """A canteen's reserved share for the year: budget, share, target, purchases, progress, months."""
    user = current_user()
    year = YearQuerySchema().load_args(request.args)["year"]
    canteen = services.report_canteen(user, unit_id, year)
    share, months = canteen["share"], canteen["months"]
    peak = max((month["purchased_fen"] for month in months["items"]), default=0)
    return render_template("canteen/unit.html", share=share, months=months, month_peak=peak,
                           pending=canteen["pending"], pace=_pace(share), is_own_unit=user.budget_unit_id == unit_id,
                           can_edit=user.has_role(Role.ADMIN), **_canteen_context(year))


@bp.get("/canteens/<int:unit_id>/filing.<any(csv, xlsx):extension>")
@require_roles(*CANTEEN_PAGE_ROLES)
def canteen_filing(unit_id: int, extension: str):
    """The unit's annual reserved-share filing (预留份额年度报备) as a file."""
    year = YearQuerySchema().load_args(request.args)["year"]
    return file_download(*filings.unit_filing_file(filings.unit_filing(current_user(), unit_id, year), extension))


@bp.get("/reserved-shares.<any(csv, xlsx):extension>")
@require_roles(*services.CANTEEN_OVERVIEW_ROLES)
def reserved_shares_filing(extension: str):
    """Every unit's reserved share for the year as a file, for officials."""
    year = YearQuerySchema().load_args(request.args)["year"]
    return file_download(*filings.units_filing_file(filings.units_filing(current_user(), year), extension))


@bp.get("/canteens/<int:unit_id>/orders")
@require_roles(*CANTEEN_PAGE_ROLES)
def canteen_orders(unit_id: int):
    """The unit's orders placed or paid in the year, with what each counts toward the share."""
    user = current_user()
    year = YearQuerySchema().load_args(request.args)["year"]
    page = page_params(max_per_page=CANTEEN_ORDERS_PAGE, default_per_page=CANTEEN_ORDERS_PAGE)
    listing = services.list_canteen_orders(user, unit_id, year, offset=page.offset, limit=page.size)
    pages = max(1, -(-listing["total"] // page.size))
    return render_template("canteen/orders.html", listing=listing, page=page, pages=pages,
                           **_canteen_context(year))


def report_url(endpoint: str, args: dict, **changes) -> str:
    """URL of a report page with the current filters and some changed (None removes one)."""
    merged = {**args, **changes}
    return url_for(endpoint, **{key: value for key, value in merged.items() if value not in (None, "")})


bp.add_app_template_global(report_url, "report_url")
