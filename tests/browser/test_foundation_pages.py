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


def test_sign_up_errors_are_shown_next_to_the_field(page):
    page.goto("/register")
    page.fill("#display_name", "游客")
    page.fill("#email", "visitor@test.cn")
    page.fill("#password", "12345678")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert "过于常见" in page.locator(".field-error").first.inner_text()
    assert page.locator("#display_name").input_value() == "游客", "what was typed stays"


def test_signing_up_with_a_taken_email_does_not_say_it_is_taken(page, make):
    taken = make.user()
    page.goto("/register")
    page.fill("#display_name", "游客")
    page.fill("#email", taken.email)
    page.fill("#password", "maojian-tea-2026")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert "已注册" not in page.locator("main").inner_text().replace("若该邮箱已有账号", "")
    assert page.locator(".flash").inner_text().startswith("注册申请已受理")


def test_a_confirmed_form_asks_first_under_the_csp(page, make):
    """static/js/app.js asks the data-confirm question; dismissing it sends nothing."""
    user = make.user()
    sign_in(page, user.email)
    page.goto("/account")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("text=退出所有其他设备")
    assert questions == ["确定退出所有其他设备上的登录吗？"]
    assert page.url.endswith("/account")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=退出所有其他设备")
    page.wait_for_load_state()
    assert "已退出所有其他设备上的登录" in page.content()
