"""Account pages on a phone with the CSP on: an administrator opens a staff account and
deactivates it after the confirm question; the staff member's browser is signed out at once."""
import pytest

from core.models import Role
from tests.browser_helpers import sign_in

pytestmark = pytest.mark.browser


def test_admin_opens_and_deactivates_an_account_on_a_phone(page, make, browser, live_server):
    admin = make.user(Role.ADMIN)
    sign_in(page, admin.email)
    page.click("text=账号管理")
    page.click("text=开设账号")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.fill("#email", "finance.new@test.cn")
    page.fill("#display_name", "新财务")
    page.fill("#password", "maojian-tea-2026")
    page.select_option("#role", "finance")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert "已开设账号" in page.content()

    staff_context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=live_server.url)
    staff = staff_context.new_page()
    sign_in(staff, "finance.new@test.cn", password="maojian-tea-2026")
    assert "新财务" in staff.locator(".account").inner_text()

    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#reason", "岗位调整")
    page.click("text=停用账号")
    page.wait_for_load_state()
    assert "其所有登录已立即失效" in page.content()
    staff.reload()
    assert "登录" in staff.locator(".account").inner_text() and "新财务" not in staff.locator(".account").inner_text()
    staff_context.close()
