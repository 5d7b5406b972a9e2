"""An official raises one village's target on a phone (CSRF on, as in production) and the county
page shows it."""
import pytest

from core.models import Role
from core.timeutil import shanghai_today
from tests.browser_helpers import sign_in

pytestmark = pytest.mark.browser


def test_official_sets_a_villages_target_from_the_county_page_on_a_phone(page, make, tmp_path):
    official = make.user(Role.OFFICIAL)
    village = make.village("花垣县", "十八洞村")
    year = shanghai_today().year
    sign_in(page, official.email)
    page.goto(f"/villages/花垣县?year={year}")
    row = page.locator(f"li[data-village-id='{village.id}']")
    assert "目标 ¥150,000.00" in row.inner_text()
    row.get_by_role("link", name="设定").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text().startswith("十八洞村")
    page.fill("#target_yuan", "300000")
    page.fill("#reason", "示范村目标加倍")
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert f"{year} 年目标已设为 ¥300,000.00" in page.content()
    assert page.locator(f"#overrides tr[data-year='{year}']").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "targets-phone.png"), full_page=True)

    page.goto(f"/villages/花垣县?year={year}")
    assert "目标 ¥300,000.00（单独设定）" in page.locator(f"li[data-village-id='{village.id}']").inner_text()
