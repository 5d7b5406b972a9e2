"""Report figures, checked against the scenario's independent computation (plain Python over its inputs)."""
import pytest
import sqlalchemy as sa

from core.errors import Forbidden
from core.extensions import db
from core.models import Role, Village
from core.village_registry import COUNTIES, ZONE_LABELS
from shop.models import OrderAllocation
from shop.reports import services
from shop.reports.models import OrderVillageSales, VillageMonthSales
from shop.reports.services import ReportFilters
from shop.reports.summary import rebuild_summary


def _by_village(report) -> dict:
    """{village_id: (sales_fen, orders, target_fen)} of a report."""
    return {item["village_id"]: (item["sales_fen"], item["orders"], item["target_fen"]) for item in report.items}


def _assert_matches(report, expected: dict) -> None:
    """Every expected village is an item with exactly the expected figures, and nothing else is."""
    assert report.total == len(report.items) == len(expected)
    assert _by_village(report) == expected
    for item in report.items:
        sales, _, target = expected[item["village_id"]]
        assert item["progress"] == (sales / target if target else 1.0)
    assert report.totals["sales_fen"] == sum(sales for sales, _, _ in expected.values())
    assert report.totals["villages"] == len(expected)
    assert report.totals["villages_at_target"] == sum(1 for sales, _, target in expected.values() if sales >= target)
    assert report.totals["target_fen"] == sum(target for _, _, target in expected.values())


def test_every_village_figure_matches_the_independent_computation_in_both_years(scenario, official):
    s = scenario
    for year in (s.R, s.P):
        report = services.report_village_sales(official, ReportFilters(year=year))
        assert report.total == 1110
        _assert_matches(report, s.expected_villages(year))
    # Spelled out, so a reader sees the scenario's outcome (fen; orders):
    this_year = _by_village(services.report_village_sales(official, ReportFilters(year=s.R)))
    v = s.villages
    assert this_year[v["A"].id][:2] == (0, 0)            # O1 was paid at 23:30 on 31 Dec of last year
    assert this_year[v["B"].id][:2] == (20_000, 1)       # O2 (00:30 on 1 Jan); O4 fully refunded
    assert this_year[v["C"].id][:2] == (64_000, 1)       # O5 kiwi 70,000 − 14,000 + rice 10,000 − 2,000
    assert this_year[v["D"].id][:2] == (202_000, 3)      # O2 10,000 + O3 25,000 − 5,000 + O5 215,000 − 43,000
    last_year = _by_village(services.report_village_sales(official, ReportFilters(year=s.P)))
    assert last_year[v["A"].id][:2] == (50_000, 1) and last_year[v["B"].id][:2] == (30_000, 1)
    assert last_year[v["C"].id][:2] == (40_000, 1)       # O9, a canteen paid by card at 23:30 on 31 Dec


def test_targets_come_from_per_year_overrides_and_a_zero_target_counts_as_met(scenario, official):
    s = scenario
    report = services.report_village_sales(official, ReportFilters(year=s.R))
    items = {item["village_id"]: item for item in report.items}
    assert items[s.villages["D"].id]["target_fen"] == 100_000 and items[s.villages["D"].id]["progress"] == 2.02
    assert items[s.villages["B"].id]["target_fen"] == 0 and items[s.villages["B"].id]["progress"] == 1.0
    assert items[s.villages["A"].id]["target_fen"] == 15_000_000
    assert report.totals["villages_at_target"] == 2
    previous = {item["village_id"]: item for item in services.report_village_sales(official, ReportFilters(year=s.P)).items}
    assert previous[s.villages["D"].id]["target_fen"] == 15_000_000  # the override is for one year only


def test_filters_match_the_independent_computation(scenario, official):
    s = scenario
    vA, vD = s.villages["A"], s.villages["D"]
    cases = [
        (dict(county="古丈县"), dict(place=lambda v: v.county == "古丈县")),
        (dict(county="古丈县", township=vA.township), dict(place=lambda v: (v.county, v.township) == ("古丈县", vA.township))),
        (dict(zone=vD.zone), dict(place=lambda v: v.zone == vD.zone)),
        (dict(channel="online"), dict(channel="online")),
        (dict(channel="canteen"), dict(channel="canteen")),
        (dict(category="rice"), dict(category="rice")),
        (dict(category="tea"), dict(category="tea")),
        (dict(category="kiwifruit", channel="canteen"), dict(category="kiwifruit", channel="canteen")),
        (dict(county="花垣县", channel="canteen", category="rice"),
         dict(channel="canteen", category="rice", place=lambda v: v.county == "花垣县")),
    ]
    for year in (s.R, s.P):
        for given, expected_args in cases:
            report = services.report_village_sales(official, ReportFilters(year=year, **given))
            try:
                _assert_matches(report, s.expected_villages(year, **expected_args))
            except AssertionError as error:
                raise AssertionError(f"year {year}, filters {given}") from error


