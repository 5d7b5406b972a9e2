"""A budget unit's budget and reserved share are annual: a change applies from a year on (this
year by default, or the next), and never moves a year already behind us.

The scenario (tests/shop/reports/scenario.py) gives a unit with ¥100,000 at 10% (target
¥10,000); in year R it counted ¥2,360 of purchases, in P = R - 1 ¥400 (O9, paid on 31 December).
"""
import json
from datetime import date

import pytest
import sqlalchemy as sa

from core import budget_units
from core.audit import AuditEvent, verify_chain
from core.extensions import db
from core.models import BudgetUnit, BudgetUnitYear, Role
from core.timeutil import shanghai_today
from shop.reports import services
from tests.shop.reports.scenario import build

CONTRACT = ("year", "budget_fen", "reserved_target_fen", "purchased_fen", "progress")


@pytest.fixture
def scenario(client, make):
    return build(client, make)


def _patch(client, make, unit_id, body, admin=None):
    admin = admin or make.user(Role.ADMIN)
    return client.patch(f"/api/v1/budget-units/{unit_id}", json=body, headers=make.headers(admin))


def _share(client, make, unit_id, year) -> dict:
    """The contract's figures of ``GET /budget-units/{id}/reserved-share?year=``."""
    response = client.get(f"/api/v1/budget-units/{unit_id}/reserved-share?year={year}",
                          headers=make.headers(make.user(Role.FINANCE)))
    assert response.status_code == 200
    return {key: response.get_json()[key] for key in CONTRACT}


def _records(unit_id) -> dict:
    """{year: (budget_fen, share)} of the unit's own year records, read fresh."""
    db.session.expire_all()
    return {row.year: (int(row.annual_canteen_budget_fen), str(row.reserved_share.normalize()))
            for row in db.session.scalars(sa.select(BudgetUnitYear).where(BudgetUnitYear.budget_unit_id == unit_id))}


def _unit_values(unit_id):
    db.session.expire_all()
    unit = db.session.get(BudgetUnit, unit_id)
    return int(unit.annual_canteen_budget_fen), str(unit.reserved_share.normalize())


def _events(unit_id):
    return [json.loads(event.data) for event in db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.subject_type == "budget_unit", AuditEvent.subject_id == unit_id,
                                    AuditEvent.action == "update").order_by(AuditEvent.id))]


def _next_year(monkeypatch, year):
    """Make the service's clock say it is spring of ``year`` (Asia/Shanghai)."""
    monkeypatch.setattr("core.budget_units.shanghai_today", lambda: date(year, 3, 1))


# ---------------------------------------------------------------- past years stay as they were

def test_editing_this_year_leaves_last_years_target_and_progress_as_they_were(client, make, scenario):
    s = scenario
    last_year, long_ago = _share(client, make, s.unit.id, s.P), _share(client, make, s.unit.id, s.P - 3)
    assert last_year == {"year": s.P, "budget_fen": 10_000_000, "reserved_target_fen": 1_000_000,
                         "purchased_fen": 40_000, "progress": 0.04}
    response = _patch(client, make, s.unit.id, {"annual_canteen_budget_fen": 20_000_000, "reserved_share": "0.20"})
    assert response.status_code == 200
    assert _share(client, make, s.unit.id, s.P) == last_year
    assert _share(client, make, s.unit.id, s.P - 3) == long_ago       # years before the first record follow it
    assert _share(client, make, s.unit.id, s.R) == {"year": s.R, "budget_fen": 20_000_000,
                                                    "reserved_target_fen": 4_000_000, "purchased_fen": 236_000,
                                                    "progress": 236_000 / 4_000_000}
    # One row froze last year (and with it every earlier year); this year is the unit's own values.
    assert _records(s.unit.id) == {s.P: (10_000_000, "0.1")}
    assert _unit_values(s.unit.id) == (20_000_000, "0.2")
    # The months of last year still measure against last year's target.
    months = services.report_canteen_months(s.users["finance"], s.unit.id, s.P)
    assert months["reserved_target_fen"] == 1_000_000 and months["items"][11]["progress"] == 0.04


