"""Sales reports: every village's sales against its target, roll-ups by county and zone, the
month-by-month trend, canteens' reserved share, and the reconciliation that proves the report
says what the raw order lines say.

How a figure is made (contract, "Reports"): a sale is the goods value of a paid order line net
of refunds, credited to the village of the batch its units came from, in the Asia/Shanghai
year of payment. Shop keeps exactly that on ``order_allocations`` (village, channel, product,
``amount_fen``, ``refunded_fen`` and the order's ``paid_at``). The reports read the monthly
village summary kept from those rows in the same transaction (``shop/reports/summary.py``),
LEFT JOINed to ``villages`` so that villages without sales appear with zero; everything is
aggregated in the database. A category filter needs the product of each allocation, which the
summary does not keep, so it aggregates ``order_allocations`` directly (slower, still exact).

Definitions the contract leaves open, decided here:
- ``orders`` of a village: distinct paid orders with a positive net contribution to it (an
  order fully refunded for that village no longer counts).
- ``progress``: sales / target as a float; a target of 0 (no target set) counts as met: 1.0.
- ``villages_at_target``: sales >= target.
- County reviewers see their own county only (another county: 403); officials, admins,
  prefecture reviewers and finance see everything.
"""
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from certification.gate import sellable_clause
from certification.models import CATEGORY_LABELS, Product, product_villages
from core.budget_units import (YearValues, below_policy_minimum, get_budget_unit_for, reserved_target_fen,
                               values_in_force, year_values, year_values_from_row)
from core.errors import Forbidden
from core.extensions import db
from core.models import BudgetUnit, Cooperative, Role, User, Village, VillageSalesTarget
from core.timeutil import shanghai_today, shanghai_year_bounds
from core.village_registry import COUNTIES, ZONE_LABELS
from shop.models import CHANNEL_LABELS, Order, OrderAllocation, OrderLine, RefundAllocation
from shop.reports.models import VillageMonthSales
from shop.reports.summary import shanghai_month_sql
from shop.sales import NET_SALES_FEN, paid_in_year_clause
from shop.states import PAID_STATUSES, OrderStatus
from traceability.models import Batch

#: Who may read sales reports (contract: official, admin, reviewers, finance).
REPORT_ROLES = (Role.OFFICIAL, Role.ADMIN, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.FINANCE)

#: ?sort= values; a leading "-" means descending. Ties always fall back to registry order.
SORTS = ("progress", "-progress", "sales_fen", "-sales_fen", "orders", "-orders", "target_fen", "-target_fen",
         "registry")
DEFAULT_SORT = "progress"

_PAID = tuple(status.value for status in PAID_STATUSES)


@dataclass(frozen=True)
class ReportFilters:
    """What a report covers: a Shanghai year and optional village, channel and category filters."""

    year: int
    county: str | None = None
    township: str | None = None
    zone: str | None = None
    channel: str | None = None
    category: str | None = None

    def describe(self) -> str:
        """The filters in Chinese, for file headers and page titles."""
        parts = [f"{self.year}年"]
        if self.county:
            parts.append(self.county)
        if self.township:
            parts.append(self.township)
        if self.zone:
            parts.append(ZONE_LABELS.get(self.zone, self.zone))
        if self.channel:
            parts.append(CHANNEL_LABELS.get(self.channel, self.channel))
        if self.category:
            parts.append(CATEGORY_LABELS.get(self.category, self.category))
        return " · ".join(parts)


@dataclass
class VillageSalesReport:
    """One page of village rows (already sorted) and the totals over every matching village."""

    filters: ReportFilters
    sort: str
    items: list[dict]
    total: int
    totals: dict