def test_county_and_zone_sums_match_the_independent_computation(scenario, official):
    s = scenario
    villages = {v.id: v for v in db.session.scalars(sa.select(Village))}
    for year in (s.R, s.P):
        expected = s.expected_villages(year)
        rollups = services.report_county_sales(official, ReportFilters(year=year))
        assert [c["county"] for c in rollups["counties"]] == list(COUNTIES)
        assert [z["zone"] for z in rollups["zones"]] == list(ZONE_LABELS)  # the registry has no village outside the plan
        for kind, key in (("counties", "county"), ("zones", "zone")):
            for group in rollups[kind]:
                members = [figures for vid, figures in expected.items() if getattr(villages[vid], key) == group[key]]
                sales = sum(f[0] for f in members)
                target = sum(f[2] for f in members)
                assert (group["sales_fen"], group["villages"], group["villages_at_target"], group["target_fen"]) == \
                       (sales, len(members), sum(1 for f in members if f[0] >= f[2]), target), (kind, group)
                assert group["progress"] == sales / target
        assert sum(c["villages"] for c in rollups["counties"]) == 1110
        assert rollups["totals"]["sales_fen"] == sum(f[0] for f in expected.values())


def test_monthly_trend_buckets_by_shanghai_month(scenario, official):
    s = scenario
    for year in (s.R, s.P):
        trend = services.report_monthly_sales(official, ReportFilters(year=year))
        expected = s.expected_months(year)
        assert [item["month"] for item in trend["items"]] == [f"{year}-{m:02d}" for m in range(1, 13)]
        assert {int(item["month"][5:]): item["sales_fen"] for item in trend["items"]} == expected
        assert trend["items"][-1]["cumulative_fen"] == trend["sales_fen"] == sum(expected.values())
        assert trend["target_fen"] == 1110 * 15_000_000 + (0 if year == s.P else 100_000 - 15_000_000 - 15_000_000)
    # The 23:30 payment on 31 December is December of last year; 00:30 on 1 January is January.
    assert services.report_monthly_sales(official, ReportFilters(year=s.P))["items"][11]["sales_fen"] == 120_000
    january = services.report_monthly_sales(official, ReportFilters(year=s.R))["items"][0]["sales_fen"]
    assert january >= 30_000
    county = services.report_monthly_sales(official, ReportFilters(year=s.R, county="凤凰县", category="rice"))
    assert {int(i["month"][5:]): i["sales_fen"] for i in county["items"]} == {
        m: v for m, v in _months_for(s, s.R, "凤凰县", "rice").items()}


def _months_for(s, year, county, category) -> dict:
    """Independent months for one county and category."""
    from core.timeutil import to_shanghai

    villages = {v.id: v for v in db.session.scalars(sa.select(Village))}
    months = dict.fromkeys(range(1, 13), 0)
    for fact in s.facts:
        local = to_shanghai(fact.paid_at)
        if local.year == year and villages[fact.village_id].county == county and fact.category == category:
            months[local.month] += fact.net_fen
    return months


def test_reserved_share_counts_paid_canteen_orders_net_of_refunds_in_the_year_of_payment(scenario, make):
    s = scenario
    finance = s.users["finance"]
    this_year = services.report_reserved_share(finance, s.unit.id, s.R)
    # O5 paid (295,000 − 59,000 refunded); O8 never confirmed; O9 was paid last year.
    assert this_year == {"year": s.R, "budget_unit_id": s.unit.id, "name": s.unit.name, "budget_fen": 10_000_000,
                         "reserved_share": "0.1000", "reserved_target_fen": 1_000_000, "purchased_fen": 236_000,
                         "progress": 0.236, "remaining_fen": 764_000}
    assert services.report_reserved_share(finance, s.unit.id, s.P)["purchased_fen"] == 40_000
    assert services.report_reserved_share(finance, s.unit.id, s.R - 5)["purchased_fen"] == 0
    no_quota = make.budget_unit(annual_canteen_budget_fen=0, reserved_share="0.10")
    assert services.report_reserved_share(finance, no_quota.id, s.R)["progress"] == 1.0


def test_default_sort_is_lowest_progress_first_and_pages_share_the_totals(scenario, official):
    s = scenario
    everything = services.report_village_sales(official, ReportFilters(year=s.R))
    progress = [item["progress"] for item in everything.items]
    assert progress == sorted(progress)
    ties = [item["village_id"] for item in everything.items if item["progress"] == 0]
    assert ties == sorted(ties)  # ties in registry order
    assert everything.items[-1]["village_id"] == s.villages["D"].id  # 202%: the best
    first = services.report_village_sales(official, ReportFilters(year=s.R), limit=500)
    third = services.report_village_sales(official, ReportFilters(year=s.R), offset=1000, limit=500)
    beyond = services.report_village_sales(official, ReportFilters(year=s.R), offset=2000, limit=500)
    assert len(first.items) == 500 and len(third.items) == 110 and beyond.items == []
    assert first.totals == third.totals == beyond.totals == everything.totals
    assert [i["village_id"] for i in first.items + third.items] == \
           [i["village_id"] for i in everything.items[:500] + everything.items[1000:]]
    by_sales = services.report_village_sales(official, ReportFilters(year=s.R), sort="-sales_fen", limit=3)
    assert [i["village_id"] for i in by_sales.items] == [s.villages["D"].id, s.villages["C"].id, s.villages["B"].id]
    registry = services.report_village_sales(official, ReportFilters(year=s.R), sort="registry", limit=5)
    assert [i["village_id"] for i in registry.items] == sorted(v.id for v in db.session.scalars(sa.select(Village)))[:5]


