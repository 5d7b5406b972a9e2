"""Where a canteen pays: the 对公收款账户 settings, shown at checkout and on the order page with the
order number to write in the transfer note; never an invented account when none is configured."""
import re

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from shop import settings
from shop.models import Order
from tests.certification.factories import certified_product
from tests.shop.helpers import place
from tests.traceability.factories import batch

ACCOUNT = {"BANK_TRANSFER_PAYEE": "湘西州消费帮扶服务平台", "BANK_TRANSFER_BANK": "中国农业银行吉首市分行",
           "BANK_TRANSFER_ACCOUNT": "1851 0101 0400 12345"}
NOT_CONFIGURED = "平台尚未配置对公收款账户，请暂勿转账"


@pytest.fixture
def account(app):
    """The three settings configured as an operator would."""
    app.config.update(ACCOUNT)
    yield ACCOUNT
    for name in ACCOUNT:
        app.config.pop(name, None)


@pytest.fixture
def no_account(app, monkeypatch):
    """Nothing configured, whatever the environment running the tests holds."""
    for name in ACCOUNT:
        monkeypatch.delenv(name, raising=False)
        app.config.pop(name, None)


def _sign_in(client, user):
    client.post("/login", data={"email": user.email, "password": "password123"})


def _canteen_order(client, make, canteen=None):
    """A pending 对公转账 order of ¥1,180.00 placed by a canteen buyer (signed in afterwards)."""
    tea = certified_product(make, price_fen=11_800)
    batch(tea, quantity=100)
    canteen = canteen or make.user(Role.CANTEEN_BUYER)
    order = place(client, make, canteen, (tea, 10), payment_method="bank_transfer")
    _sign_in(client, canteen)
    return order


def _text(html: str) -> str:
    """The page's text with tags dropped, so sentences split by markup can be matched."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_canteen_order_page_shows_payee_bank_account_amount_and_the_order_number_for_the_note(client, make, account):
    order = _canteen_order(client, make)
    page = client.get(f"/orders/{order['id']}").get_data(as_text=True)
    text = _text(page)
    for value in ACCOUNT.values():
        assert value in page
    assert "收款户名" in text and "开户银行" in text and "银行账号" in text
    assert "转账金额 ¥1,180.00" in text
    assert f"转账附言 {order['number']} （订单号，请务必填写" in text
    assert NOT_CONFIGURED not in page


def test_unconfigured_account_is_said_plainly_with_whom_to_ask_and_no_account_is_shown(client, make, no_account):
    order = _canteen_order(client, make)
    text = _text(client.get(f"/orders/{order['id']}").get_data(as_text=True))
    assert NOT_CONFIGURED in text
    assert "请联系湘西香伴平台财务人员（或平台管理员）获取收款户名、开户银行和账号" in text
    assert order["number"] in text and "¥1,180.00" in text
    assert "银行账号" not in text and "请向下列对公收款账户转账" not in text


def test_an_account_missing_one_part_counts_as_not_configured(client, make, app, account):
    app.config["BANK_TRANSFER_ACCOUNT"] = "  "
    with app.test_request_context():
        assert settings.bank_transfer_account() is None
    order = _canteen_order(client, make)
    page = client.get(f"/orders/{order['id']}").get_data(as_text=True)
    assert NOT_CONFIGURED in page and ACCOUNT["BANK_TRANSFER_PAYEE"] not in page


def test_the_account_is_read_from_the_environment_and_trimmed(app, monkeypatch, no_account):
    monkeypatch.setenv("BANK_TRANSFER_PAYEE", " 某某单位 ")
    monkeypatch.setenv("BANK_TRANSFER_BANK", "某银行")
    monkeypatch.setenv("BANK_TRANSFER_ACCOUNT", "6222 0000")
    with app.test_request_context():
        assert settings.bank_transfer_account() == settings.BankAccount("某某单位", "某银行", "6222 0000")


def test_canteen_checkout_shows_the_account_with_the_bank_transfer_choice(client, make, account):
    tea = certified_product(make, price_fen=1_000, bulk_moq=10)
    batch(tea, quantity=100)
    _sign_in(client, make.user(Role.CANTEEN_BUYER))
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 10})
    text = _text(client.get("/checkout").get_data(as_text=True))
    assert "选择对公转账：提交订单后请向以下账户转账 ¥100.00" in text
    for value in ACCOUNT.values():
        assert value in text
    assert "转账附言 订单号（提交订单后显示，请务必填写" in text


def test_canteen_checkout_says_when_the_account_is_not_configured(client, make, no_account):
    tea = certified_product(make, price_fen=1_000, bulk_moq=10)
    batch(tea, quantity=100)
    _sign_in(client, make.user(Role.CANTEEN_BUYER))
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 10})
    text = _text(client.get("/checkout").get_data(as_text=True))
    assert NOT_CONFIGURED in text and "银行账号" not in text


def test_consumers_see_no_transfer_details_at_checkout_or_on_online_orders(client, make, account):
    tea = certified_product(make, price_fen=2_000)
    batch(tea, quantity=10)
    consumer = make.user()
    _sign_in(client, consumer)
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 1})
    assert ACCOUNT["BANK_TRANSFER_ACCOUNT"] not in client.get("/checkout").get_data(as_text=True)
    order = place(client, make, consumer, (tea, 1))
    page = client.get(f"/orders/{order['id']}").get_data(as_text=True)
    assert ACCOUNT["BANK_TRANSFER_ACCOUNT"] not in page and "转账附言" not in page


def test_placing_a_transfer_order_from_checkout_lands_on_the_payee_details(client, make, account):
    tea = certified_product(make, price_fen=1_000, bulk_moq=10)
    batch(tea, quantity=100)
    _sign_in(client, make.user(Role.CANTEEN_BUYER))
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 10})
    response = client.post("/checkout", data={"name": "王主任", "phone": "0743-8222222",
                                              "address": "吉首市世纪大道 1 号 州机关食堂",
                                              "payment_method": "bank_transfer"}, follow_redirects=True)
    order = db.session.scalars(sa.select(Order)).one()
    text = _text(response.get_data(as_text=True))
    assert "请按页面上的账户信息对公转账（附言填写订单号）" in text
    assert ACCOUNT["BANK_TRANSFER_ACCOUNT"] in text and f"转账附言 {order.number}" in text


def test_the_order_api_gives_canteen_systems_the_payee_and_the_transfer_note(client, make, account):
    order = _canteen_order(client, make)
    assert order["payment"]["bank_transfer"] == {
        "payee": ACCOUNT["BANK_TRANSFER_PAYEE"], "bank": ACCOUNT["BANK_TRANSFER_BANK"],
        "account": ACCOUNT["BANK_TRANSFER_ACCOUNT"], "note": order["number"]}


def test_the_order_api_says_null_when_no_account_is_configured(client, make, no_account):
    order = _canteen_order(client, make)
    assert order["payment"]["bank_transfer"] is None


def test_finance_is_asked_before_a_transfer_is_confirmed(client, make, account):
    order = _canteen_order(client, make)
    _sign_in(client, make.user(Role.FINANCE))
    for url in ("/finance/orders", f"/orders/{order['id']}"):
        html = client.get(url).get_data(as_text=True)
        form = html.split("/confirm-transfer")[1].split(">")[0]
        assert 'data-confirm="确认订单 ' in form and "已收到对公转账" in form and order["number"] in form, url
