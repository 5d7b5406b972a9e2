"""Search on a phone: type initials in the home page's box, see the marked result, filter by county."""
import pytest

from search.services import rebuild_index
from tests.search.helpers import sellable

pytestmark = pytest.mark.browser


def test_a_phone_user_finds_guzhang_maojian_by_initials_and_filters(page, make):
    rebuild_index()  # the index directory is shared by the session: start from this test's data
    sellable(make, "古丈毛尖 明前特级", county="古丈县")
    sellable(make, "古丈毛尖 雨前一级", county="古丈县")
    sellable(make, "毛尖红茶 拼配", county="花垣县", village="十八洞村")
    sellable(make, "永顺莓茶 特级", county="永顺县", category="berry_tea")

    page.goto("/")
    page.fill("#search-q", "gzmj")
    page.press("#search-q", "Enter")
    page.wait_for_url("**/search?q=gzmj")
    assert page.locator("#search-total").inner_text() == "2"
    assert page.locator(".result mark").first.inner_text() == "古丈毛尖"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling on a phone"

    page.fill("#search-q", "毛尖")
    page.press("#search-q", "Enter")
    page.wait_for_url("**/search?q=*")
    assert page.locator("#search-total").inner_text() == "3"
    page.select_option("#f-county", "花垣县")
    page.click(".search-filters button[type=submit]")
    page.wait_for_url("**county=*")
    assert page.locator("#search-total").inner_text() == "1"
    assert "毛尖红茶" in page.locator(".results").inner_text()