@dataclass
class Reconciliation:
    """The outcome of recomputing every village's figure from raw order lines."""

    year: int
    villages: int = 0
    differences: list[dict] = field(default_factory=list)
    anomalies: list[dict] = field(default_factory=list)
    anomaly_count: int = 0
    #: Settlement statements that do not match the movements they settled (``shop/settlements.py``).
    settlement_problems: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the report, the raw rows and the settlement statements agree everywhere."""
        return not self.differences and not self.anomaly_count and not self.settlement_problems


def simulated_payment_orders(year: int) -> int:
    """How many orders paid in ``year`` (Asia/Shanghai) were paid in the offline simulated checkout.

    Their sales are in the reports like any other (the demo needs its story), but no money moved:
    every report says so whenever this is not zero, so a demo figure is never read as real.
    """
    start, end = shanghai_year_bounds(year)
    return db.session.scalar(sa.select(sa.func.count(Order.id)).where(
        Order.payment_provider == "sandbox", Order.paid_at >= start, Order.paid_at < end)) or 0


def default_year() -> int:
    """The current Asia/Shanghai year, the default of every report."""
    return shanghai_today().year


def progress_of(sales_fen: int, target_fen: int) -> float:
    """sales / target as a JSON number; a zero target (nothing asked) counts as met."""
    return sales_fen / target_fen if target_fen else 1.0


def scoped_filters(actor: User, filters: ReportFilters) -> ReportFilters:
    """Check the actor may read reports and narrow a county reviewer to their county.

    :raise Forbidden: a role without report rights, or a county reviewer asking for another county.
    """
    if actor is None or not actor.has_role(*REPORT_ROLES):
        raise Forbidden("当前角色无权查看销售报表")
    if actor.has_role(Role.COUNTY_REVIEWER):
        if not actor.county or (filters.county and filters.county != actor.county):
            raise Forbidden("县级审核员只能查看本县的销售报表", code="other_county")
        return replace(filters, county=actor.county)
    return filters


# ---------------------------------------------------------------- SQL building blocks

def _village_conditions(filters: ReportFilters) -> list:
    """Conditions on ``Village`` for the place filters."""
    conditions = []
    if filters.county:
        conditions.append(Village.county == filters.county)
    if filters.township:
        conditions.append(Village.township == filters.township)
    if filters.zone:
        conditions.append(Village.zone == filters.zone)
    return conditions


def _place_subquery(filters: ReportFilters):
    """``SELECT id FROM villages WHERE <place filters>``, or None without place filters."""
    places = _village_conditions(filters)
    return sa.select(Village.id).where(*places) if places else None


def _allocation_conditions(filters: ReportFilters) -> list:
    """Conditions on ``OrderAllocation`` (the direct path): paid in the year, channel, category, places."""
    conditions = [paid_in_year_clause(filters.year)]
    if filters.channel:
        conditions.append(OrderAllocation.channel == filters.channel)
    if filters.category:
        conditions.append(OrderAllocation.product_id.in_(
            sa.select(Product.id).where(Product.category == filters.category)))
    places = _place_subquery(filters)
    if places is not None:
        conditions.append(OrderAllocation.village_id.in_(places))
    return conditions


def _summary_conditions(filters: ReportFilters) -> list:
    """Conditions on ``VillageMonthSales``: the year, channel and places (pushed down as village ids)."""
    conditions = [VillageMonthSales.year == filters.year]
    if filters.channel:
        conditions.append(VillageMonthSales.channel == filters.channel)
    places = _place_subquery(filters)
    if places is not None:
        conditions.append(VillageMonthSales.village_id.in_(places))
    return conditions


def _contributing_order():
    """The order id of an allocation that still contributes money (NULL when fully refunded)."""
    return sa.case((OrderAllocation.amount_fen > OrderAllocation.refunded_fen, OrderAllocation.order_id))


def _sales_by_village(filters: ReportFilters):
    """Subquery: village_id, sales_fen, orders for the filters (summary, or allocations for a category)."""
    if filters.category:
        return (sa.select(OrderAllocation.village_id.label("village_id"),
                          sa.cast(sa.func.sum(NET_SALES_FEN), sa.BigInteger).label("sales_fen"),
                          sa.func.count(sa.distinct(_contributing_order())).label("orders"))
                .where(*_allocation_conditions(filters))
                .group_by(OrderAllocation.village_id)
                .subquery("sales"))
    # An order is paid once, in one month, through one channel: its village rows add up exactly.
    return (sa.select(VillageMonthSales.village_id.label("village_id"),
                      sa.cast(sa.func.sum(VillageMonthSales.sales_fen), sa.BigInteger).label("sales_fen"),
                      sa.cast(sa.func.sum(VillageMonthSales.orders), sa.BigInteger).label("orders"))
            .where(*_summary_conditions(filters))
            .group_by(VillageMonthSales.village_id)
            .subquery("sales"))


def _village_rows(filters: ReportFilters):
    """SELECT of every village matching the filters with its sales, orders and target for the year."""
    sales = _sales_by_village(filters)
    target = sa.func.coalesce(VillageSalesTarget.target_fen, Village.sales_target_fen)
    return (sa.select(Village.id.label("village_id"), Village.name.label("village"),
                      Village.township.label("township"), Village.county.label("county"),
                      Village.zone.label("zone"),
                      sa.func.coalesce(sales.c.sales_fen, 0).label("sales_fen"),
                      sa.func.coalesce(sales.c.orders, 0).label("orders"),
                      sa.cast(target, sa.BigInteger).label("target_fen"))
            .select_from(Village)
            .outerjoin(sales, sales.c.village_id == Village.id)
            .outerjoin(VillageSalesTarget, sa.and_(VillageSalesTarget.village_id == Village.id,
                                                   VillageSalesTarget.year == filters.year))
            .where(*_village_conditions(filters)))


def _progress_sql(sales, target):
    """The SQL twin of ``progress_of`` (IEEE division of the same integers: same order)."""
    return sa.case((target == 0, sa.literal(1.0, sa.Float)),
                   else_=sa.cast(sales, sa.Float) / sa.cast(target, sa.Float))


def _at_target_sql(sales, target):
    """1 when a village has reached its target, else 0."""
    return sa.case((sales >= target, 1), else_=0)


def _order_by(rows, sort: str) -> list:
    """ORDER BY for a ?sort= value, ties broken by registry order (village id)."""
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    if key == "registry":
        return [rows.c.village_id.asc()]
    column = _progress_sql(rows.c.sales_fen, rows.c.target_fen) if key == "progress" else rows.c[key]
    return [column.desc() if descending else column.asc(), rows.c.village_id.asc()]


def _item(row) -> dict:
    """A report row in the contract's shape (plus the zone's Chinese label)."""
    sales, target = int(row.sales_fen), int(row.target_fen)
    return {"village_id": row.village_id, "village": row.village, "township": row.township,
            "county": row.county, "zone": row.zone, "zone_label": ZONE_LABELS.get(row.zone, "规划外"),
            "sales_fen": sales, "orders": int(row.orders), "target_fen": target,
            "progress": progress_of(sales, target)}


def _totals(villages, sales_fen, at_target, target_fen, without_sales) -> dict:
    """The totals block: the contract's three fields and the overall target and progress."""
    sales_fen, target_fen = int(sales_fen or 0), int(target_fen or 0)
    return {"sales_fen": sales_fen, "villages": int(villages or 0), "villages_at_target": int(at_target or 0),
            "target_fen": target_fen, "progress": progress_of(sales_fen, target_fen),
            "villages_without_sales": int(without_sales or 0)}


