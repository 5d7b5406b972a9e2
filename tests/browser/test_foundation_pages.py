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


def test_a_visitor_signs_up_on_the_page_with_csrf_on(page):
    page.goto("/register")
    page.fill("#display_name", "吉首游客")
    page.fill("#email", "visitor@test.cn")
    page.fill("#password", "maojian-tea-2026")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert "注册成功" in page.content()
    assert "吉首游客" in page.locator(".account").inner_text()


def test_sign_up_errors_are_shown_next_to_the_field(page, make):
    taken = make.user()
    page.goto("/register")
    page.fill("#display_name", "游客")
    page.fill("#email", taken.email)
    page.fill("#password", "maojian-tea-2026")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert page.locator(".field-error").count() >= 1
    assert page.locator("#display_name").input_value() == "游客", "what was typed stays"
