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


DEMO_ACCOUNT = {"BANK_TRANSFER_PAYEE": "湘西州消费帮扶服务平台（测试）", "BANK_TRANSFER_BANK": "测试银行吉首支行",
                "BANK_TRANSFER_ACCOUNT": "6228 0000 1111 2222 333"}


@pytest.fixture
def bank_account(app):
    """The platform's 对公收款账户 configured for the served app."""
    app.config.update(DEMO_ACCOUNT)
    yield DEMO_ACCOUNT
    for name in DEMO_ACCOUNT:
        app.config.pop(name, None)


def test_canteen_buyer_sees_where_to_transfer_at_checkout_and_on_the_order_page(page, make, bank_account, tmp_path):
    tea = certified_product(make, name="保靖黄金茶 食堂装", price_fen=11_800, bulk_moq=10)
    batch(tea, quantity=50)
    canteen = make.user(Role.CANTEEN_BUYER)
    sign_in(page, canteen.email)
    page.goto(f"/products/{tea.id}")
    page.fill("input[name=quantity]", "10")
    page.get_by_role("button", name="加入购物车").click()
    page.get_by_role("link", name="去结算").click()
    page.wait_for_url("**/checkout")

    details = page.locator(".transfer-choice")
    assert details.is_visible()
    assert "¥1,180.00" in details.inner_text() and "6228 0000 1111 2222 333" in details.inner_text()
    page.get_by_label("在线支付（银行卡等）").check()
    assert not details.is_visible()  # the payee belongs to 对公转账 only
    page.get_by_label("对公转账（机关食堂）").check()
    assert details.is_visible()

    page.fill("#name", "王主任")
    page.fill("#phone", "0743-8222222")
    page.fill("#address", "吉首市世纪大道 1 号 州机关食堂")
    page.get_by_role("button", name="提交订单").click()
    page.wait_for_url("**/orders/*")
    number = page.locator("h1").inner_text().replace("订单", "").strip()
    box = page.locator(".pay-box")
    for label, value in (("收款户名", bank_account["BANK_TRANSFER_PAYEE"]),
                         ("开户银行", bank_account["BANK_TRANSFER_BANK"]),
                         ("银行账号", bank_account["BANK_TRANSFER_ACCOUNT"])):
        assert label in box.inner_text() and value in box.inner_text()
    assert "¥1,180.00" in box.inner_text()
    assert number in page.locator(".pay-box .transfer-note").inner_text()
    page.screenshot(path=str(tmp_path / "transfer.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_a_refund_asks_for_confirmation_naming_the_order_and_amount(page, make):
    tea = certified_product(make, name="古丈毛尖 明前特级", price_fen=12_800)
    batch(tea, quantity=5)
    order = place_paid_order(make, tea)
    sign_in(page, make.user(Role.FINANCE).email)
    page.goto(f"/orders/{order.id}")
    page.fill("input[name=amount_yuan]", "28")
    page.fill("input[name=reason]", "少发一盒")
    questions = []

    def answer(dialog, accept):
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, accept=False))
    page.get_by_role("button", name="退款", exact=True).click()
    assert questions and order.number in questions[0] and "28 元" in questions[0]
    assert "退款记录" not in page.locator("body").inner_text()  # dismissed: nothing was sent

    page.once("dialog", lambda d: answer(d, accept=True))
    page.get_by_role("button", name="退款", exact=True).click()
    page.wait_for_load_state()
    assert "退款已完成" in page.locator(".flash").inner_text()
    # One refund only: the dismissed question sent nothing.
    assert page.locator("body").inner_text().count("退款 ¥28.00：少发一盒") == 1
    assert "部分退款" in page.locator("h1 + p").inner_text()


def place_paid_order(make, product):
    """A consumer's order for one ``product``, paid through the simulated checkout's webhook path."""
    from core.extensions import db
    from shop import services
    from shop.models import Order

    buyer = make.user(Role.CONSUMER)
    order, _ = services.place_order(buyer, {
        "lines": [{"product_id": product.id, "quantity": 1}], "payment_method": "stripe",
        "shipping": {"name": "李小花", "phone": "13812345678", "address": "湖南省吉首市人民北路 18 号"},
        "purchase_order_no": None, "invoice": None})
    services.pay_in_sandbox(buyer, order.checkout_session_id)
    return db.session.get(Order, order.id)