# ---------------------------------------------------------------- reports

def report_village_sales(actor: User, filters: ReportFilters, *, sort: str = DEFAULT_SORT, offset: int = 0,
                         limit: int | None = None) -> VillageSalesReport:
    """Every village matching the filters with sales, orders, target and progress, sorted; one page of it.

    Totals cover every matching village, not just the page (window functions over the same rows,
    so the aggregate over the allocations runs once).

    :raise Forbidden: the actor may not read reports, or not for that county.
    """
    filters = scoped_filters(actor, filters)
    rows = _village_rows(filters).subquery("rows")
    at_target = _at_target_sql(rows.c.sales_fen, rows.c.target_fen)
    without_sales = sa.case((rows.c.sales_fen == 0, 1), else_=0)
    query = (sa.select(rows,
                       sa.func.count().over().label("total_villages"),
                       sa.func.sum(rows.c.sales_fen).over().label("total_sales"),
                       sa.func.sum(at_target).over().label("total_at_target"),
                       sa.func.sum(rows.c.target_fen).over().label("total_target"),
                       sa.func.sum(without_sales).over().label("total_without_sales"))
             .order_by(*_order_by(rows, sort)).offset(offset))
    if limit is not None:
        query = query.limit(limit)
    result = db.session.execute(query).all()
    if result:
        first = result[0]
        totals = _totals(first.total_villages, first.total_sales, first.total_at_target, first.total_target,
                         first.total_without_sales)
    else:
        # A page past the end (or nothing matches): the totals still describe every match.
        summary = db.session.execute(sa.select(sa.func.count(), sa.func.sum(rows.c.sales_fen), sa.func.sum(at_target),
                                               sa.func.sum(rows.c.target_fen), sa.func.sum(without_sales))).one()
        totals = _totals(*summary)
    return VillageSalesReport(filters=filters, sort=sort, items=[_item(row) for row in result],
                              total=totals["villages"], totals=totals)


def report_county_sales(actor: User, filters: ReportFilters) -> dict:
    """Sums per county and per zone (sales, villages, villages at target, target, progress).

    One statement: the village rows are a CTE aggregated twice (by county, by zone), so the
    allocations are read once. Counties come in the registry's order, zones in the plan's.

    :raise Forbidden: the actor may not read reports, or not for that county.
    """
    filters = scoped_filters(actor, filters)
    rows = _village_rows(filters).cte("village_rows")
    at_target = _at_target_sql(rows.c.sales_fen, rows.c.target_fen)
    without_sales = sa.case((rows.c.sales_fen == 0, 1), else_=0)

    def rollup(kind: str, key):
        """The village rows summed per ``key`` (county or zone), tagged with ``kind``."""
        return (sa.select(sa.literal(kind).label("kind"), key.label("key"),
                          sa.cast(sa.func.sum(rows.c.sales_fen), sa.BigInteger).label("sales_fen"),
                          sa.func.count().label("villages"),
                          sa.func.sum(at_target).label("villages_at_target"),
                          sa.cast(sa.func.sum(rows.c.target_fen), sa.BigInteger).label("target_fen"),
                          sa.func.sum(without_sales).label("villages_without_sales"))
                .group_by(key))

    statement = sa.union_all(rollup("county", rows.c.county), rollup("zone", rows.c.zone))
    counties, zones = [], []
    for row in db.session.execute(statement):
        figures = _totals(row.villages, row.sales_fen, row.villages_at_target, row.target_fen,
                          row.villages_without_sales)
        figures = {key: figures[key] for key in ("sales_fen", "villages", "villages_at_target", "target_fen",
                                                  "progress", "villages_without_sales")}
        if row.kind == "county":
            counties.append({"county": row.key, **figures})
        else:
            zones.append({"zone": row.key, "zone_label": ZONE_LABELS.get(row.key, "规划外"), **figures})
    county_order = {name: index for index, name in enumerate(COUNTIES)}
    zone_order = {zone: index for index, zone in enumerate(ZONE_LABELS)}
    counties.sort(key=lambda item: (county_order.get(item["county"], len(county_order)), item["county"]))
    zones.sort(key=lambda item: zone_order.get(item["zone"], len(zone_order)))
    totals = _totals(sum(c["villages"] for c in counties), sum(c["sales_fen"] for c in counties),
                     sum(c["villages_at_target"] for c in counties), sum(c["target_fen"] for c in counties),
                     sum(c["villages_without_sales"] for c in counties))
    return {"year": filters.year, "counties": counties, "zones": zones, "totals": totals}


