"""A canteen purchase end to end on a phone (issue #12): the buyer orders with a purchase order
number and delivery date, the unit's approver approves it, finance confirms the transfer, the
cooperative ships, the buyer records 验货 with a shortfall and rates the cooperative, and finance
refunds the shortfall. CSRF is on, as in production."""
import re
from datetime import timedelta

import pytest

from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from shop.models import Order
from tests.browser_helpers import assert_fits_phone, sign_in_as
from tests.certification.factories import certified_product
from tests.traceability.factories import batch

pytestmark = pytest.mark.browser


def test_a_canteen_purchase_from_order_to_rating_on_a_phone(page, make, tmp_path):
    tea = certified_product(make, name="保靖黄金茶 食堂装", price_fen=11_800, bulk_moq=10)
    batch(tea, quantity=50)
    unit = make.budget_unit(name="州直机关食堂", approval_threshold_fen=100_000)  # ¥1,000
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=unit, display_name="王采购")
    approver = make.user(Role.CANTEEN_BUYER, budget_unit=unit, is_approver=True, display_name="李主任")
    finance = make.user(Role.FINANCE)
    member = make.user(Role.COOPERATIVE, cooperative=tea.cooperative)
    page.on("dialog", lambda dialog: dialog.accept())
    delivery = (shanghai_today() + timedelta(days=3)).isoformat()

    # The buyer orders 12 (¥1,416.00, above the unit's ¥1,000 approval threshold).
    sign_in_as(page, buyer)
    page.goto(f"/products/{tea.id}")
    page.fill("input[name=quantity]", "12")
    page.get_by_role("button", name="加入购物车").click()
    page.get_by_role("link", name="去结算").click()
    page.wait_for_url("**/checkout")
    page.get_by_label("对公转账（机关食堂）").check()
    page.fill("#name", "王采购")
    page.fill("#phone", "0743-8222222")
    page.fill("#address", "吉首市世纪大道 1 号 州直机关食堂")
    page.fill("#purchase_order_no", "CG-2026-118")
    page.fill("#delivery_date", delivery)
    page.get_by_role("button", name="提交订单").click()
    page.wait_for_url(re.compile(r".*/orders/\d+$"))
    order_id = int(page.url.rsplit("/", 1)[1])
    assert "待内部审批" in page.locator("#approval").inner_text()
    assert "CG-2026-118" in page.content() and delivery in page.content()
    assert_fits_phone(page)

    # The approver finds it in its list and approves it.
    sign_in_as(page, approver)
    page.goto("/orders")
    page.locator("#approvals-link").click()
    page.wait_for_url("**/canteen/approvals")
    page.locator(f'.order-row[data-order-id="{order_id}"]').click()
    page.wait_for_url(f"**/orders/{order_id}")
    page.fill(".approval-form textarea[name=comment]", "同意，按计划采购")
    page.get_by_role("button", name="审批通过").click()
    page.wait_for_load_state()
    assert "内部审批已通过" in page.locator("#approval").inner_text()
    assert "李主任" in page.locator("#approval").inner_text()

    # Finance confirms the transfer from the finance desk.
    sign_in_as(page, finance)
    page.goto("/finance/orders")
    transfer = page.locator(f'.transfer[data-order-id="{order_id}"]')
    transfer.locator("input[name=amount_yuan]").fill("1416.00")
    transfer.locator("input[name=reference]").fill("HX20261206-0001")
    transfer.get_by_role("button", name="确认到账").click()
    page.wait_for_load_state()
    assert "已确认到账" in page.locator(".flash").inner_text()

    # The cooperative ships its part.
    sign_in_as(page, member)
    page.goto(f"/orders/{order_id}")
    page.fill("input[name=carrier]", "顺丰速运")
    page.fill("input[name=tracking_number]", "SF1234567890")
    page.get_by_role("button", name="标记已发货").click()
    page.wait_for_load_state()
    assert "已标记发货" in page.locator(".flash").inner_text()

    # The buyer inspects: 11 arrived, 1 of them damaged; 2 short at ¥118.00.
    sign_in_as(page, buyer)
    page.goto(f"/orders/{order_id}")
    assert not page.get_by_role("button", name="确认收货").is_visible()  # no one-click receipt for canteens
    form = page.locator("#inspection-form")
    form.locator(f"input[name=received_{tea.id}]").fill("11")
    form.locator(f"input[name=rejected_{tea.id}]").fill("1")
    page.get_by_role("button", name="提交验货结果").click()
    page.wait_for_load_state()
    # A shortfall without a word on it is sent back with the numbers kept.
    assert "请说明情况" in page.content()
    assert page.locator(f"input[name=received_{tea.id}]").input_value() == "11"
    page.fill("#inspection-form textarea[name=note]", "少一箱，另一箱外包装破损")
    page.get_by_role("button", name="提交验货结果").click()
    page.wait_for_load_state()
    record = page.locator("#inspection-record")
    assert "¥236.00" in record.inner_text()
    assert "待财务处理" in page.locator("#refund-requests").inner_text()
    assert_fits_phone(page)

    # …and rates the cooperative.
    box = page.locator(f'.rating-box[data-rate-cooperative="{tea.cooperative_id}"]')
    box.locator("select[name=quality]").select_option("4")
    box.locator("select[name=delivery]").select_option("5")
    box.locator("select[name=service]").select_option("4")
    box.locator("textarea[name=comment]").fill("茶叶品质好，少了一箱")
    box.get_by_role("button", name="提交履约评价").click()
    page.wait_for_load_state()
    assert "已评价" in page.locator(f'.rating-box[data-rate-cooperative="{tea.cooperative_id}"]').inner_text()
    page.screenshot(path=str(tmp_path / "canteen-inspected.png"), full_page=True)

    # Finance refunds the shortfall; the cooperative sees its rating.
    sign_in_as(page, finance)
    page.goto("/finance/orders")
    page.locator("#refund-requests .refund-request").get_by_role("button", name="按申请退款").click()
    page.wait_for_load_state()
    assert "已按验货短缺退款" in page.locator(".flash").inner_text()
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert (order.status, order.refunded_fen, order.total_fen) == ("partially_refunded", 23_600, 141_600)
    sign_in_as(page, member)
    page.goto("/cooperative/orders")
    page.locator("#ratings-link").click()
    page.wait_for_load_state()
    assert "茶叶品质好，少了一箱" in page.content() and "产品质量 4.0" in page.content().replace("<strong>", "").replace("</strong>", "")
    assert_fits_phone(page)
