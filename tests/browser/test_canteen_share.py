"""A canteen buyer follows their unit's reserved share on a phone; an administrator raises the
share through the edit form (CSRF on, as in production) and the canteen page follows."""
import pytest

from core.models import Role
from tests.browser_helpers import sign_in
from tests.shop.reports.scenario import build

pytestmark = pytest.mark.browser


def test_canteen_buyer_sees_progress_months_and_orders_on_a_phone(page, client, make, tmp_path):
    s = build(client, make)
    sign_in(page, s.users["canteen"].email)
    page.get_by_role("link", name="本单位食堂").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == s.unit.name
    assert page.locator("#reserved-share").inner_text() == "10%"
    assert page.locator("#reserved-target").inner_text() == "¥10,000.00"
    assert page.locator("#purchased").inner_text() == "¥2,360.00"
    assert page.locator("#remaining").inner_text() == "¥7,640.00"
    assert page.locator("#progress-value").inner_text() == "23.6%"
    track = page.locator("#share-progress .progress").bounding_box()["width"]
    fill = page.locator("#share-progress .progress > span").bounding_box()["width"]
    assert 0.2 * track < fill < 0.27 * track  # the bar is drawn at about 23.6%
    assert page.locator("#canteen-months .col").count() == 12
    assert page.locator("#pending-orders").is_visible()
    # Nothing spills sideways on a 390px phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "canteen-phone.png"), full_page=True)

    # Last year, chosen from the form: only O9 (paid 23:30 on 31 December, Shanghai time) counts.
    page.select_option("select[name=year]", str(s.P))
    page.click("form.canteen-year button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#purchased").inner_text() == "¥400.00"

    page.locator("#unit-orders").click()
    page.wait_for_load_state()
    assert page.locator("ol.canteen-orders > li").count() == 1
    assert "计入份额 ¥400.00" in page.locator("ol.canteen-orders").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_admin_raises_a_share_and_the_canteen_page_follows(page, make):
    unit = make.budget_unit(name="花垣县机关食堂", annual_canteen_budget_fen=20_000_000, reserved_share="0.10")
    admin = make.user(Role.ADMIN)
    sign_in(page, admin.email)
    page.get_by_role("link", name="预算单位").click()
    page.wait_for_load_state()
    card = page.locator(f'.unit-card[data-unit-id="{unit.id}"]')
    assert "目标 ¥20,000.00" in card.inner_text()
    card.get_by_role("link", name="编辑").click()
    page.wait_for_load_state()
    assert page.locator("#annual_canteen_budget_yuan").input_value() == "200000.00"
    page.fill("#reserved_share", "0.08")
    page.fill("#reason", "试行比例")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert "注意：预留比例 8% 低于政策要求的 10%" in page.locator(".flash").inner_text()
    card = page.locator(f'.unit-card[data-unit-id="{unit.id}"]')
    assert "比例低于 10%" in card.inner_text() and "目标 ¥16,000.00" in card.inner_text()
    card.get_by_role("link", name="查看进度").click()
    page.wait_for_load_state()
    assert page.locator("#policy-warning").is_visible()
    assert page.locator("#reserved-target").inner_text() == "¥16,000.00"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_admin_sets_next_years_budget_on_a_phone_and_this_years_page_stays(page, make):
    from core.timeutil import shanghai_today

    this_year = shanghai_today().year
    unit = make.budget_unit(name="保靖县机关食堂", annual_canteen_budget_fen=20_000_000, reserved_share="0.10")
    sign_in(page, make.user(Role.ADMIN).email)
    page.goto(f"/budget-units/{unit.id}/edit")
    page.select_option("#year", str(this_year + 1))
    page.fill("#annual_canteen_budget_yuan", "300000")
    page.fill("#reserved_share", "0.15")
    page.fill("#reason", "明年预算已批复")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert f"{this_year + 1}年起：预算 ¥300,000.00，预留比例 15%" in page.locator(".flash").inner_text()
    # This year's card and page are as they were.
    card = page.locator(f'.unit-card[data-unit-id="{unit.id}"]')
    assert "目标 ¥20,000.00" in card.inner_text()
    card.get_by_role("link", name="查看进度").click()
    page.wait_for_load_state()
    assert page.locator("#reserved-target").inner_text() == "¥20,000.00"

    page.goto(f"/budget-units/{unit.id}/edit")
    rows = page.locator("#unit-years tbody tr")
    assert rows.count() == 2
    assert "单独记录" in rows.nth(0).inner_text() and "10%" in rows.nth(0).inner_text()
    assert "15%" in rows.nth(1).inner_text() and "¥45,000.00" in rows.nth(1).inner_text()
    assert f"{this_year + 1}年起" in page.locator("#unit-history").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