def _sales_by_month(filters: ReportFilters) -> dict[int, int]:
    """{Shanghai month: sales in fen} for the filters (summary, or allocations for a category)."""
    if filters.category:
        paid = (sa.select(shanghai_month_sql(OrderAllocation.paid_at, filters.year).label("month"),
                          NET_SALES_FEN.label("net_fen"))
                .where(*_allocation_conditions(filters)).subquery("paid"))
        query = (sa.select(paid.c.month, sa.cast(sa.func.sum(paid.c.net_fen), sa.BigInteger))
                 .group_by(paid.c.month))
    else:
        query = (sa.select(VillageMonthSales.month, sa.cast(sa.func.sum(VillageMonthSales.sales_fen), sa.BigInteger))
                 .where(*_summary_conditions(filters)).group_by(VillageMonthSales.month))
    return {int(month): int(sales or 0) for month, sales in db.session.execute(query)}


def report_monthly_sales(actor: User, filters: ReportFilters) -> dict:
    """Sales per Asia/Shanghai month of the year with the running total, against the villages' targets.

    Orders are not counted per month across villages: an order reaching two villages is one
    order, and only the per-village figures are kept (see ``shop/reports/models.py``).

    :raise Forbidden: the actor may not read reports, or not for that county.
    """
    filters = scoped_filters(actor, filters)
    figures = _sales_by_month(filters)
    target = db.session.scalar(
        sa.select(sa.cast(sa.func.coalesce(sa.func.sum(
            sa.func.coalesce(VillageSalesTarget.target_fen, Village.sales_target_fen)), 0), sa.BigInteger))
        .select_from(Village)
        .outerjoin(VillageSalesTarget, sa.and_(VillageSalesTarget.village_id == Village.id,
                                               VillageSalesTarget.year == filters.year))
        .where(*_village_conditions(filters)))
    items, running = [], 0
    today = shanghai_today()
    for number in range(1, 13):
        sales = figures.get(number, 0)
        running += sales
        items.append({"month": f"{filters.year}-{number:02d}", "sales_fen": sales, "cumulative_fen": running,
                      "future": (filters.year, number) > (today.year, today.month)})
    target = int(target or 0)
    return {"year": filters.year, "county": filters.county, "township": filters.township, "zone": filters.zone,
            "channel": filters.channel, "category": filters.category, "items": items, "sales_fen": running,
            "target_fen": target, "progress": progress_of(running, target)}


def find_lagging_villages(actor: User, filters: ReportFilters, limit: int = 10) -> list[dict]:
    """The villages furthest from target, each with its cooperatives and products, so an official can act.

    Cooperatives are those based in the village; products are those that name the village as an
    origin (with their cooperative, wherever it is based) and whether they may be sold now.
    """
    report = report_village_sales(actor, filters, sort="progress", limit=limit)
    ids = [item["village_id"] for item in report.items]
    if not ids:
        return []
    cooperatives: dict[int, list[dict]] = {}
    for cooperative in db.session.scalars(sa.select(Cooperative).where(Cooperative.village_id.in_(ids))
                                          .order_by(Cooperative.id)):
        cooperatives.setdefault(cooperative.village_id, []).append(
            {"id": cooperative.id, "name": cooperative.name, "contact_name": cooperative.contact_name,
             "contact_phone": cooperative.contact_phone})
    products: dict[int, list[dict]] = {}
    sellable = sa.case((sellable_clause(), True), else_=False)
    rows = db.session.execute(
        sa.select(product_villages.c.village_id, Product.id, Product.name, Product.category, Product.status,
                  Cooperative.name.label("cooperative"), sellable.label("sellable"))
        .join(Product, Product.id == product_villages.c.product_id)
        .join(Cooperative, Cooperative.id == Product.cooperative_id)
        .where(product_villages.c.village_id.in_(ids))
        .order_by(product_villages.c.village_id, Product.id))
    for row in rows:
        products.setdefault(row.village_id, []).append(
            {"id": row.id, "name": row.name, "category": row.category,
             "category_label": CATEGORY_LABELS.get(row.category, row.category), "status": row.status,
             "cooperative": row.cooperative, "sellable": bool(row.sellable)})
    return [{**item, "cooperatives": cooperatives.get(item["village_id"], []),
             "products": products.get(item["village_id"], [])} for item in report.items]


