"""marshmallow schemas for report queries and the rows they answer with."""
from marshmallow import EXCLUDE, Schema, fields, post_load, validate

from certification.models import CATEGORY_LABELS
from core.schemas import LabelledChoice
from core.village_registry import COUNTIES, ZONE_LABELS
from shop.models import CHANNEL_LABELS
from shop.reports.services import DEFAULT_SORT, SORTS, ReportFilters, default_year

YEAR = validate.Range(min=2000, max=2100, error="年份须在 2000 到 2100 之间")
FORMATS = ("json", "csv", "xlsx")


def _without_blanks(data: dict) -> dict:
    """Treat ``?county=`` (an empty form field) as no filter, and ``?year=`` as the default year."""
    return {key: value for key, value in data.items() if value.strip() != ""}


class ReportQuerySchema(Schema):
    """``?year=&county=&township=&zone=&channel=&category=&sort=&format=`` → ``ReportFilters`` and options."""

    class Meta:
        unknown = EXCLUDE  # page/per_page are read by core.http.page_params

    year = fields.Integer(load_default=default_year, validate=YEAR,
                          error_messages={"invalid": "年份必须是整数"})
    county = fields.String(load_default=None, allow_none=True,
                           validate=validate.OneOf(COUNTIES, error="未知的县市"))
    township = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40))
    zone = LabelledChoice(ZONE_LABELS, error="未知的分区", load_default=None, allow_none=True)
    channel = LabelledChoice(CHANNEL_LABELS, error="未知的销售渠道", load_default=None, allow_none=True)
    category = LabelledChoice(CATEGORY_LABELS, error="未知的品类", load_default=None, allow_none=True)
    sort = fields.String(load_default=DEFAULT_SORT, validate=validate.OneOf(SORTS, error="未知的排序方式"))
    format = fields.String(load_default="json", validate=validate.OneOf(FORMATS, error="格式须为 json、csv 或 xlsx"))

    def load_args(self, args) -> dict:
        """Load request args (blank values mean "no filter")."""
        return self.load(_without_blanks(args.to_dict()))

    @post_load
    def make_filters(self, data, **kwargs):
        """Split into the report's filters and how to present it."""
        filters = ReportFilters(year=data["year"], county=data["county"], township=data["township"],
                                zone=data["zone"], channel=data["channel"], category=data["category"])
        return {"filters": filters, "sort": data["sort"], "format": data["format"]}


class YearQuerySchema(Schema):
    """``?year=`` (default: the current Asia/Shanghai year)."""

    class Meta:
        unknown = EXCLUDE

    def load_args(self, args) -> dict:
        """Load request args (a blank year means the default)."""
        return self.load(_without_blanks(args.to_dict()))

    year = fields.Integer(load_default=default_year, validate=YEAR, error_messages={"invalid": "年份必须是整数"})


class VillageSalesItemSchema(Schema):
    """One village row, as fixed by the contract (plus the zone's Chinese label)."""

    village_id = fields.Integer()
    village = fields.String()
    township = fields.String()
    county = fields.String()
    zone = fields.String(allow_none=True)
    zone_label = fields.String()
    sales_fen = fields.Integer()
    orders = fields.Integer()
    target_fen = fields.Integer()
    progress = fields.Float()


class TotalsSchema(Schema):
    """Totals over every matching village."""

    sales_fen = fields.Integer()
    villages = fields.Integer()
    villages_at_target = fields.Integer()
    target_fen = fields.Integer()
    progress = fields.Float()
    villages_without_sales = fields.Integer()


class RollupSchema(TotalsSchema):
    """One county's or zone's sums."""

    county = fields.String()
    zone = fields.String(allow_none=True)
    zone_label = fields.String()


class CountySalesSchema(Schema):
    """``/reports/county-sales``: per county and per zone."""

    year = fields.Integer()
    counties = fields.List(fields.Nested(RollupSchema(exclude=("zone", "zone_label"))))
    zones = fields.List(fields.Nested(RollupSchema(exclude=("county",))))
    totals = fields.Nested(TotalsSchema)


class MonthSchema(Schema):
    """One Shanghai month of the trend."""

    month = fields.String()
    sales_fen = fields.Integer()
    cumulative_fen = fields.Integer()
    future = fields.Boolean()


class MonthlySalesSchema(Schema):
    """``/reports/monthly-sales``: twelve months with the running total against the target."""

    year = fields.Integer()
    county = fields.String(allow_none=True)
    township = fields.String(allow_none=True)
    zone = fields.String(allow_none=True)
    channel = fields.String(allow_none=True)
    category = fields.String(allow_none=True)
    items = fields.List(fields.Nested(MonthSchema))
    sales_fen = fields.Integer()
    target_fen = fields.Integer()
    progress = fields.Float()


class ReservedShareSchema(Schema):
    """``/budget-units/{id}/reserved-share``: the contract's fields plus the unit and what is left."""

    year = fields.Integer()
    budget_unit_id = fields.Integer()
    name = fields.String()
    budget_fen = fields.Integer()
    reserved_share = fields.String()
    reserved_target_fen = fields.Integer()
    purchased_fen = fields.Integer()
    progress = fields.Float()
    remaining_fen = fields.Integer()
    has_quota = fields.Boolean()
    below_policy_minimum = fields.Boolean()


class ReservedSharesTotalsSchema(Schema):
    """Sums over the units with a quota (a unit without a canteen asks nothing)."""

    units = fields.Integer()
    units_with_quota = fields.Integer()
    units_at_target = fields.Integer()
    units_below_policy = fields.Integer()
    reserved_target_fen = fields.Integer()
    purchased_fen = fields.Integer()
    progress = fields.Float()
    remaining_fen = fields.Integer()


class ReservedSharesSchema(Schema):
    """``/reports/reserved-shares``: every unit's progress, furthest behind first."""

    year = fields.Integer()
    items = fields.List(fields.Nested(ReservedShareSchema(exclude=("year",))))
    totals = fields.Nested(ReservedSharesTotalsSchema)


class VillageSalesSchema(Schema):
    """``/reports/village-sales`` as JSON (the view assembles it from the service's rows)."""

    year = fields.Integer()
    sort = fields.String()
    items = fields.List(fields.Nested(VillageSalesItemSchema))
    totals = fields.Nested(TotalsSchema)
    simulated_payment_orders = fields.Integer(metadata={"description": "当年经模拟支付（离线演示）的订单数"})
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()


class SimulatedCountSchema(Schema):
    simulated_payment_orders = fields.Integer(metadata={"description": "当年经模拟支付（离线演示）的订单数"})


class CountySalesOutSchema(CountySalesSchema, SimulatedCountSchema):
    """``/reports/county-sales`` with the count of simulated payments."""


class MonthlySalesOutSchema(MonthlySalesSchema, SimulatedCountSchema):
    """``/reports/monthly-sales`` with the count of simulated payments."""
