"""The registry through the API and pages: exactly the plan's villages, counts and zones."""
from collections import Counter

from core.village_registry import COUNTIES, load_plan_text, parse_stated_counts


def _all_villages(client):
    response = client.get("/api/v1/villages?per_page=2000")
    assert response.status_code == 200
    return response.json


def test_api_lists_exactly_the_plans_1110_villages(client):
    body = _all_villages(client)
    assert body["total"] == 1110
    assert len(body["items"]) == 1110
    assert body["per_page"] == 2000
    item = body["items"][0]
    assert set(item) >= {"id", "name", "township", "county", "zone", "sales_target_fen"}
    assert all(v["sales_target_fen"] == 15_000_000 for v in body["items"])


def test_counts_per_county_and_zone_equal_the_plans_stated_counts(client):
    stated = parse_stated_counts(load_plan_text())
    items = _all_villages(client)["items"]
    assert Counter(v["zone"] for v in items) == Counter(stated.zones)
    assert dict(Counter((v["zone"], v["county"]) for v in items)) == stated.counties
    assert stated.zones == {"demonstration": 135, "key_support": 369, "consolidation_1": 193, "consolidation_2": 413}


def test_same_name_villages_in_one_county_are_distinct(client):
    items = client.get("/api/v1/villages?county=永顺县&q=团结村&per_page=100").json["items"]
    tuanjie = [v for v in items if v["name"] == "团结村"]
    assert len(tuanjie) == 4
    assert len({v["township"] for v in tuanjie}) == 4
    assert len({v["id"] for v in tuanjie}) == 4


def test_filters_by_county_township_and_zone(client):
    body = client.get("/api/v1/villages?county=花垣县&township=双龙镇&zone=demonstration").json
    names = {v["name"] for v in body["items"]}
    assert "十八洞村" in names
    assert all(v["county"] == "花垣县" and v["township"] == "双龙镇" for v in body["items"])


def test_unknown_filter_values_are_422(client):
    assert client.get("/api/v1/villages?county=长沙市").status_code == 422
    assert client.get("/api/v1/villages?zone=nowhere").status_code == 422


def test_pagination_envelope(client):
    body = client.get("/api/v1/villages?page=2&per_page=100").json
    assert (body["page"], body["per_page"], body["total"], len(body["items"])) == (2, 100, 1110, 100)


def test_get_one_village_and_404(client):
    first = _all_villages(client)["items"][0]
    assert client.get(f"/api/v1/villages/{first['id']}").json == first
    missing = client.get("/api/v1/villages/999999")
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "not_found"


def test_per_year_target_override_is_reported(client, make):
    from core.extensions import db
    from core.models import VillageSalesTarget
    from core.timeutil import shanghai_today

    village = make.village()
    db.session.add(VillageSalesTarget(village_id=village.id, year=shanghai_today().year, target_fen=20_000_000))
    db.session.commit()
    assert client.get(f"/api/v1/villages/{village.id}").json["sales_target_fen"] == 20_000_000


def test_county_page_lists_townships_and_zones(client):
    for county in COUNTIES:
        page = client.get(f"/villages/{county}")
        assert page.status_code == 200
    text = client.get("/villages/永顺县").get_data(as_text=True)
    assert "团结村" in text and "石堤镇" in text and "巩固拓展区" in text
    assert client.get("/villages/长沙县").status_code == 404
