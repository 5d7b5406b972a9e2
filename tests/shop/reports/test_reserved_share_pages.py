"""Government canteens' reserved share (预留份额): the canteen page, its orders, every unit at once
(admin list, dashboard section, API), all built on report_reserved_share's one definition.

Scenario figures (tests/shop/reports/scenario.py): the unit's budget is ¥100,000 at 10%, so the
target is ¥10,000. In year R it paid O5 (¥2,950 by confirmed transfer, ¥590 refunded: ¥2,360
counts); O8 awaits its transfer (¥400) and counts nowhere; O9 (¥400) was paid on 31 December of
P, Shanghai time, so counts in P.
"""
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from shop.reports import services


def _sign_in(client, user):
    """Sign in through the login form (session cookie)."""
    client.post("/login", data={"email": user.email, "password": "password123"})


def _page(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


@contextmanager
def _statements():
    """Count the SQL statements run inside the block."""
    seen = []

    def count(*args):
        seen.append(args[2])

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)


# ---------------------------------------------------------------- services

def test_months_add_up_to_the_reserved_share_of_each_year(scenario, make):
    s, finance = scenario, make.user(Role.FINANCE)
    for year in (s.R, s.P):
        share = services.report_reserved_share(finance, s.unit.id, year)
        months = services.report_canteen_months(finance, s.unit.id, year)
        assert sum(month["purchased_fen"] for month in months["items"]) == months["purchased_fen"] == \
               share["purchased_fen"]
    this_month = shanghai_today().month
    figures = {int(m["month"][5:]): m["purchased_fen"] for m in services.report_canteen_months(finance, s.unit.id, s.R)["items"]}
    assert figures[this_month] == 236_000 and sum(figures.values()) == 236_000
    last_year = services.report_canteen_months(finance, s.unit.id, s.P)["items"]
    assert last_year[11]["purchased_fen"] == 40_000 and last_year[11]["cumulative_fen"] == 40_000


def test_every_units_progress_agrees_with_the_single_unit_report(scenario, make):
    s, official = scenario, make.user(Role.OFFICIAL)
    behind = make.budget_unit(name="龙山县机关食堂", annual_canteen_budget_fen=50_000_000, reserved_share="0.30")
    no_canteen = make.budget_unit(name="州档案馆", annual_canteen_budget_fen=0, reserved_share="0.10")
    low = make.budget_unit(name="泸溪县机关食堂", annual_canteen_budget_fen=1_000_000, reserved_share="0.05")
    overview = services.report_reserved_shares(official, s.R)
    by_id = {item["budget_unit_id"]: item for item in overview["items"]}
    admin = make.user(Role.ADMIN)
    for unit in (s.unit, behind, no_canteen, low):
        single = services.report_reserved_share(admin, unit.id, s.R)  # the contract figures
        assert {k: by_id[unit.id][k] for k in single} == single
    assert by_id[s.unit.id]["purchased_fen"] == 236_000 and by_id[s.unit.id]["remaining_fen"] == 764_000
    assert by_id[no_canteen.id]["has_quota"] is False and by_id[low.id]["below_policy_minimum"] is True
    # Furthest behind first, units without a quota last.
    assert [item["budget_unit_id"] for item in overview["items"]] == [behind.id, low.id, s.unit.id, no_canteen.id]
    assert overview["totals"] == {
        "units": 4, "units_with_quota": 3, "units_at_target": 0, "units_below_policy": 1,
        "reserved_target_fen": 1_000_000 + 15_000_000 + 50_000, "purchased_fen": 236_000,
        "progress": 236_000 / 16_050_000, "remaining_fen": 764_000 + 15_000_000 + 50_000}


def test_every_units_progress_is_one_statement_whatever_the_number_of_units(scenario, make):
    s, official = scenario, make.user(Role.OFFICIAL)

    def statements_for_report() -> tuple[int, int]:
        db.session.expire_all()
        actor = db.session.get(type(official), official.id)
        actor.role  # loaded before counting: only the report's own statements are counted
        with _statements() as seen:
            overview = services.report_reserved_shares(actor, s.R)
        return len(seen), len(overview["items"])

    assert statements_for_report() == (1, 1)
    for n in range(6):
        make.budget_unit(name=f"县直机关食堂{n}")
    assert statements_for_report() == (1, 7)


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COOPERATIVE, Role.CANTEEN_BUYER, Role.COUNTY_REVIEWER,
                                  Role.PREFECTURE_REVIEWER])
def test_every_units_progress_is_for_those_who_oversee_canteens_only(client, make, role):
    response = client.get("/api/v1/reports/reserved-shares", headers=make.headers(make.user(role)))
    assert response.status_code == 403