# ---------------------------------------------------------------- canteens' reserved share
#
# One definition of what counts toward a canteen's reserved share (财库〔2021〕19号), used for
# one unit, for every unit at once and month by month, so the three can never disagree:
# the goods value of the unit's paid canteen orders net of refunds (``CANTEEN_PURCHASE_FEN``),
# in the Asia/Shanghai year of payment (``_canteen_purchase_conditions``). Unpaid and cancelled
# orders never have a payment time, so never count.

#: Who may see every unit's progress (the dashboard's audience).
#: Not the reviewers: they certify products; a unit's budget and purchases are for those who
#: oversee canteens (the same people who may open one unit, core.budget_units.get_budget_unit_for).
CANTEEN_OVERVIEW_ROLES = (Role.OFFICIAL, Role.ADMIN, Role.FINANCE)

#: What one canteen order contributes to its unit's reserved share.
CANTEEN_PURCHASE_FEN = Order.total_fen - Order.refunded_fen


def _canteen_purchase_conditions(year: int) -> list:
    """Conditions on ``Order`` selecting canteen purchases that count in the Shanghai ``year``."""
    start, end = shanghai_year_bounds(year)
    return [Order.budget_unit_id.is_not(None), Order.channel == "canteen", Order.status.in_(_PAID),
            Order.paid_at >= start, Order.paid_at < end]


def _purchased_sum():
    """SUM of ``CANTEEN_PURCHASE_FEN`` as a BIGINT, 0 over no rows."""
    return sa.cast(sa.func.coalesce(sa.func.sum(CANTEEN_PURCHASE_FEN), 0), sa.BigInteger)


def _share_item(unit: BudgetUnit, values: YearValues, purchased: int) -> dict:
    """A unit's figures for a year: the contract's fields plus the unit and what is left.

    ``values`` are the budget and share in force that year (``core.budget_units.values_in_force``),
    never the unit's current ones: a later change does not move a past year's target.
    """
    target = reserved_target_fen(values)
    purchased = int(purchased or 0)
    return {"year": values.year, "budget_unit_id": unit.id, "name": unit.name,
            "budget_fen": int(values.annual_canteen_budget_fen), "reserved_share": f"{values.reserved_share:f}",
            "reserved_target_fen": target, "purchased_fen": purchased, "progress": progress_of(purchased, target),
            "remaining_fen": max(target - purchased, 0)}


def _with_flags(item: dict, values: YearValues) -> dict:
    """What the pages also show: whether the unit has a quota that year, and whether its share is below 10%."""
    return {**item, "has_quota": item["reserved_target_fen"] > 0, "below_policy_minimum": below_policy_minimum(values)}


def _reserved_share(unit: BudgetUnit, year: int) -> tuple[dict, YearValues]:
    """One unit's figures for the year and the values in force then (unit already visible to the caller)."""
    values = year_values(unit.id, year)
    purchased = db.session.scalar(
        sa.select(_purchased_sum()).where(Order.budget_unit_id == unit.id, *_canteen_purchase_conditions(year)))
    return _share_item(unit, values, purchased), values


def report_reserved_share(actor: User, unit_id: int, year: int) -> dict:
    """A canteen's purchases in a Shanghai year against that year's reserved share (财库〔2021〕19号).

    ``purchased_fen`` is the goods value of the unit's paid canteen orders net of refunds, in
    the year of payment; unpaid and cancelled orders never have a payment time, so never count.
    ``budget_fen`` and the target are those in force that year. A unit without a quota
    (target 0) has ``progress`` 1.0: nothing is asked of it.

    :raise NotFound: no such unit, or another unit's buyer asking.
    :raise Forbidden: a role that may not see budget units.
    """
    unit: BudgetUnit = get_budget_unit_for(actor, unit_id)
    return _reserved_share(unit, year)[0]


def report_reserved_shares(actor: User, year: int) -> dict:
    """Every budget unit's reserved-share progress for the year (each with the budget and share in
    force that year), in one statement.

    Items come furthest behind first (lowest progress; on a tie, the most still to buy), units
    without a quota last, ordered in Python so both databases agree whatever their collation; totals
    cover the units with a quota (a unit without a canteen asks nothing and would only
    inflate "met").

    :raise Forbidden: a role without report rights.
    """
    if actor is None or not actor.has_role(*CANTEEN_OVERVIEW_ROLES):
        raise Forbidden("当前角色无权查看各单位预留份额")
    items = reserved_share_items(year)
    with_quota = [item for item in items if item["has_quota"]]
    target = sum(item["reserved_target_fen"] for item in with_quota)
    purchased = sum(item["purchased_fen"] for item in with_quota)
    totals = {"units": len(items), "units_with_quota": len(with_quota),
              "units_at_target": sum(1 for item in with_quota if item["purchased_fen"] >= item["reserved_target_fen"]),
              "units_below_policy": sum(1 for item in items if item["below_policy_minimum"]),
              "reserved_target_fen": target, "purchased_fen": purchased, "progress": progress_of(purchased, target),
              "remaining_fen": sum(item["remaining_fen"] for item in with_quota)}
    return {"year": year, "items": items, "totals": totals}


