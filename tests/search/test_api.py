"""GET /api/v1/search: the contract's shape, filters and exact facets, escaping, paging, 422s."""
import pytest

from tests.search.helpers import revoke_silently, sellable, unsellable


def get(client, **params):
    return client.get("/api/v1/search", query_string=params)


def test_answers_the_contract_shape_for_anonymous_callers(client, make):
    tea = sellable(make, "古丈毛尖 明前特级")
    response = get(client, q="gzmj")
    assert response.status_code == 200
    body = response.get_json()
    assert {"items", "total", "facets"} <= body.keys()
    assert set(body["facets"]) >= {"county", "category"}
    item = body["items"][0]
    assert item["product_id"] == tea.id
    assert item["name"] == "古丈毛尖 明前特级"
    assert item["highlight"] == "<mark>古丈毛尖</mark> 明前特级"
    assert item["price_fen"] == 12_800 and isinstance(item["price_fen"], int)
    assert body["total"] == 1 and body["page"] == 1


def test_county_filter_and_facet_counts_are_exact(client, make):
    guzhang = make.village("古丈县")
    huayuan = make.village("花垣县", "十八洞村")
    sellable(make, "古丈毛尖 明前特级", villages=[guzhang])
    sellable(make, "古丈毛尖 雨前一级", villages=[guzhang])
    both = sellable(make, "毛尖红茶 拼配", villages=[huayuan, guzhang])
    kiwi = sellable(make, "十八洞红心猕猴桃", villages=[huayuan], category="kiwifruit")
    unsellable(make, "古丈毛尖 草稿")

    everything = get(client).get_json()
    assert everything["total"] == 4
    assert everything["facets"]["county"] == {"古丈县": 3, "花垣县": 2}
    assert everything["facets"]["category"] == {"tea": 3, "kiwifruit": 1}

    in_huayuan = get(client, county="花垣县").get_json()
    assert sorted(item["product_id"] for item in in_huayuan["items"]) == sorted([both.id, kiwi.id])
    assert in_huayuan["total"] == 2
    assert in_huayuan["facets"]["category"] == {"tea": 1, "kiwifruit": 1}
    assert in_huayuan["facets"]["county"] == {"花垣县": 2, "古丈县": 1}

    tea_in_huayuan = get(client, q="毛尖", county="花垣县", category="tea").get_json()
    assert [item["product_id"] for item in tea_in_huayuan["items"]] == [both.id]
    assert tea_in_huayuan["facets"] == {"county": {"古丈县": 1, "花垣县": 1}, "category": {"tea": 1},
                                        "evidence_type": {}}
    assert get(client, category="茶叶").get_json()["total"] == 3, "the Chinese label works as a filter too"


def test_empty_query_with_filters_browses_the_sellable_products(client, make):
    sellable(make, "古丈毛尖", county="古丈县")
    sellable(make, "永顺莓茶", county="永顺县", category="berry_tea")
    body = get(client, county="永顺县").get_json()
    assert [item["name"] for item in body["items"]] == ["永顺莓茶"]
    assert body["total"] == 1


def test_highlight_is_html_escaped(client, make):
    sellable(make, '<img src=x onerror=alert(1)>古丈毛尖 "特级"')
    item = get(client, q="毛尖").get_json()["items"][0]
    assert item["highlight"] == "&lt;img src=x onerror=alert(1)&gt;古丈<mark>毛尖</mark> &#34;特级&#34;"


def test_matches_outside_the_name_are_shown_from_where_they_matched(client, make):
    sellable(make, "高山绿茶", county="古丈县", description="与明前毛尖同一片茶园，清明前手工采摘。")
    item = get(client, q="毛尖").get_json()["items"][0]
    assert "<mark>毛尖</mark>" in item["highlight"]
    assert item["name"] == "高山绿茶"


def test_pages_are_disjoint_and_complete(client, make):
    made = {sellable(make, f"古丈毛尖 第{n}批").id for n in range(5)}
    seen = []
    for page in (1, 2, 3):
        body = get(client, q="毛尖", per_page=2, page=page).get_json()
        assert body["total"] == 5 and body["per_page"] == 2 and body["page"] == page
        seen += [item["product_id"] for item in body["items"]]
    assert len(seen) == 5 and set(seen) == made
    assert get(client, q="毛尖", per_page=2, page=4).get_json()["items"] == []


def test_a_revoked_product_is_gone_from_the_next_response(client, make):
    tea = sellable(make)
    assert get(client, q="毛尖").get_json()["total"] == 1
    revoke_silently(tea)
    body = get(client, q="毛尖").get_json()
    assert body["items"] == [] and body["total"] == 0 and body["facets"]["county"] == {}


def test_a_misspelling_gets_a_suggestion(client, make):
    sellable(make, "古丈毛尖 明前特级")
    body = get(client, q="古丈茅尖").get_json()
    assert body["total"] == 0
    assert body["suggestion"] == "古丈毛尖"
    assert get(client, q="古丈毛尖").get_json()["suggestion"] is None


@pytest.mark.parametrize("params, field", [
    ({"page": "0"}, "page"),
    ({"page": "abc"}, "page"),
    ({"page": "201"}, "page"),
    ({"per_page": "51"}, "per_page"),
    ({"per_page": "0"}, "per_page"),
    ({"county": "北京市"}, "county"),
    ({"category": "durian"}, "category"),
    ({"sort": "random"}, "sort"),
    ({"evidence_type": "iso9001"}, "evidence_type"),
    ({"in_stock": "maybe"}, "in_stock"),
    ({"q": "茶" * 65}, "q"),
])
def test_bad_parameters_answer_422_in_the_contract_shape(client, params, field):
    response = get(client, **params)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"]


def test_unknown_parameters_and_blank_filters_are_ignored(client, make):
    sellable(make)
    body = get(client, q="毛尖", county="", utm_source="wechat").get_json()
    assert body["total"] == 1