def test_reserved_shares_api_answers_every_unit_with_progress(client, make, scenario):
    s = scenario
    response = client.get(f"/api/v1/reports/reserved-shares?year={s.R}", headers=make.headers(make.user(Role.FINANCE)))
    assert response.status_code == 200
    body = response.get_json()
    [item] = body["items"]
    assert (body["year"], item["budget_unit_id"], item["reserved_target_fen"], item["purchased_fen"], item["progress"]) == \
           (s.R, s.unit.id, 1_000_000, 236_000, 0.236)
    assert client.get("/api/v1/reports/reserved-shares?year=abc",
                      headers=make.headers(make.user(Role.FINANCE))).status_code == 422


# ---------------------------------------------------------------- the canteen page

def test_canteen_buyer_sees_budget_share_target_purchases_progress_and_what_is_left(client, make, scenario):
    s = scenario
    _sign_in(client, s.users["canteen"])
    home = _page(client, "/")
    assert 'href="/reports/canteen"' in home and "本单位食堂" in home
    response = client.get("/reports/canteen")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/reports/canteens/{s.unit.id}")
    page = _page(client, f"/reports/canteens/{s.unit.id}")
    assert s.unit.name in page and f"{s.R}年" in page
    assert "¥100,000.00" in page                                   # annual canteen food budget
    assert '<span class="value" id="reserved-share">10%</span>' in page
    assert '<strong id="reserved-target">¥10,000.00</strong>' in page
    assert '<span class="value" id="purchased">¥2,360.00</span>' in page  # O5 net of its refund; O8 unpaid
    assert "23.6%" in page and 'style="width: 23.6%"' in page       # progress and its bar
    assert '<span class="value" id="remaining">¥7,640.00</span>' in page
    assert "另有 1 笔订单（¥400.00）等待财务确认对公转账" in page       # O8
    this_month = f"{s.R}-{shanghai_today().month:02d}"
    row = page.split(f'data-month="{this_month}"')[1].split("</tr>")[0]
    assert "¥2,360.00" in row
    assert f'href="/reports/canteens/{s.unit.id}/orders?year={s.R}"' in page
    # No script of its own: only the site-wide static/js/app.js that base.html loads.
    assert "<script" not in page.split("</header>")[1].replace('<script src="/static/js/app.js" defer></script>', "")


def test_the_year_is_selectable_and_counts_by_shanghai_payment_year(client, make, scenario):
    s = scenario
    _sign_in(client, s.users["canteen"])
    page = _page(client, f"/reports/canteens/{s.unit.id}?year={s.P}")
    assert f'<option value="{s.P}" selected>' in page
    assert '<span class="value" id="purchased">¥400.00</span>' in page  # O9, paid 23:30 on 31 December of P
    assert f"{s.P}年度已结束，距目标差 ¥9,600.00" in page
    assert "等待财务确认" not in page                                   # a pending order is about now, not P
    assert client.get(f"/reports/canteens/{s.unit.id}?year=abc").status_code == 422
    assert client.get("/reports/canteen?year=2025").headers["Location"].endswith(
        f"/reports/canteens/{s.unit.id}?year=2025")


def test_a_unit_without_a_canteen_has_no_quota(client, make):
    unit = make.budget_unit(name="州档案馆", annual_canteen_budget_fen=0, reserved_share="0.10")
    _sign_in(client, make.user(Role.CANTEEN_BUYER, budget_unit=unit))
    page = _page(client, f"/reports/canteens/{unit.id}")
    assert "本单位无预留份额要求" in page and "未设食堂" in page
    assert 'id="share-progress"' not in page and "policy-warning" not in page


def test_a_share_below_ten_percent_is_warned_about(client, make):
    unit = make.budget_unit(annual_canteen_budget_fen=1_000_000, reserved_share="0.05")
    _sign_in(client, make.user(Role.OFFICIAL))
    page = _page(client, f"/reports/canteens/{unit.id}")
    assert 'id="policy-warning"' in page and "本单位预留比例为 5%，低于政策要求的不低于 10%" in page


def test_a_met_target_says_so(client, make, scenario):
    s = scenario
    low = make.budget_unit(annual_canteen_budget_fen=1_000_000, reserved_share="0.10")  # target ¥1,000
    db.session.execute(sa.text("UPDATE orders SET budget_unit_id = :low WHERE budget_unit_id = :unit"),
                       {"low": low.id, "unit": s.unit.id})
    db.session.commit()
    _sign_in(client, make.user(Role.FINANCE))
    page = _page(client, f"/reports/canteens/{low.id}?year={s.R}")
    assert f"已完成{s.R}年预留份额目标" in page and "236.0%" in page and 'style="width: 100.0%"' in page


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OFFICIAL, Role.FINANCE])
def test_staff_who_oversee_canteens_open_any_unit(client, make, scenario, role):
    s = scenario
    _sign_in(client, make.user(role))
    page = _page(client, f"/reports/canteens/{s.unit.id}?year={s.R}")
    assert "¥2,360.00" in page
    assert ("修改预算与比例" in page) is (role is Role.ADMIN)
    assert "采购帮扶产品" not in page  # the shopping link is for the unit's own buyers


