"""Reports API per the contract: shapes, pagination, roles, bad input, CSV/XLSX read back, reserved share."""
import csv
import io
from decimal import Decimal
from urllib.parse import quote

import pytest
from openpyxl import load_workbook

from core.models import Role
from core.timeutil import shanghai_today
from core.village_registry import ZONE_LABELS
from shop.reports.exports import HEADERS
from shop.reports.schemas import VillageSalesItemSchema

VILLAGE_KEYS = {"village_id", "village", "township", "county", "zone", "sales_fen", "orders", "target_fen", "progress"}
EXPECTED_HEADERS = ("村编号", "县市", "乡镇", "村", "分区", "销售额（元）", "订单数", "年度目标（元）", "完成率", "是否达标")


def _get(client, make, url, role=Role.OFFICIAL, **user):
    """GET ``url`` with the bearer token of a new user of ``role``."""
    return client.get(url, headers=make.headers(make.user(role, **user)))


def test_village_sales_lists_every_village_with_the_contract_fields(client, make, scenario):
    s = scenario
    response = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["year"] == s.R
    assert body["total"] == 1110 and body["page"] == 1 and body["per_page"] == 2000 and len(body["items"]) == 1110
    assert all(VILLAGE_KEYS <= set(item) for item in body["items"])
    assert {"sales_fen", "villages", "villages_at_target"} <= set(body["totals"])
    expected = s.expected_villages(s.R)
    assert {i["village_id"]: (i["sales_fen"], i["orders"], i["target_fen"]) for i in body["items"]} == expected
    assert body["totals"] == {**body["totals"], "sales_fen": 286_000, "villages": 1110, "villages_at_target": 2}
    d = next(i for i in body["items"] if i["village_id"] == s.villages["D"].id)
    assert isinstance(d["progress"], float) and d["progress"] == 2.02
    assert isinstance(d["sales_fen"], int) and d["zone"] in ("demonstration", "key_support", "consolidation_1",
                                                              "consolidation_2")
    # The endpoint sends the service's rows as they are: they must be exactly the schema's dump.
    assert body["items"] == VillageSalesItemSchema(many=True).dump(body["items"])


def test_year_defaults_to_the_current_shanghai_year(client, make):
    body = _get(client, make, "/api/v1/reports/village-sales").get_json()
    assert body["year"] == shanghai_today().year


def test_pagination_envelope_and_bounds(client, make):
    page = _get(client, make, "/api/v1/reports/village-sales?year=2026&per_page=500&page=3").get_json()
    assert (page["total"], page["page"], page["per_page"], len(page["items"])) == (1110, 3, 500, 110)
    assert page["totals"]["villages"] == 1110
    assert _get(client, make, "/api/v1/reports/village-sales?per_page=2001").status_code == 422
    assert _get(client, make, "/api/v1/reports/village-sales?page=0").status_code == 422


def test_filters_and_sort_over_http(client, make, scenario):
    s = scenario
    body = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}&county=凤凰县&channel=canteen&category=rice"
                              f"&sort=-sales_fen").get_json()
    assert all(item["county"] == "凤凰县" for item in body["items"])
    assert body["items"][0]["village_id"] == s.villages["D"].id and body["items"][0]["sales_fen"] == 172_000
    assert body["totals"]["sales_fen"] == 172_000
    zone = s.villages["D"].zone
    zoned = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}&zone={zone}").get_json()
    assert zoned["items"] and all(item["zone"] == zone for item in zoned["items"])
    township = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}&county=古丈县"
                                  f"&township={s.villages['A'].township}").get_json()
    assert {item["township"] for item in township["items"]} == {s.villages["A"].township}
    blank = _get(client, make, f"/api/v1/reports/village-sales?year=&county=&zone=&channel=").get_json()
    assert blank["total"] == 1110 and blank["year"] == shanghai_today().year


def test_chinese_labels_filter_like_their_codes(client, make, scenario):
    s = scenario
    zone = s.villages["D"].zone
    by_code = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}&zone={zone}&channel=canteen"
                                 f"&category=rice").get_json()
    label = ZONE_LABELS[zone]
    by_label = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}&zone={label}&channel=机关食堂"
                                  f"&category=优质稻米").get_json()
    assert by_label == by_code and by_code["totals"]["sales_fen"] > 0


@pytest.mark.parametrize("query,field", [
    ("year=abc", "year"), ("year=1999", "year"), ("county=长沙县", "county"), ("zone=urban", "zone"),
    ("channel=wholesale", "channel"), ("category=gold", "category"), ("sort=name", "sort"), ("format=pdf", "format"),
])
def test_bad_input_is_422_with_the_field(client, make, query, field):
    response = _get(client, make, f"/api/v1/reports/village-sales?{query}")
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


@pytest.mark.parametrize("role", [Role.OFFICIAL, Role.ADMIN, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER,
                                  Role.FINANCE])
def test_report_roles_may_read(client, make, role):
    for path in ("village-sales", "county-sales", "monthly-sales"):
        assert _get(client, make, f"/api/v1/reports/{path}", role).status_code == 200


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COOPERATIVE, Role.CANTEEN_BUYER])
def test_other_roles_get_403(client, make, role):
    for path in ("village-sales", "village-sales?format=csv", "county-sales", "monthly-sales"):
        response = _get(client, make, f"/api/v1/reports/{path}", role)
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"


def test_anonymous_gets_401(client):
    assert client.get("/api/v1/reports/village-sales").status_code == 401