def test_last_years_canteen_page_shows_last_years_budget_and_share(client, make, scenario):
    s = scenario
    assert _patch(client, make, s.unit.id, {"annual_canteen_budget_fen": 20_000_000, "reserved_share": "0.20"}
                  ).status_code == 200
    client.post("/login", data={"email": s.users["canteen"].email, "password": "password123"})
    page = client.get(f"/reports/canteens/{s.unit.id}?year={s.P}").get_data(as_text=True)
    assert f"{s.P}年食堂食材采购预算" in page and '<span class="value" id="budget">¥100,000.00</span>' in page
    assert '<span class="value" id="reserved-share">10%</span>' in page
    assert '<strong id="reserved-target">¥10,000.00</strong>' in page and f"{s.P}年度已结束，距目标差 ¥9,600.00" in page
    row = page.split(f'data-month="{s.P}-12"')[1].split("</tr>")[0]
    assert "4.0%" in row                                                 # ¥400 of last year's ¥10,000
    page = client.get(f"/reports/canteens/{s.unit.id}?year={s.R}").get_data(as_text=True)
    assert '<span class="value" id="reserved-share">20%</span>' in page
    assert '<strong id="reserved-target">¥40,000.00</strong>' in page


def test_a_change_next_year_freezes_this_year_and_keeps_the_year_before(client, make, scenario, monkeypatch):
    s = scenario
    assert _patch(client, make, s.unit.id, {"reserved_share": "0.20"}).status_code == 200
    _next_year(monkeypatch, s.R + 1)
    assert _patch(client, make, s.unit.id, {"reserved_share": "0.30"}).status_code == 200
    assert _records(s.unit.id) == {s.P: (10_000_000, "0.1"), s.R: (10_000_000, "0.2")}
    assert [_share(client, make, s.unit.id, year)["reserved_target_fen"] for year in (s.P - 1, s.P, s.R, s.R + 1)] == \
           [1_000_000, 1_000_000, 2_000_000, 3_000_000]
    assert _events(s.unit.id)[1]["frozen_years"] == [
        {"year": s.R, "annual_canteen_budget_fen": 10_000_000, "reserved_share": "0.20"}]


# ---------------------------------------------------------------- next year's budget