def test_another_units_buyer_gets_404_and_other_roles_403(client, make, scenario):
    s = scenario
    _sign_in(client, make.user(Role.CANTEEN_BUYER))
    assert client.get(f"/reports/canteens/{s.unit.id}").status_code == 404
    assert client.get(f"/reports/canteens/{s.unit.id}/orders").status_code == 404
    for role in (Role.CONSUMER, Role.COOPERATIVE, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER):
        client.post("/logout")
        _sign_in(client, make.user(role))
        assert client.get(f"/reports/canteens/{s.unit.id}").status_code == 403
        assert client.get("/reports/canteen").status_code == 403


def test_anonymous_is_sent_to_login(client, make):
    unit = make.budget_unit()
    response = client.get(f"/reports/canteens/{unit.id}")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_unknown_unit_is_404(client, make):
    _sign_in(client, make.user(Role.ADMIN))
    assert client.get("/reports/canteens/999999").status_code == 404


# ---------------------------------------------------------------- the unit's orders

def test_unit_orders_show_what_counts_and_link_where_the_viewer_may_go(client, make, scenario):
    s = scenario
    o5, o8, o9 = (s.orders[key] for key in ("O5", "O8", "O9"))
    _sign_in(client, s.users["canteen"])
    page = _page(client, f"/reports/canteens/{s.unit.id}/orders?year={s.R}")
    assert "共 3 笔" in page

    def row(order):
        return page.split(f'data-order-id="{order["id"]}"')[1].split("</li>")[0]

    assert "计入份额 <strong>¥2,360.00</strong>" in row(o5) and "已退款 ¥590.00" in row(o5)
    assert "CG-2026-001" in row(o5) and "对公转账" in row(o5)
    assert "不计入份额（待付款）" in row(o8)
    assert "不计入份额（付款不在本年度）" in row(o9)
    assert f'href="/orders/{o5["id"]}"' in row(o5)  # the buyer placed it: they may open it
    previous = _page(client, f"/reports/canteens/{s.unit.id}/orders?year={s.P}")
    assert "共 1 笔" in previous and "计入份额 <strong>¥400.00</strong>" in previous

    # A colleague of the same unit sees the orders but cannot open another buyer's order page.
    client.post("/logout")
    _sign_in(client, make.user(Role.CANTEEN_BUYER, budget_unit=s.unit))
    page = _page(client, f"/reports/canteens/{s.unit.id}/orders?year={s.R}")
    assert f'data-order-id="{o5["id"]}"' in page and f'href="/orders/{o5["id"]}"' not in page


def test_unit_orders_page_through_fifty_at_a_time(client, make, scenario):
    s = scenario
    _sign_in(client, make.user(Role.FINANCE))
    page = _page(client, f"/reports/canteens/{s.unit.id}/orders?year={s.R}&per_page=2")
    assert page.count("data-order-id=") == 2 and "第 1 / 2 页" in page
    assert client.get(f"/reports/canteens/{s.unit.id}/orders?per_page=51").status_code == 422


# ---------------------------------------------------------------- the dashboard section

def test_dashboard_shows_every_units_reserved_share_progress(client, make, scenario, official):
    s = scenario
    make.budget_unit(name="州档案馆", annual_canteen_budget_fen=0)
    _sign_in(client, official)
    page = _page(client, f"/reports?year={s.R}")
    section = page.split('id="canteen-shares"')[1].split("</section>")[0]
    assert f"机关食堂预留份额（{s.R}年）" in section
    row = section.split(f'data-unit-id="{s.unit.id}"')[1].split("</li>")[0]
    assert s.unit.name in row and "23.6%" in row and "¥2,360.00 / 目标 1.0万元" in row
    assert f'href="/reports/canteens/{s.unit.id}?year={s.R}"' in row
    assert "未设食堂，无预留份额" in section
    assert "0 / 1 个单位已完成" in section


def test_reviewers_see_village_sales_but_not_canteens_budgets(client, make, scenario):
    s = scenario
    _sign_in(client, make.user(Role.COUNTY_REVIEWER, county="古丈县"))
    page = _page(client, f"/reports?year={s.R}")
    assert 'id="canteen-shares"' not in page and s.unit.name not in page


def test_dashboard_folds_units_beyond_the_first_ten(client, make, official):
    for n in range(12):
        make.budget_unit(name=f"县直机关食堂{n:02d}")
    _sign_in(client, official)
    section = _page(client, "/reports").split('id="canteen-shares"')[1].split("</section>")[0]
    assert section.count("data-unit-id=") == 12 and "其余 2 个单位" in section


def test_the_canteen_page_offers_next_year_whose_budget_is_set_in_advance(client, make):
    from core.timeutil import shanghai_today

    buyer = make.user(Role.CANTEEN_BUYER)
    _sign_in(client, buyer)
    page = _page(client, f"/reports/canteens/{buyer.budget_unit_id}")
    next_year = shanghai_today().year + 1
    assert f'<option value="{next_year}"' in page
