"""The storefront shell and sign-in work in a real phone-sized browser, with Chinese glyphs."""
import pytest

from core.models import Role
from tests.browser_helpers import sign_in

pytestmark = pytest.mark.browser


def test_home_renders_chinese_on_a_phone(page, tmp_path):
    page.goto("/")
    assert page.locator(".brand").inner_text().startswith("香")
    assert "湘西香伴" in page.title()
    # No horizontal scrolling on a 390px phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "home.png"))
    # The CJK font is really used: the brand text is wider than boxes of a fallback font would be.
    assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK SC\"')")


def test_sign_in_shows_role_in_header(page, make):
    user = make.user(Role.COUNTY_REVIEWER, county="花垣县")
    sign_in(page, user.email)
    assert "县级审核员" in page.locator(".account").inner_text()


def test_county_page_lists_villages(page):
    page.goto("/villages/花垣县")
    assert page.get_by_text("十八洞村").count() >= 1
