"""Finance and order pages speak Chinese: refused confirmations and refunds say why in sentences with
¥ amounts and Chinese field labels, keep what was typed, change nothing; payment methods are shown
by Chinese name; irreversible actions ask first (and still work without JavaScript)."""
import re

import pytest
import sqlalchemy as sa

from core.audit import history_of
from core.extensions import db
from core.models import Role
from shop.models import Order, Refund
from tests.certification.factories import certified_product
from tests.shop.helpers import completed_event, deliver, place
from tests.traceability.factories import batch

RAW = ("amount_fen", "['", "reference:", "reason:", "sandbox", "bank_transfer")


def _sign_in(client, user):
    client.post("/login", data={"email": user.email, "password": "password123"})


def _text(html: str) -> str:
    """The page's visible text (tags and scripts' attributes dropped), whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _transfer_order(client, make):
    """A pending ¥1,180.00 对公转账 order, and a finance user signed in."""
    tea = certified_product(make, price_fen=11_800)
    batch(tea, quantity=100)
    order = place(client, make, make.user(Role.CANTEEN_BUYER), (tea, 10), payment_method="bank_transfer")
    _sign_in(client, make.user(Role.FINANCE))
    return order


def _paid_order(client, make, finance_role=Role.FINANCE):
    """A paid ¥128.00 online order (sandbox), and finance signed in."""
    tea = certified_product(make, price_fen=12_800)
    batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 1))
    assert deliver(client, completed_event(order)).status_code == 200
    _sign_in(client, make.user(finance_role))
    return order


def _assert_unchanged(order_id, status, refunded_fen=0, events=None):
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert order.status == status and order.refunded_fen == refunded_fen and order.payment_reference is None
    if events is not None:
        assert [e.action for e in history_of("order", order_id)] == events


def _no_raw_codes(text: str):
    for raw in RAW:
        assert raw not in text, raw
    assert not re.search(r"\d\s*分", text)


def test_a_transfer_of_the_wrong_amount_is_refused_in_yuan_and_the_typed_values_stay(client, make):
    order = _transfer_order(client, make)
    events = [e.action for e in history_of("order", order["id"])]
    response = client.post(f"/orders/{order['id']}/confirm-transfer",
                           data={"amount_yuan": "100", "reference": "B2026112900001"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    text = _text(html)
    assert "到账金额 ¥100.00 与订单应付金额 ¥1,180.00 不符，请核对银行流水。" in text
    assert "到账金额须等于订单应付金额 ¥1,180.00" in text
    assert 'name="amount_yuan" required inputmode="decimal" placeholder="1180.00" value="100"' in html
    assert 'value="B2026112900001"' in html
    _no_raw_codes(text)
    _assert_unchanged(order["id"], "pending_payment", events=events)


@pytest.mark.parametrize("typed, sentence", [
    ("abc", "到账金额请填写以元为单位的数字，如 1180 或 1180.50"),
    ("-5", "到账金额须大于 ¥0.00"),
    ("0", "到账金额须大于 ¥0.00"),
    ("", "请填写到账金额"),
])
def test_an_amount_that_is_not_a_positive_yuan_figure_gets_a_sentence_and_keeps_the_reference(client, make, typed,
                                                                                              sentence):
    order = _transfer_order(client, make)
    response = client.post(f"/orders/{order['id']}/confirm-transfer",
                           data={"amount_yuan": typed, "reference": "B2026112900001"})
    assert response.status_code == 422
    text = _text(response.get_data(as_text=True))
    assert "未能确认到账，请更正下面标出的内容。" in text and sentence in text
    assert 'value="B2026112900001"' in response.get_data(as_text=True)
    _no_raw_codes(text)
    _assert_unchanged(order["id"], "pending_payment")


def test_a_transfer_confirmed_meanwhile_is_explained_on_the_desk_though_it_left_the_list(client, make):
    order = _transfer_order(client, make)
    assert client.post(f"/orders/{order['id']}/confirm-transfer",
                       data={"amount_yuan": "1180", "reference": "B1", "next": "finance"}).status_code == 302
    again = client.post(f"/orders/{order['id']}/confirm-transfer",
                        data={"amount_yuan": "1180", "reference": "B2", "next": "finance"})
    assert again.status_code == 409
    text = _text(again.get_data(as_text=True))
    assert f"订单 {order['number']}：订单当前状态为“已付款”，不能确认到账" in text and "没有待确认的转账" in text
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).payment_reference == "B1"


def test_an_empty_bank_reference_is_asked_for_by_its_chinese_name(client, make):
    order = _transfer_order(client, make)
    response = client.post(f"/orders/{order['id']}/confirm-transfer", data={"amount_yuan": "1180", "reference": "  "})
    assert response.status_code == 422
    text = _text(response.get_data(as_text=True))
    assert "请填写流水号" in text and 'value="1180"' in response.get_data(as_text=True)
    _no_raw_codes(text)
    _assert_unchanged(order["id"], "pending_payment")


def test_the_finance_desk_shows_a_refused_confirmation_under_that_order_with_the_typed_values(client, make):
    order = _transfer_order(client, make)
    tea = certified_product(make, name="保靖黄金茶", price_fen=5_000)
    batch(tea, quantity=100)
    other = place(client, make, make.user(Role.CANTEEN_BUYER), (tea, 10), payment_method="bank_transfer")
    response = client.post(f"/orders/{order['id']}/confirm-transfer",
                           data={"amount_yuan": "1,000.5", "reference": "B77", "next": "finance"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "<h1>收款与退款</h1>" in html
    assert f"订单 {order['number']}：到账金额 ¥1,000.50 与订单应付金额 ¥1,180.00 不符" in _text(html)
    block = html[html.index(f'data-order-id="{order["id"]}"'):html.index(f'data-order-id="{other["id"]}"')]
    assert "到账金额须等于订单应付金额 ¥1,180.00" in block
    assert 'value="1,000.5"' in block and 'value="B77"' in block
    other_block = html[html.index(f'data-order-id="{other["id"]}"'):]
    assert "须等于" not in other_block and 'value="B77"' not in other_block
    _no_raw_codes(_text(html))
    ok = client.post(f"/orders/{order['id']}/confirm-transfer",
                     data={"amount_yuan": "¥1,180.00", "reference": "B77", "next": "finance"})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/finance/orders")
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).status == "paid"


def test_refunding_more_than_is_left_is_refused_in_yuan_and_the_form_keeps_amount_and_reason(client, make):
    order = _paid_order(client, make)
    url = f"/orders/{order['id']}/refund"
    response = client.post(url, data={"amount_yuan": "200", "reason": "整箱破损"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    text = _text(html)
    assert "退款金额 ¥200.00 超过可退金额，该订单最多还可退 ¥128.00。" in text
    assert "退款金额超过可退金额，最多还可退 ¥128.00" in text
    assert 'value="200"' in html and 'value="整箱破损"' in html
    _no_raw_codes(text)
    _assert_unchanged(order["id"], "paid")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Refund)) == 0


@pytest.mark.parametrize("amount, reason, sentence", [
    ("12.80", "", "请填写原因"),
    ("12.80", "   ", "请填写原因"),
    ("abc", "少发一盒", "退款金额请填写以元为单位的数字，如 1180 或 1180.50"),
    ("-5", "少发一盒", "退款金额须大于 ¥0.00"),
])
def test_a_refund_form_with_bad_input_answers_with_chinese_labels(client, make, amount, reason, sentence):
    order = _paid_order(client, make)
    response = client.post(f"/orders/{order['id']}/refund", data={"amount_yuan": amount, "reason": reason})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    text = _text(html)
    assert "未能退款，请更正下面标出的内容。" in text and sentence in text
    assert f'value="{amount}"' in html
    _no_raw_codes(text)
    _assert_unchanged(order["id"], "paid")


def test_a_refused_action_on_a_finished_order_explains_the_state(client, make):
    order = _paid_order(client, make, finance_role=Role.ADMIN)
    assert client.post(f"/orders/{order['id']}/refund", data={"amount_yuan": "128", "reason": "整单退货"}).status_code == 302
    again = client.post(f"/orders/{order['id']}/refund", data={"amount_yuan": "1", "reason": "再退"})
    assert again.status_code == 409
    assert "订单当前状态为“已退款”，不能退款" in _text(again.get_data(as_text=True))


def test_the_api_keeps_field_names_as_keys_while_its_messages_read_in_yuan(client, make):
    tea = certified_product(make, price_fen=11_800)
    batch(tea, quantity=100)
    order = place(client, make, make.user(Role.CANTEEN_BUYER), (tea, 10), payment_method="bank_transfer")
    finance = make.headers(make.user(Role.FINANCE))
    wrong = client.post(f"/api/v1/orders/{order['id']}/confirm-transfer",
                        json={"amount_fen": 10_000, "reference": "B1"}, headers=finance)
    assert wrong.status_code == 422
    assert wrong.get_json() == {"error": {
        "code": "amount_mismatch", "message": "到账金额 ¥100.00 与订单应付金额 ¥1,180.00 不符，请核对银行流水。",
        "fields": {"amount_fen": ["须等于订单应付金额 ¥1,180.00"]}}}
    bad = client.post(f"/api/v1/orders/{order['id']}/confirm-transfer", json={"amount_fen": "abc"}, headers=finance)
    assert bad.status_code == 422 and set(bad.get_json()["error"]["fields"]) == {"amount_fen", "reference"}
    paid = client.post(f"/api/v1/orders/{order['id']}/confirm-transfer",
                       json={"amount_fen": 118_000, "reference": "B1"}, headers=finance)
    assert paid.status_code == 200
    too_much = client.post(f"/api/v1/orders/{order['id']}/refund", json={"amount_fen": 118_001, "reason": "多退"},
                           headers=finance)
    assert too_much.get_json()["error"] == {
        "code": "refund_exceeds_paid", "message": "退款金额 ¥1,180.01 超过可退金额，该订单最多还可退 ¥1,180.00。",
        "fields": {"amount_fen": ["超过可退金额，最多还可退 ¥1,180.00"]}}


def test_order_pages_name_the_payment_method_in_chinese_only(client, make):
    order = _paid_order(client, make)
    text = _text(client.get(f"/orders/{order['id']}").get_data(as_text=True))
    assert "支付方式：在线支付（模拟支付，离线演示）" in text and "sandbox" not in text
    db.session.get(Order, order["id"]).payment_provider = "stripe"
    db.session.commit()
    text = _text(client.get(f"/orders/{order['id']}").get_data(as_text=True))
    assert "支付方式：在线支付（Stripe）" in text and "（stripe）" not in text
    transfer = _transfer_order(client, make)
    text = _text(client.get(f"/orders/{transfer['id']}").get_data(as_text=True))
    assert "支付方式：对公转账" in text and "bank_transfer" not in text
    desk = _text(client.get("/finance/orders").get_data(as_text=True))
    assert "在线支付（Stripe）" in desk and "sandbox" not in desk


def test_refund_and_cancel_forms_ask_before_acting_and_still_post_without_javascript(client, make):
    order = _paid_order(client, make)
    html = client.get(f"/orders/{order['id']}").get_data(as_text=True)
    refund_form = re.search(r'<form[^>]*action="/orders/\d+/refund"[^>]*>', html).group(0)
    # static/js/app.js asks this, with the typed amount in place of {amount_yuan}.
    assert (f'data-confirm="确定为订单 {order["number"]} 退款 {{amount_yuan}} 元吗？（最多可退 ¥128.00）'
            '退款后不能撤销。"') in refund_form
    # A browser without JavaScript ignores data-confirm and posts the form as it is.
    assert client.post(f"/orders/{order['id']}/refund", data={"amount_yuan": "28", "reason": "少发"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).refunded_fen == 2_800

    tea = certified_product(make, price_fen=3_000)
    batch(tea, quantity=5)
    buyer = make.user()
    pending = place(client, make, buyer, (tea, 1))
    client.post("/logout")
    _sign_in(client, buyer)
    html = client.get(f"/orders/{pending['id']}").get_data(as_text=True)
    cancel_form = re.search(r'<form[^>]*action="/orders/\d+/cancel"[^>]*>', html).group(0)
    assert (f'data-confirm="确定取消订单 {pending["number"]}（¥30.00）吗？'
            '取消后库存即释放，订单不能恢复。"') in cancel_form
    assert client.post(f"/orders/{pending['id']}/cancel").status_code == 302
    db.session.expire_all()
    assert db.session.get(Order, pending["id"]).status == "cancelled"


def test_cancelling_an_order_that_was_already_cancelled_says_why_on_the_order_page(client, make):
    tea = certified_product(make, price_fen=3_000)
    batch(tea, quantity=5)
    buyer = make.user()
    order = place(client, make, buyer, (tea, 1))
    _sign_in(client, buyer)
    client.post(f"/orders/{order['id']}/cancel")
    again = client.post(f"/orders/{order['id']}/cancel")
    assert again.status_code == 409
    assert "订单当前状态为“已取消”，只有待付款订单可以取消" in _text(again.get_data(as_text=True))


def test_a_refused_shipment_keeps_the_typed_tracking_number_in_the_order_book(client, make):
    tea = certified_product(make, name="古丈毛尖")
    batch(tea, quantity=5)
    order = place(client, make, make.user(), (tea, 1))
    deliver(client, completed_event(order))
    _sign_in(client, make.user(Role.COOPERATIVE, cooperative=tea.cooperative))
    response = client.post(f"/orders/{order['id']}/ship",
                           data={"carrier": "顺丰速运", "tracking_number": "SF 12", "next": "book"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "订单簿" in html and "未能标记发货，请更正下面标出的内容。" in html
    assert "运单号须为 6 到 40 位字母、数字或连字符" in html and 'value="SF 12"' in html and 'value="顺丰速运"' in html
    assert "tracking_number:" not in html


def test_a_refused_action_never_shows_the_finance_desk_to_someone_outside_finance(client, make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    order = place(client, make, make.user(), (tea, 1))
    deliver(client, completed_event(order))
    _sign_in(client, make.user(Role.COOPERATIVE, cooperative=tea.cooperative))
    response = client.post(f"/orders/{order['id']}/ship", data={"carrier": "", "tracking_number": "", "next": "finance"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "收款与退款" not in html.split("</nav>", 1)[1] and f"订单 {order['number']}" in html
    assert "请填写快递公司" in html and "请填写运单号" in html
