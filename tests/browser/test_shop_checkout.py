"""A consumer buys on a phone: finds a product, adds it to the cart as a guest, signs in, pays in the
simulated checkout and sees the order paid; the cooperative then sees its line to ship."""
import pytest

from core.models import Role
from tests.browser_helpers import sign_in
from tests.certification.factories import certified_product
from tests.traceability.factories import batch

pytestmark = pytest.mark.browser


def test_consumer_pays_in_the_simulated_checkout_and_the_cooperative_sees_the_line(page, make, tmp_path):
    tea = certified_product(make, name="古丈毛尖 明前特级", price_fen=12_800)
    batch(tea, quantity=20)
    consumer = make.user(Role.CONSUMER)
    coop_member = make.user(Role.COOPERATIVE, cooperative=tea.cooperative)

    page.goto("/")
    page.get_by_role("link", name="逛好物").first.click()
    page.get_by_role("link", name="古丈毛尖 明前特级").first.click()
    assert "今年已售" in page.locator("body").inner_text()
    page.fill("input[name=quantity]", "2")
    page.get_by_role("button", name="加入购物车").click()
    assert "¥256.00" in page.locator(".cart-total").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    page.get_by_role("link", name="去结算").click()
    page.fill("#email", consumer.email)
    page.fill("#password", "password123")
    page.click("button[type=submit]")
    page.wait_for_url("**/checkout")
    page.fill("#name", "李小花")
    page.fill("#phone", "13812345678")
    page.fill("#address", "湖南省吉首市人民北路 18 号")
    page.get_by_role("button", name="提交订单").click()

    page.wait_for_url("**/pay/sandbox/**")
    assert "模拟支付（离线演示，不会真实扣款）" in page.locator(".sandbox-banner").inner_text()
    page.screenshot(path=str(tmp_path / "sandbox.png"))
    page.click("#sandbox-pay")
    page.wait_for_url("**/orders/*")
    assert "已付款" in page.locator("h1 + p").inner_text()
    number = page.locator("h1").inner_text().replace("订单", "").strip()
    page.locator(".site-nav").get_by_role("link", name="我的订单").click()
    assert number in page.locator("body").inner_text()

    page.get_by_role("button", name="退出").click()
    sign_in(page, coop_member.email)
    page.locator(".site-nav").get_by_role("link", name="合作社订单").click()
    entry = page.locator(".book-entry").first
    assert number in entry.inner_text() and "古丈毛尖 明前特级 × 2" in entry.inner_text()
    assert "待发货" in entry.inner_text()
    entry.locator("input[name=carrier]").fill("顺丰速运")
    entry.locator("input[name=tracking_number]").fill("SF1029384756")
    entry.get_by_role("button", name="标记已发货").click()
    assert "SF1029384756" in page.locator(".book-entry").first.inner_text()