def reserved_share_items(year: int) -> list[dict]:
    """Every unit's reserved-share figures for the year, furthest behind first (no permission
    check: ``report_reserved_shares`` for callers, the daily reminders for the system)."""
    purchases = (sa.select(Order.budget_unit_id.label("budget_unit_id"), _purchased_sum().label("purchased_fen"))
                 .where(*_canteen_purchase_conditions(year))
                 .group_by(Order.budget_unit_id).subquery("purchases"))
    values = values_in_force(year)
    rows = db.session.execute(
        sa.select(BudgetUnit, values, sa.func.coalesce(purchases.c.purchased_fen, 0).label("purchased_fen"))
        .join(values, values.c.budget_unit_id == BudgetUnit.id)
        .outerjoin(purchases, purchases.c.budget_unit_id == BudgetUnit.id)
        ).all()
    items = []
    for row in rows:
        in_force = year_values_from_row(year, row)
        items.append(_with_flags(_share_item(row.BudgetUnit, in_force, row.purchased_fen), in_force))
    items.sort(key=lambda item: (not item["has_quota"], item["progress"], -item["remaining_fen"], item["name"],
                                 item["budget_unit_id"]))
    return items


def report_canteen_months(actor: User, unit_id: int, year: int) -> dict:
    """A canteen's counted purchases per Shanghai month of the year, with the running total and
    how far it had come toward that year's target.

    The months add up to ``report_reserved_share``'s ``purchased_fen`` (same conditions), and
    measure against the same target (the budget and share in force that year).

    :raise NotFound: no such unit, or another unit's buyer asking.
    :raise Forbidden: a role that may not see budget units.
    """
    unit: BudgetUnit = get_budget_unit_for(actor, unit_id)
    target = reserved_target_fen(year_values(unit.id, year))
    month = shanghai_month_sql(Order.paid_at, year)
    figures = {int(number): int(fen or 0) for number, fen in db.session.execute(
        sa.select(month, _purchased_sum())
        .where(Order.budget_unit_id == unit.id, *_canteen_purchase_conditions(year))
        .group_by(month))}
    today = shanghai_today()
    items, running = [], 0
    for number in range(1, 13):
        purchased = figures.get(number, 0)
        running += purchased
        items.append({"month": f"{year}-{number:02d}", "purchased_fen": purchased, "cumulative_fen": running,
                      "progress": progress_of(running, target), "future": (year, number) > (today.year, today.month)})
    return {"year": year, "budget_unit_id": unit.id, "items": items, "purchased_fen": running,
            "reserved_target_fen": target}


def report_canteen(actor: User, unit_id: int, year: int) -> dict:
    """Everything a canteen's page shows: the year's reserved share (with its flags), the months,
    and the orders still awaiting payment.

    :raise NotFound: no such unit, or another unit's buyer asking.
    :raise Forbidden: a role that may not see budget units.
    """
    unit: BudgetUnit = get_budget_unit_for(actor, unit_id)
    share, values = _reserved_share(unit, year)
    share = _with_flags(share, values)
    return {"share": share, "months": report_canteen_months(actor, unit_id, year),
            "pending": canteen_pending(actor, unit_id)}


def canteen_pending(actor: User, unit_id: int) -> dict:
    """The unit's canteen orders still awaiting payment (a transfer finance has not confirmed):
    they count once paid, in the year of payment.

    :raise NotFound: no such unit, or another unit's buyer asking.
    :raise Forbidden: a role that may not see budget units.
    """
    unit: BudgetUnit = get_budget_unit_for(actor, unit_id)
    count, total = db.session.execute(
        sa.select(sa.func.count(Order.id), sa.cast(sa.func.coalesce(sa.func.sum(Order.total_fen), 0), sa.BigInteger))
        .where(Order.budget_unit_id == unit.id, Order.channel == "canteen",
               Order.status == OrderStatus.PENDING_PAYMENT.value)).one()
    return {"orders": int(count or 0), "total_fen": int(total or 0)}


