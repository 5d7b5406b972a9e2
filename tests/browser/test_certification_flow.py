"""A product goes from a cooperative's form through both reviews into the public catalogue."""
import re

import pytest

from core.models import Role
from tests.browser_helpers import sign_in

pytestmark = pytest.mark.browser


def _sign_out(page):
    page.click(".account button[type=submit]")
    page.wait_for_load_state()


def test_cooperative_applies_county_and_prefecture_approve_product_appears_in_catalogue(page, make):
    cooperative = make.cooperative(name="古丈县默戎镇测试茶叶专业合作社")
    member = make.user(Role.COOPERATIVE, cooperative=cooperative)
    county = make.user(Role.COUNTY_REVIEWER, county=cooperative.village.county)
    chief = make.user(Role.PREFECTURE_REVIEWER)

    sign_in(page, member.email)
    page.click("text=我的产品")
    page.click("text=登记新产品")
    page.fill("#name", "古丈毛尖 浏览器测试款")
    page.select_option("#category", "tea")
    page.fill("#description", "高山云雾，明前手工")
    page.fill("#unit", "盒")
    page.fill("#specification", "250克/盒")
    page.fill("#price_yuan", "168")
    page.click("button:has-text('登记产品')")
    assert "产品已登记为草稿" in page.inner_text("main")
    page.click("a:has-text('申请认定')")
    page.select_option("#ev_type_0", "green_food")
    page.fill("#ev_number_0", "LB-15-1711196965A")
    page.fill("#ev_issuer_0", "中国绿色食品发展中心")
    page.fill("#ev_valid_until_0", "2029-12-31")
    page.click("button:has-text('提交申请')")
    assert "待县级审核" in page.inner_text("main")
    _sign_out(page)

    sign_in(page, county.email)
    page.click("text=审核队列")
    item = page.locator(".queue-item", has_text="古丈毛尖 浏览器测试款")
    assert "已等待" in item.inner_text()
    item.locator("a.btn").click()
    page.fill("#comment", "材料齐全，产地核实无误")
    page.click("button:has-text('通过，转州级认定')")
    assert "已通过县级审核" in page.inner_text("main")
    _sign_out(page)

    sign_in(page, chief.email)
    page.goto("/review")
    page.locator(".queue-item", has_text="古丈毛尖 浏览器测试款").locator("a.btn").click()
    assert "材料齐全，产地核实无误" in page.inner_text("main")
    page.click("button:has-text('通过，发放证书')")
    flash = page.inner_text(".flash")
    number = re.search(r"XXXB-\d{4}-\d{6}", flash).group(0)
    _sign_out(page)

    page.goto("/catalogue")
    card = page.locator(".product-card", has_text="古丈毛尖 浏览器测试款")
    assert card.count() == 1
    text = card.inner_text()
    assert number in text and cooperative.name in text and cooperative.village.name in text
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_revoking_asks_first_and_a_hostile_product_name_stays_text(page, make):
    from tests.certification.factories import certified_product

    hostile = "莓茶'); document.title='pwned'; ('\"<b>"
    item = certified_product(make, name=hostile)
    chief = make.user(Role.PREFECTURE_REVIEWER)
    sign_in(page, chief.email)
    page.goto(f"/certifications/{item.certificate_id}")
    page.fill("#reason", "抽检不合格")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("button.danger")
    page.wait_for_timeout(300)
    assert questions and hostile in questions[0], questions  # the name shown as written, not run
    assert page.title() != "pwned"
    assert "已撤销" not in page.locator("section.card").first.inner_text()  # dismissed: nothing happened
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button.danger")
    page.wait_for_load_state()
    page.reload()
    assert "已撤销" in page.content()
