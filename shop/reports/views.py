"""Pages of the sales reports: the officials' dashboard, the full village table, file downloads."""
from flask import Blueprint, render_template, request, url_for

from certification.models import CATEGORY_LABELS
from core.auth import current_user, require_roles
from core.http import page_params
from core.models import Role
from core.money import format_wan_yuan, format_yuan
from core.navigation import register_nav
from core.village_registry import COUNTIES, ZONE_LABELS
from shop.models import CHANNEL_LABELS
from shop.reports import services
from shop.reports.api import file_response
from shop.reports.schemas import ReportQuerySchema

bp = Blueprint("reports", __name__, url_prefix="/reports")

register_nav("reports.dashboard", "销售报表", roles=services.REPORT_ROLES, order=65)

#: Lagging villages listed on the dashboard, and rows per page of the village table.
LAGGING = 10
TABLE_PAGE = 100
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


def _context(query: dict) -> dict:
    """What every report page needs: the filters, the choices, and the formatting helpers."""
    user = current_user()
    filters = query["filters"]
    years = list(range(services.default_year(), FIRST_YEAR - 1, -1))
    if filters.year not in years:
        years.append(filters.year)
    args = {key: value for key, value in (("year", filters.year), ("county", filters.county),
                                          ("township", filters.township), ("zone", filters.zone),
                                          ("channel", filters.channel), ("category", filters.category))
            if value}
    return {
        "filters": filters, "sort": query["sort"], "args": args, "years": years,
        "counties": COUNTIES, "zone_labels": ZONE_LABELS, "channel_labels": CHANNEL_LABELS,
        "category_labels": CATEGORY_LABELS, "sort_labels": SORT_LABELS,
        "county_locked": user.has_role(Role.COUNTY_REVIEWER),
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
    peak = max((month["sales_fen"] for month in trend["items"]), default=0)
    return render_template("reports/dashboard.html", totals=overview.totals, rollups=rollups, trend=trend,
                           trend_peak=peak, lagging=lagging, **_context(query))


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


def report_url(endpoint: str, args: dict, **changes) -> str:
    """URL of a report page with the current filters and some changed (None removes one)."""
    merged = {**args, **changes}
    return url_for(endpoint, **{key: value for key, value in merged.items() if value not in (None, "")})


bp.add_app_template_global(report_url, "report_url")