def list_canteen_orders(actor: User, unit_id: int, year: int, *, offset: int = 0, limit: int = 50) -> dict:
    """The unit's canteen orders placed or paid in the Shanghai year, newest first, one page of them.

    Each row says how much it counts toward the reserved share (0 for unpaid, cancelled or
    fully refunded orders) and whether this caller may open it (its buyer, finance, admins:
    the shop's own rule for order pages).

    :raise NotFound: no such unit, or another unit's buyer asking.
    :raise Forbidden: a role that may not see budget units.
    """
    unit: BudgetUnit = get_budget_unit_for(actor, unit_id)
    start, end = shanghai_year_bounds(year)
    counted = sa.case((sa.and_(*_canteen_purchase_conditions(year)), CANTEEN_PURCHASE_FEN), else_=0)
    in_year = sa.or_(sa.and_(Order.created_at >= start, Order.created_at < end),
                     sa.and_(Order.paid_at >= start, Order.paid_at < end))
    query = sa.select(Order, counted.label("counted_fen")).where(Order.budget_unit_id == unit.id, in_year)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    # The buyer's name is on every row: loaded with the page, not one query per row.
    rows = db.session.execute(query.options(joinedload(Order.buyer))
                              .order_by(Order.created_at.desc(), Order.id.desc()).offset(offset).limit(limit))
    sees_all = actor.has_role(Role.FINANCE, Role.ADMIN)
    items = [{"order": order, "counted_fen": int(counted_fen or 0), "buyer": order.buyer,
              "can_open": sees_all or order.buyer_id == actor.id} for order, counted_fen in rows]
    return {"year": year, "unit": unit, "items": items, "total": int(total or 0)}


# ---------------------------------------------------------------- reconciliation

_ANOMALY_LIMIT = 100


def reconcile_village_sales(year: int) -> Reconciliation:
    """Recompute every village's sales and orders for ``year`` from raw rows; compare with the report.

    The independent figure never reads the copies the report is built from: the village comes
    from the allocation's batch, the money from the line's unit price × the allocated quantity,
    the refund from the refund parts recorded per allocation, the payment time, channel and
    status from the order. It is compared village by village with what the report shows
    (sales and orders), and month by month and channel by channel with the summary behind it.
    Every allocation and line of the year is also checked for internal consistency.
    """
    outcome = Reconciliation(year=year)
    report = db.session.execute(_village_rows(ReportFilters(year=year))).all()
    outcome.villages = len(report)

    start, end = shanghai_year_bounds(year)
    refunded = (sa.select(RefundAllocation.allocation_id, sa.func.sum(RefundAllocation.amount_fen).label("fen"))
                .group_by(RefundAllocation.allocation_id).subquery("refund_parts"))
    net = OrderLine.unit_price_fen * OrderAllocation.quantity - sa.func.coalesce(refunded.c.fen, 0)
    raw = (sa.select(Batch.village_id.label("village_id"), Order.channel.label("channel"),
                     shanghai_month_sql(Order.paid_at, year).label("month"), Order.id.label("order_id"),
                     net.label("net_fen"))
           .select_from(OrderAllocation)
           .join(OrderLine, OrderLine.id == OrderAllocation.line_id)
           .join(Order, Order.id == OrderLine.order_id)
           .join(Batch, Batch.id == OrderAllocation.batch_id)
           .outerjoin(refunded, refunded.c.allocation_id == OrderAllocation.id)
           .where(Order.status.in_(_PAID), Order.paid_at >= start, Order.paid_at < end)
           .subquery("raw"))
    # Per (village, month, channel, order) first, so "orders" is a count of orders still contributing.
    per_order = (sa.select(raw.c.village_id, raw.c.month, raw.c.channel, raw.c.order_id,
                           sa.func.sum(raw.c.net_fen).label("net_fen"))
                 .group_by(raw.c.village_id, raw.c.month, raw.c.channel, raw.c.order_id).subquery("per_order"))
    recomputed = {
        (row.village_id, int(row.month), row.channel): (int(row.sales_fen or 0), int(row.orders))
        for row in db.session.execute(
            sa.select(per_order.c.village_id, per_order.c.month, per_order.c.channel,
                      sa.cast(sa.func.sum(per_order.c.net_fen), sa.BigInteger).label("sales_fen"),
                      sa.func.sum(sa.case((per_order.c.net_fen > 0, 1), else_=0)).label("orders"))
            .group_by(per_order.c.village_id, per_order.c.month, per_order.c.channel))
    }
    summary = {
        (row.village_id, int(row.month), row.channel): (int(row.sales_fen), int(row.orders))
        for row in db.session.execute(sa.select(VillageMonthSales).where(VillageMonthSales.year == year)).scalars()
    }
    by_village: dict[int, list[int]] = {}
    for (village_id, _, _), (sales, orders) in recomputed.items():
        figures = by_village.setdefault(village_id, [0, 0])
        figures[0] += sales
        figures[1] += orders
    cells = {}
    for key in recomputed.keys() | summary.keys():
        if recomputed.get(key, (0, 0)) != summary.get(key, (0, 0)):
            cells.setdefault(key[0], []).append({"month": key[1], "channel": key[2],
                                                 "summary": summary.get(key, (0, 0)),
                                                 "recomputed": recomputed.get(key, (0, 0))})
    seen = set()
    for row in report:
        seen.add(row.village_id)
        expected_sales, expected_orders = by_village.get(row.village_id, (0, 0))
        if (int(row.sales_fen), int(row.orders)) != (expected_sales, expected_orders) or row.village_id in cells:
            outcome.differences.append({
                "village_id": row.village_id, "village": row.village, "township": row.township,
                "county": row.county, "report_sales_fen": int(row.sales_fen), "recomputed_sales_fen": expected_sales,
                "report_orders": int(row.orders), "recomputed_orders": expected_orders,
                "months": sorted(cells.get(row.village_id, []), key=lambda c: (c["month"], c["channel"]))})
    for village_id in sorted((by_village.keys() | cells.keys()) - seen):
        expected_sales, expected_orders = by_village.get(village_id, (0, 0))
        outcome.differences.append({"village_id": village_id, "village": None, "township": None, "county": None,
                                    "report_sales_fen": 0, "recomputed_sales_fen": expected_sales,
                                    "report_orders": 0, "recomputed_orders": expected_orders,
                                    "months": cells.get(village_id, [])})

    _check_allocations(outcome, start, end, refunded)
    _check_lines(outcome, start, end, refunded)
    # Imported here: settlements builds on this package's exports (a module-level import would cycle).
    from shop.settlements import reconcile_settlements

    outcome.settlement_problems = reconcile_settlements(year)
    return outcome