def test_lagging_villages_come_with_their_cooperatives_and_products(scenario, official):
    s = scenario
    lagging = services.find_lagging_villages(official, ReportFilters(year=s.R, county="古丈县"), limit=3)
    assert len(lagging) == 3 and all(item["county"] == "古丈县" for item in lagging)
    assert lagging[0]["progress"] == 0
    vA = next(item for item in services.find_lagging_villages(official, ReportFilters(year=s.R, county="古丈县"),
                                                               limit=1110) if item["village_id"] == s.villages["A"].id)
    assert [c["name"] for c in vA["cooperatives"]] and all(c["contact_phone"] for c in vA["cooperatives"])
    assert [(p["name"], p["sellable"]) for p in vA["products"]] == [("古丈毛尖", True)]


@pytest.mark.parametrize("role", [Role.OFFICIAL, Role.ADMIN, Role.PREFECTURE_REVIEWER, Role.FINANCE])
def test_report_roles_see_every_county(make, role):
    report = services.report_village_sales(make.user(role), ReportFilters(year=2026))
    assert report.total == 1110


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COOPERATIVE, Role.CANTEEN_BUYER])
def test_other_roles_may_not_read_reports(make, role):
    with pytest.raises(Forbidden):
        services.report_village_sales(make.user(role), ReportFilters(year=2026))


def test_county_reviewer_sees_only_their_county(make):
    reviewer = make.user(Role.COUNTY_REVIEWER, county="花垣县")
    report = services.report_village_sales(reviewer, ReportFilters(year=2026))
    expected = db.session.scalar(sa.select(sa.func.count()).select_from(Village).where(Village.county == "花垣县"))
    assert report.total == expected and {item["county"] for item in report.items} == {"花垣县"}
    assert [c["county"] for c in services.report_county_sales(reviewer, ReportFilters(year=2026))["counties"]] == ["花垣县"]
    with pytest.raises(Forbidden):
        services.report_village_sales(reviewer, ReportFilters(year=2026, county="古丈县"))


def test_summary_equals_a_rebuild_from_the_allocations(scenario, official):
    s = scenario
    def cells():
        """The summary's monthly rows that carry a figure."""
        # Rows at zero (an order refunded in full) carry no figure; only the figures must agree.
        return {(r.year, r.village_id, r.month, r.channel): (r.sales_fen, r.orders)
                for r in db.session.scalars(sa.select(VillageMonthSales)) if r.sales_fen or r.orders}

    def contributions():
        """The summary's per-order contributions."""
        return {(r.order_id, r.village_id, r.year, r.month, r.channel): r.net_fen
                for r in db.session.scalars(sa.select(OrderVillageSales))}

    before, before_contributions = cells(), contributions()
    report = services.report_village_sales(official, ReportFilters(year=s.R))
    counts = rebuild_summary()
    assert cells() == before and contributions() == before_contributions
    assert counts["contributions"] == len(before_contributions)
    assert services.report_village_sales(official, ReportFilters(year=s.R)).items == report.items


def test_a_change_rolled_back_leaves_the_summary_untouched(scenario, official):
    s = scenario
    report = services.report_village_sales(official, ReportFilters(year=s.R))
    allocation = db.session.scalars(sa.select(OrderAllocation).where(OrderAllocation.paid_at.is_not(None))).first()
    allocation.refunded_fen = allocation.amount_fen
    db.session.flush()
    db.session.rollback()
    assert services.report_village_sales(official, ReportFilters(year=s.R)).items == report.items


def test_orm_bulk_updates_of_allocations_move_the_summary_in_the_same_commit(scenario, official):
    s = scenario
    vD = s.villages["D"].id
    before = _by_village(services.report_village_sales(official, ReportFilters(year=s.R)))[vD]
    o3 = s.orders["O3"]["id"]
    db.session.execute(sa.update(OrderAllocation).where(OrderAllocation.order_id == o3)
                       .values(refunded_fen=OrderAllocation.amount_fen).execution_options(synchronize_session=False))
    db.session.commit()
    after = _by_village(services.report_village_sales(official, ReportFilters(year=s.R)))[vD]
    assert after == (before[0] - 20_000, before[1] - 1, before[2])  # O3 no longer contributes at all
