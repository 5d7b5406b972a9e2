"""The officials' dashboard, the village table and the downloads behind the session cookie."""
import csv
import io

import pytest

from core.models import Role


def _sign_in(client, user):
    """Sign in through the login form (session cookie)."""
    client.post("/login", data={"email": user.email, "password": "password123"})


def test_dashboard_shows_headline_charts_trend_and_lagging_villages(client, make, scenario, official):
    s = scenario
    _sign_in(client, official)
    response = client.get(f"/reports?year={s.R}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "消费帮扶销售报表" in page and "¥2,860.00" in page  # total sales of the year
    assert 'id="county-chart"' in page and page.count('class="bar-row"') == 8 + 4  # 8 counties, 4 zones
    assert 'id="monthly-trend"' in page and page.count('class="col') == 12
    assert 'id="lagging-villages"' in page and page.count('class="lagging-village"') == 10
    assert "下载 CSV" in page and "下载 Excel" in page and "@media print" in page
    # Charts are HTML/CSS, no scripts (only the site-wide static/js/app.js that base.html loads).
    assert "<script" not in page.split("</header>")[1].replace('<script src="/static/js/app.js" defer></script>', "")


def test_dashboard_lists_cooperatives_and_products_of_a_lagging_village(client, make, scenario, official):
    s = scenario
    _sign_in(client, official)
    township = s.villages["A"].township
    page = client.get(f"/reports?year={s.R}&county=古丈县").get_data(as_text=True)
    assert "古丈县" in page
    lagging = page.split('id="lagging-villages"')[1]
    assert f'data-village-id="{s.villages["A"].id}"' in lagging or township in lagging
    # The tea cooperative's home village is vA: filtered to its township, vA is among the ten.
    page = client.get(f"/reports?year={s.R}&county=古丈县&township={township}").get_data(as_text=True)
    lagging = page.split('id="lagging-villages"')[1]
    assert "古丈毛尖" in lagging and "在售" in lagging and "0743-1234567" in lagging


def test_dashboard_filters_are_kept_in_links_and_downloads(client, make, official):
    _sign_in(client, official)
    page = client.get("/reports?year=2025&zone=key_support&channel=canteen").get_data(as_text=True)
    assert "2025年 · 乡村振兴重点帮扶区 · 机关食堂" in page
    assert "/reports/village-sales.csv?year=2025&amp;zone=key_support&amp;channel=canteen" in page


def test_village_table_pages_and_sorts(client, make, scenario, official):
    s = scenario
    _sign_in(client, official)
    first = client.get(f"/reports/villages?year={s.R}&sort=-sales_fen").get_data(as_text=True)
    assert first.count("<tr data-village-id=") == 100 and "第 1 / 12 页" in first
    assert first.index(f'data-village-id="{s.villages["D"].id}"') < first.index(f'data-village-id="{s.villages["C"].id}"')
    last = client.get(f"/reports/villages?year={s.R}&page=12").get_data(as_text=True)
    assert last.count("<tr data-village-id=") == 10


def test_download_through_the_session_gives_the_same_rows(client, make, scenario, official):
    s = scenario
    _sign_in(client, official)
    response = client.get(f"/reports/village-sales.csv?year={s.R}&county=凤凰县")
    assert response.status_code == 200 and response.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert {row[1] for row in rows[1:]} == {"凤凰县"}
    assert client.get(f"/reports/village-sales.xlsx?year={s.R}").status_code == 200


def test_county_reviewer_dashboard_is_locked_to_their_county(client, make):
    reviewer = make.user(Role.COUNTY_REVIEWER, county="龙山县")
    _sign_in(client, reviewer)
    page = client.get("/reports").get_data(as_text=True)
    assert page.count('class="bar-row"') == 1 + 4 and "龙山县" in page and "<select name=\"county\" disabled>" in page
    assert client.get("/reports?county=吉首市").status_code == 403


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COOPERATIVE, Role.CANTEEN_BUYER])
def test_other_roles_get_403_pages(client, make, role):
    _sign_in(client, make.user(role))
    assert client.get("/reports").status_code == 403
    assert client.get("/reports/village-sales.csv").status_code == 403


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get("/reports")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("role", [Role.OFFICIAL, Role.ADMIN, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER,
                                  Role.FINANCE])
def test_report_link_is_in_the_header_for_report_roles(client, make, role):
    _sign_in(client, make.user(role))
    assert 'href="/reports">销售报表</a>' in client.get("/").get_data(as_text=True)


def test_report_link_is_hidden_from_consumers(client, make):
    _sign_in(client, make.user(Role.CONSUMER))
    assert "销售报表" not in client.get("/").get_data(as_text=True)


def test_bad_filter_on_the_page_is_a_clear_422(client, make, official):
    _sign_in(client, official)
    response = client.get("/reports?year=abc")
    assert response.status_code == 422 and "年份" in response.get_data(as_text=True)