def _note(outcome: Reconciliation, anomaly: dict) -> None:
    """Count an anomaly, keeping the first ``_ANOMALY_LIMIT`` for the printout."""
    outcome.anomaly_count += 1
    if len(outcome.anomalies) < _ANOMALY_LIMIT:
        outcome.anomalies.append(anomaly)


def _check_allocations(outcome: Reconciliation, start, end, refunded) -> None:
    """Every copied column of an allocation touching the year must equal its source."""
    A = OrderAllocation
    checks = {
        "village_id": A.village_id != Batch.village_id,
        "amount_fen": A.amount_fen != OrderLine.unit_price_fen * A.quantity,
        "refunded_fen": A.refunded_fen != sa.func.coalesce(refunded.c.fen, 0),
        "paid_at": A.paid_at.is_distinct_from(Order.paid_at),
        "channel": A.channel != Order.channel,
        "product_id": A.product_id != OrderLine.product_id,
        "order_id": A.order_id != OrderLine.order_id,
    }
    touches_year = sa.or_(sa.and_(A.paid_at >= start, A.paid_at < end),
                          sa.and_(Order.paid_at >= start, Order.paid_at < end))
    columns = [sa.case((condition, 1), else_=0).label(f"bad_{name}") for name, condition in checks.items()]
    query = (sa.select(A.id, A.order_id, *columns)
             .select_from(A)
             .join(OrderLine, OrderLine.id == A.line_id)
             .join(Order, Order.id == OrderLine.order_id)
             .join(Batch, Batch.id == A.batch_id)
             .outerjoin(refunded, refunded.c.allocation_id == A.id)
             .where(touches_year, sa.or_(*checks.values()))
             .order_by(A.id))
    for row in db.session.execute(query):
        _note(outcome, {"kind": "allocation", "id": row.id, "order_id": row.order_id,
                        "problems": [name for name in checks if getattr(row, f"bad_{name}")]})


def _check_lines(outcome: Reconciliation, start, end, refunded) -> None:
    """Each paid line of the year: its allocations add up to its quantity, total and refund, and its
    refund equals the refund parts recorded for its allocations."""
    A = OrderAllocation
    per_line = (sa.select(A.line_id,
                          sa.func.sum(A.quantity).label("quantity"),
                          sa.func.sum(A.amount_fen).label("amount_fen"),
                          sa.func.sum(A.refunded_fen).label("allocation_refunds"),
                          sa.func.sum(sa.func.coalesce(refunded.c.fen, 0)).label("refund_parts"))
                .outerjoin(refunded, refunded.c.allocation_id == A.id)
                .group_by(A.line_id).subquery("per_line"))
    quantity = sa.func.coalesce(per_line.c.quantity, 0)
    checks = {
        "quantity": OrderLine.quantity != quantity,
        "line_total_fen": OrderLine.line_total_fen != sa.func.coalesce(per_line.c.amount_fen, 0),
        "refunded_fen": OrderLine.refunded_fen != sa.func.coalesce(per_line.c.refund_parts, 0),
        "allocation_refunds": OrderLine.refunded_fen != sa.func.coalesce(per_line.c.allocation_refunds, 0),
    }
    columns = [sa.case((condition, 1), else_=0).label(f"bad_{name}") for name, condition in checks.items()]
    query = (sa.select(OrderLine.id, OrderLine.order_id, *columns)
             .join(Order, Order.id == OrderLine.order_id)
             .outerjoin(per_line, per_line.c.line_id == OrderLine.id)
             .where(Order.status.in_(_PAID), Order.paid_at >= start, Order.paid_at < end, sa.or_(*checks.values()))
             .order_by(OrderLine.id))
    for row in db.session.execute(query):
        _note(outcome, {"kind": "line", "id": row.id, "order_id": row.order_id,
                        "problems": [name for name in checks if getattr(row, f"bad_{name}")]})