def test_county_reviewer_is_kept_to_their_county(client, make):
    own = _get(client, make, "/api/v1/reports/village-sales?year=2026", Role.COUNTY_REVIEWER, county="保靖县").get_json()
    assert own["items"] and {item["county"] for item in own["items"]} == {"保靖县"}
    other = _get(client, make, "/api/v1/reports/village-sales?county=古丈县", Role.COUNTY_REVIEWER, county="保靖县")
    assert other.status_code == 403 and other.get_json()["error"]["code"] == "other_county"


def test_csv_reads_back_with_chinese_headers_and_the_same_rows(client, make, scenario):
    s = scenario
    response = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}&format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.data.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs
    assert "attachment" in response.headers["Content-Disposition"] and "filename*=UTF-8''" in response.headers[
        "Content-Disposition"]
    assert quote(f"村级销售报表_{s.R}年.csv") in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert tuple(rows[0]) == EXPECTED_HEADERS == HEADERS
    assert len(rows) == 1 + 1110
    json_ids = [i["village_id"] for i in _get(client, make, f"/api/v1/reports/village-sales?year={s.R}").get_json()["items"]]
    assert [int(row[0]) for row in rows[1:]] == json_ids  # same rows, same order
    by_id = {int(row[0]): row for row in rows[1:]}
    d = by_id[s.villages["D"].id]
    assert (d[1], d[3]) == (s.villages["D"].county, s.villages["D"].name)
    assert (d[5], d[6], d[7], d[8], d[9]) == ("2020.00", "3", "1000.00", "202.00%", "是")
    a = by_id[s.villages["A"].id]
    assert (a[5], a[6], a[7], a[8], a[9]) == ("0.00", "0", "150000.00", "0.00%", "否")


def test_xlsx_reads_back_with_chinese_headers_and_numbers(client, make, scenario):
    s = scenario
    response = _get(client, make, f"/api/v1/reports/village-sales?year={s.R}&format=xlsx&county=花垣县")
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    book = load_workbook(io.BytesIO(response.data))
    sheet = book["村级销售"]
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == EXPECTED_HEADERS
    assert all(row[1] == "花垣县" for row in rows[1:])
    c = next(row for row in rows[1:] if row[0] == s.villages["C"].id)
    assert Decimal(str(c[5])) == Decimal("640.00") and c[6] == 1 and c[7] == 150000
    assert c[8] == pytest.approx(64_000 / 15_000_000) and c[9] == "否"
    assert sheet.cell(row=2, column=9).number_format == "0.00%"
    about = {row[0]: row[1] for row in book["说明"].iter_rows(values_only=True)}
    assert about["范围"] == f"{s.R}年 · 花垣县" and about["村数"] == len(rows) - 1


def test_county_sales_per_county_and_zone(client, make, scenario):
    s = scenario
    body = _get(client, make, f"/api/v1/reports/county-sales?year={s.R}").get_json()
    assert body["year"] == s.R
    counties = {c["county"]: c for c in body["counties"]}
    assert counties["凤凰县"]["sales_fen"] == 202_000 and counties["花垣县"]["sales_fen"] == 64_000
    assert counties["古丈县"]["sales_fen"] == 20_000 and counties["吉首市"]["sales_fen"] == 0
    for item in body["counties"] + body["zones"]:
        assert {"sales_fen", "villages", "villages_at_target", "target_fen", "progress"} <= set(item)
    assert sum(z["villages"] for z in body["zones"]) == 1110
    assert {z["zone"] for z in body["zones"]} == {"demonstration", "key_support", "consolidation_1", "consolidation_2"}
    assert _get(client, make, "/api/v1/reports/county-sales?year=x").status_code == 422


def test_monthly_sales_has_twelve_shanghai_months(client, make, scenario):
    s = scenario
    body = _get(client, make, f"/api/v1/reports/monthly-sales?year={s.P}").get_json()
    assert [m["month"] for m in body["items"]] == [f"{s.P}-{n:02d}" for n in range(1, 13)]
    assert body["items"][11]["sales_fen"] == 120_000 and body["sales_fen"] == 120_000
    canteen = _get(client, make, f"/api/v1/reports/monthly-sales?year={s.P}&county=花垣县&channel=canteen").get_json()
    assert canteen["sales_fen"] == 40_000 and canteen["county"] == "花垣县"


def test_reserved_share_over_http(client, make, scenario):
    s = scenario
    url = f"/api/v1/budget-units/{s.unit.id}/reserved-share"
    own = client.get(f"{url}?year={s.R}", headers=make.headers(s.users["canteen"]))
    assert own.status_code == 200
    assert {k: own.get_json()[k] for k in ("year", "budget_fen", "reserved_target_fen", "purchased_fen", "progress")} == \
           {"year": s.R, "budget_fen": 10_000_000, "reserved_target_fen": 1_000_000, "purchased_fen": 236_000,
            "progress": 0.236}
    assert client.get(url, headers=make.headers(s.users["finance"])).get_json()["year"] == shanghai_today().year
    assert _get(client, make, f"{url}?year={s.P}").get_json()["purchased_fen"] == 40_000
    other_buyer = make.user(Role.CANTEEN_BUYER)
    assert client.get(url, headers=make.headers(other_buyer)).status_code == 404
    assert _get(client, make, url, Role.CONSUMER).status_code == 403
    assert _get(client, make, "/api/v1/budget-units/999999/reserved-share").status_code == 404
    assert _get(client, make, f"{url}?year=abc").status_code == 422
    assert client.get(url).status_code == 401
