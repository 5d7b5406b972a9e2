"""The storefront search page and box: Chinese, marked matches, filters with counts, clear errors."""
from tests.search.helpers import sellable


def test_home_page_has_the_search_box(client):
    html = client.get("/").get_data(as_text=True)
    assert 'action="/search"' in html and 'name="q"' in html


def test_results_page_marks_matches_and_counts(client, make):
    tea = sellable(make, "古丈毛尖 明前特级", county="古丈县")
    sellable(make, "永顺莓茶 特级", county="永顺县", category="berry_tea")
    response = client.get("/search", query_string={"q": "gzmj"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<mark>古丈毛尖</mark> 明前特级' in html
    assert '<strong id="search-total">1</strong> 个可售产品' in html
    assert f'data-product-id="{tea.id}"' in html
    assert "¥128.00" in html
    assert "古丈县 1" in html  # the county facet chip


def test_results_page_filters_by_county_with_counts_in_the_selects(client, make):
    sellable(make, "古丈毛尖", county="古丈县")
    sellable(make, "永顺莓茶", county="永顺县", category="berry_tea")
    html = client.get("/search", query_string={"county": "永顺县"}).get_data(as_text=True)
    assert '<strong id="search-total">1</strong>' in html
    assert "永顺莓茶" in html and "古丈毛尖" not in html
    assert '<option value="永顺县" selected>永顺县（1）</option>' in html


def test_results_page_escapes_names(client, make):
    sellable(make, "<b>古丈毛尖</b>")
    html = client.get("/search", query_string={"q": "毛尖"}).get_data(as_text=True)
    assert "&lt;b&gt;古丈<mark>毛尖</mark>&lt;/b&gt;" in html
    assert "<b>古丈" not in html


def test_results_page_offers_a_correction_for_a_misspelling(client, make):
    sellable(make, "古丈毛尖 明前特级")
    html = client.get("/search", query_string={"q": "茅尖"}).get_data(as_text=True)
    assert "您是不是要找" in html and "/search?q=%E6%AF%9B%E5%B0%96" in html
    assert "没有找到可售的产品" in html


def test_bad_parameters_show_what_to_fix(client):
    response = client.get("/search", query_string={"page": "0", "county": "北京市"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "页码" in html and "县市" in html and "没有这个县市" in html


def test_results_page_paginates(client, make):
    for n in range(3):
        sellable(make, f"古丈毛尖 第{n}批")
    html = client.get("/search", query_string={"q": "毛尖", "per_page": 2}).get_data(as_text=True)
    assert "第 1 / 2 页" in html and "下一页" in html
    html = client.get("/search", query_string={"q": "毛尖", "per_page": 2, "page": 2}).get_data(as_text=True)
    assert "第 2 / 2 页" in html and "上一页" in html


def test_results_link_to_the_product_page(client, make):
    tea = sellable(make)
    html = client.get("/search", query_string={"q": "毛尖"}).get_data(as_text=True)
    assert f'href="/products/{tea.id}"' in html
    assert client.get(f"/products/{tea.id}").status_code == 200