def test_setting_next_year_records_it_without_changing_this_year(client, make, scenario):
    s = scenario
    this_year = _share(client, make, s.unit.id, s.R)
    response = _patch(client, make, s.unit.id, {"year": s.R + 1, "annual_canteen_budget_fen": 12_000_000,
                                                "reserved_share": "0.15", "reason": "州财政下达明年预算"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["applied"] == {"year": s.R + 1, "annual_canteen_budget_fen": 12_000_000, "reserved_share": "0.15",
                               "below_policy_minimum": False, "kept_years": []}
    assert _share(client, make, s.unit.id, s.R) == this_year
    assert _share(client, make, s.unit.id, s.P)["reserved_target_fen"] == 1_000_000
    assert _share(client, make, s.unit.id, s.R + 1)["reserved_target_fen"] == 1_800_000
    assert _share(client, make, s.unit.id, s.R + 2)["reserved_target_fen"] == 1_800_000  # and the years after
    # This year is frozen first; next year has its own record and becomes the unit's values from then on.
    assert _records(s.unit.id) == {s.R: (10_000_000, "0.1"), s.R + 1: (12_000_000, "0.15")}
    assert _unit_values(s.unit.id) == (12_000_000, "0.15")
    assert [item["year"] for item in body["years"]] == [s.R, s.R + 1]
    # Every unit's progress this year is still measured against this year's values.
    by_id = {item["budget_unit_id"]: item for item in services.report_reserved_shares(s.users["finance"], s.R)["items"]}
    assert by_id[s.unit.id]["reserved_target_fen"] == 1_000_000


def test_changing_this_year_after_next_year_was_set_keeps_next_years_own_values(client, make, scenario):
    s = scenario
    admin = make.user(Role.ADMIN)
    _patch(client, make, s.unit.id, {"year": s.R + 1, "reserved_share": "0.15"}, admin)
    response = _patch(client, make, s.unit.id, {"reserved_share": "0.12"}, admin)
    assert response.status_code == 200 and response.get_json()["applied"]["kept_years"] == [s.R + 1]
    assert [_share(client, make, s.unit.id, year)["reserved_target_fen"] for year in (s.P, s.R, s.R + 1, s.R + 2)] == \
           [1_000_000, 1_200_000, 1_500_000, 1_500_000]
    # Last year followed this year's frozen record; it gets its own before that record changes.
    assert _records(s.unit.id) == {s.P: (10_000_000, "0.1"), s.R: (10_000_000, "0.12"),
                                   s.R + 1: (10_000_000, "0.15")}
    [_, event] = _events(s.unit.id)
    assert (event["year"], event["kept_years"], [frozen["year"] for frozen in event["frozen_years"]]) == \
           (s.R, [s.R + 1], [s.P])
    assert event["changes"] == {"reserved_share": {"from": "0.10", "to": "0.12"}}


def test_next_year_record_becomes_this_year_when_the_year_turns(client, make, scenario, monkeypatch):
    s = scenario
    _patch(client, make, s.unit.id, {"year": s.R + 1, "reserved_share": "0.15"})
    _next_year(monkeypatch, s.R + 1)
    assert _patch(client, make, s.unit.id, {"annual_canteen_budget_fen": 20_000_000}).status_code == 200
    assert _records(s.unit.id) == {s.R: (10_000_000, "0.1"), s.R + 1: (20_000_000, "0.15")}
    assert [_share(client, make, s.unit.id, year)["reserved_target_fen"] for year in (s.R, s.R + 1, s.R + 2)] == \
           [1_000_000, 3_000_000, 3_000_000]


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("year", ["last", "this_plus_two", "2026", 2026.5, None, "", [2026], 1999, 10**12])
def test_a_year_other_than_this_or_next_is_422_and_nothing_changes(client, make, year):
    today = shanghai_today().year
    year = {"last": today - 1, "this_plus_two": today + 2}.get(year, year) if isinstance(year, str) else year
    unit = make.budget_unit(annual_canteen_budget_fen=10_000_000, reserved_share="0.10")
    response = _patch(client, make, unit.id, {"year": year, "reserved_share": "0.30", "name": "改名食堂"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and list(error["fields"]) == ["year"]
    assert _unit_values(unit.id) == (10_000_000, "0.1") and db.session.get(BudgetUnit, unit.id).name != "改名食堂"
    assert _records(unit.id) == {} and _events(unit.id) == []


def test_a_bad_year_is_reported_with_the_other_bad_fields(client, make):
    unit = make.budget_unit()
    response = _patch(client, make, unit.id, {"year": 1990, "reserved_share": "2", "annual_canteen_budget_fen": -1})
    assert response.status_code == 422
    assert set(response.get_json()["error"]["fields"]) == {"year", "reserved_share", "annual_canteen_budget_fen"}


def test_setting_a_year_to_the_values_it_already_has_records_nothing(client, make):
    unit = make.budget_unit(annual_canteen_budget_fen=10_000_000, reserved_share="0.10")
    for body in ({"year": shanghai_today().year + 1, "reserved_share": "0.1"},
                 {"year": shanghai_today().year, "annual_canteen_budget_fen": 10_000_000}):
        assert _patch(client, make, unit.id, body).status_code == 200
    assert _records(unit.id) == {} and _events(unit.id) == []


def test_renaming_freezes_no_year(client, make):
    unit = make.budget_unit(name="旧名食堂")
    response = _patch(client, make, unit.id, {"name": "新名食堂", "year": shanghai_today().year + 1})
    assert response.status_code == 200 and response.get_json()["name"] == "新名食堂"
    assert _records(unit.id) == {}
    [event] = _events(unit.id)
    assert event["changes"] == {"name": {"from": "旧名食堂", "to": "新名食堂"}} and event["frozen_years"] == []


# ---------------------------------------------------------------- every unit at once

def test_every_units_report_uses_each_years_own_values(client, make, scenario):
    s = scenario
    other = make.budget_unit(name="龙山县机关食堂", annual_canteen_budget_fen=50_000_000, reserved_share="0.30")
    untouched = make.budget_unit(name="泸溪县机关食堂", annual_canteen_budget_fen=1_000_000, reserved_share="0.10")
    admin = make.user(Role.ADMIN)
    _patch(client, make, s.unit.id, {"reserved_share": "0.05"}, admin)          # below policy from this year
    _patch(client, make, other.id, {"year": s.R + 1, "annual_canteen_budget_fen": 0}, admin)
    official = make.user(Role.OFFICIAL)
    for year, expected in ((s.P, {s.unit.id: (10_000_000, "0.1000", False), other.id: (50_000_000, "0.3000", False)}),
                           (s.R, {s.unit.id: (10_000_000, "0.0500", True), other.id: (50_000_000, "0.3000", False)}),
                           (s.R + 1, {s.unit.id: (10_000_000, "0.0500", True), other.id: (0, "0.3000", False)})):
        items = {item["budget_unit_id"]: item for item in services.report_reserved_shares(official, year)["items"]}
        for unit_id, (budget, share, below) in expected.items():
            assert (items[unit_id]["budget_fen"], items[unit_id]["reserved_share"],
                    items[unit_id]["below_policy_minimum"]) == (budget, share, below)
            single = services.report_reserved_share(official, unit_id, year)
            assert {key: items[unit_id][key] for key in single} == single   # one definition for both
        assert items[untouched.id]["reserved_target_fen"] == 100_000
    assert services.report_reserved_shares(official, s.R + 1)["totals"]["units_with_quota"] == 2


def test_every_units_report_stays_one_statement_with_year_records(client, make, scenario):
    s = scenario
    admin = make.user(Role.ADMIN)
    for n in range(3):
        unit = make.budget_unit(name=f"县直机关食堂{n}")
        _patch(client, make, unit.id, {"year": s.R + 1, "reserved_share": "0.20"}, admin)
    seen = []

    def count(*args):
        seen.append(args[2])

    official = make.user(Role.OFFICIAL)
    db.session.expire_all()
    official = db.session.get(type(official), official.id)
    official.role  # loaded before counting
    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        report = services.report_reserved_shares(official, s.R)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert len(seen) == 1 and len(report["items"]) == 4


# ---------------------------------------------------------------- audit trail and the edit page

def test_every_change_is_audited_with_its_year_old_and_new_values(client, make, scenario):
    s = scenario
    admin = make.user(Role.ADMIN)
    _patch(client, make, s.unit.id, {"reserved_share": "0.20", "reason": "州政府文件"}, admin)
    _patch(client, make, s.unit.id, {"year": s.R + 1, "annual_canteen_budget_fen": 15_000_000}, admin)
    first, second = _events(s.unit.id)
    assert first == {"year": s.R, "changes": {"reserved_share": {"from": "0.10", "to": "0.20"}},
                     "below_policy_minimum": False, "kept_years": [],
                     "frozen_years": [{"year": s.P, "annual_canteen_budget_fen": 10_000_000, "reserved_share": "0.10"}]}
    assert second == {"year": s.R + 1,
                      "changes": {"annual_canteen_budget_fen": {"from": 10_000_000, "to": 15_000_000}},
                      "below_policy_minimum": False, "kept_years": [],
                      "frozen_years": [{"year": s.R, "annual_canteen_budget_fen": 10_000_000,
                                        "reserved_share": "0.20"}]}
    assert verify_chain().ok


def test_edit_page_lists_the_years_and_sets_next_year_from_the_form(client, make, scenario):
    s = scenario
    admin = make.user(Role.ADMIN)
    client.post("/login", data={"email": admin.email, "password": "password123"})
    _patch(client, make, s.unit.id, {"reserved_share": "0.20"}, admin)
    page = client.get(f"/budget-units/{s.unit.id}/edit").get_data(as_text=True)
    assert f'<option value="{s.R}" selected>' in page and f'<option value="{s.R + 1}" >' in page
    assert 'value="0.20"' in page and 'value="100000.00"' in page
    table = page.split('id="unit-years"')[1].split("</section>")[0]
    last = table.split(f'data-year="{s.P}"')[1].split("</tr>")[0]
    assert "及以前" in last and "10%" in last and "¥10,000.00" in last and "单独记录" in last
    this = table.split(f'data-year="{s.R}"')[1].split("</tr>")[0]
    assert "20%" in this and "¥20,000.00" in this and "现行值" in this and "单独记录" not in this
    assert "该年度及其后保持原值" in page and "以前年度已结束" in page

    response = client.post(f"/budget-units/{s.unit.id}/edit", data={
        "name": s.unit.name, "year": str(s.R + 1), "annual_canteen_budget_yuan": "120000", "reserved_share": "0.25",
        "reason": "明年预算"})
    assert response.status_code == 302
    flashed = client.get("/budget-units").get_data(as_text=True)
    assert f"已保存：{s.unit.name}（{s.R + 1}年起：预算 ¥120,000.00，预留比例 25%）" in flashed
    assert _share(client, make, s.unit.id, s.R)["reserved_target_fen"] == 2_000_000
    assert _share(client, make, s.unit.id, s.R + 1)["reserved_target_fen"] == 3_000_000
    next_year = client.get(f"/budget-units/{s.unit.id}/edit?year={s.R + 1}").get_data(as_text=True)
    assert f'<option value="{s.R + 1}" selected>' in next_year and 'value="120000.00"' in next_year
    history = next_year.split('id="unit-history"')[1]
    assert f"{s.R + 1}年起" in history and f"{s.R}年起" in history and "明年预算" in history
    assert f"先按原值单独记录：{s.R}年（¥100,000.00，20%）" in history

    # Changing this year now says next year keeps its own values.
    client.post(f"/budget-units/{s.unit.id}/edit", data={
        "name": s.unit.name, "year": str(s.R), "annual_canteen_budget_yuan": "100000", "reserved_share": "0.18"})
    assert f"{s.R + 1}年已有单独记录，保持不变" in client.get("/budget-units").get_data(as_text=True)


@pytest.mark.parametrize("year", ["1999", "abc", "²"])
def test_a_bad_year_on_the_form_shows_under_the_year_field_and_changes_nothing(client, make, year):
    unit = make.budget_unit(name="保靖县机关食堂", annual_canteen_budget_fen=30_000_000, reserved_share="0.10")
    admin = make.user(Role.ADMIN)
    client.post("/login", data={"email": admin.email, "password": "password123"})
    response = client.post(f"/budget-units/{unit.id}/edit", data={
        "name": unit.name, "year": year, "annual_canteen_budget_yuan": "1", "reserved_share": "0.5"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert page.count('class="field-error"') == 1
    assert 'class="field-error"' in page.split('id="year"')[1].split("<label")[0]
    assert _unit_values(unit.id) == (30_000_000, "0.1") and _records(unit.id) == {} and _events(unit.id) == []


def test_values_in_force_before_after_and_between_records():
    """The one definition, read directly: own record, else the first record for earlier years,
    else the unit's own values."""
    unit = BudgetUnit(name="定义测试食堂", annual_canteen_budget_fen=300, reserved_share="0.30")
    db.session.add(unit)
    db.session.flush()
    db.session.add_all([BudgetUnitYear(budget_unit_id=unit.id, year=2023, annual_canteen_budget_fen=100,
                                       reserved_share="0.10"),
                        BudgetUnitYear(budget_unit_id=unit.id, year=2024, annual_canteen_budget_fen=200,
                                       reserved_share="0.20")])
    db.session.commit()
    got = {year: (values.annual_canteen_budget_fen, str(values.reserved_share.normalize()), values.own_record)
           for year in (2020, 2023, 2024, 2025, 2030)
           for values in [budget_units.year_values(unit.id, year)]}
    assert got == {2020: (100, "0.1", False), 2023: (100, "0.1", True), 2024: (200, "0.2", True),
                   2025: (300, "0.3", False), 2030: (300, "0.3", False)}
