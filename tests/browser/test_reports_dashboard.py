"""An official opens the sales dashboard on a phone: county chart, trend and the villages left behind."""
import pytest

from core.models import Role
from tests.browser_helpers import sign_in
from tests.shop.reports.scenario import build

pytestmark = pytest.mark.browser


def test_official_sees_county_chart_and_lagging_villages_on_a_phone(page, client, make, tmp_path):
    s = build(client, make)
    official = make.user(Role.OFFICIAL)
    sign_in(page, official.email)
    page.get_by_role("link", name="销售报表").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "消费帮扶销售报表"

    chart = page.locator("#county-chart")
    assert chart.is_visible()
    bars = chart.locator(".bar-row")
    assert bars.count() == 8
    assert "凤凰县" in chart.inner_text()
    fill = chart.locator(".bar-row", has_text="凤凰县").locator(".bar-fill")
    assert fill.bounding_box()["width"] > 0  # 凤凰县 has sales: its bar is drawn
    assert page.locator("#zone-chart .bar-row").count() == 4
    assert page.locator("#monthly-trend .col").count() == 12

    lagging = page.locator("#lagging-villages .lagging-village")
    assert lagging.count() == 10
    assert "完成率 0.0%" in lagging.first.inner_text()
    # Nothing spills sideways on a 390px phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "reports-phone.png"), full_page=True)

    # Narrow to one county from the filter form: the lagging list follows.
    page.select_option("select[name=county]", "古丈县")
    page.click("form.report-filters button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#county-chart .bar-row").count() == 1
    assert all("古丈县" in text for text in page.locator("#lagging-villages .where").all_inner_texts())

    # Printing keeps the charts and drops the controls.
    page.emulate_media(media="print")
    assert page.locator("form.report-filters").is_hidden()
    assert page.locator("#county-chart").is_visible()
    assert s.R == int(page.locator("select[name=year]").input_value())
