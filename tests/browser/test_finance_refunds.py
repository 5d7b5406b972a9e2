"""The finance desk on a phone: a refund whose outcome was never confirmed (the worker died before
the payment provider answered) is listed with its amount; finance asks again from the desk, the
refund finishes, and the desk lists it among the refunds done. CSRF is on, as in production."""
import pytest

from core.db import transaction
from core.models import Role
from core.timeutil import utcnow
from shop import services
from tests.browser_helpers import assert_fits_phone, sign_in
from tests.certification.factories import certified_product
from tests.shop.factories import paid_order
from tests.traceability.factories import batch

pytestmark = pytest.mark.browser


def test_finance_finishes_a_refund_left_pending_from_the_desk(page, make):
    tea = certified_product(make, name="保靖黄金茶 退款装", price_fen=8_800)
    order = paid_order(make.user(), [(batch(tea, quantity=10), 2)], paid_at=utcnow())
    finance = make.user(Role.FINANCE)
    with transaction():  # reserved and committed, then the process died: nobody carried it out
        services.reserve_refund(services.lock_order(order.id), 4_400, "包装破损", finance)

    sign_in(page, finance.email)
    page.goto("/finance/orders")
    pending = page.locator("#refunds-in-flight [data-refund-intent]")
    assert pending.count() == 1
    assert order.number in pending.inner_text() and "¥44.00" in pending.inner_text()
    assert_fits_phone(page)
    pending.get_by_role("button", name="向支付服务确认结果").click()
    page.wait_for_load_state()
    assert "退款已确认完成" in page.content()
    assert page.locator("#refunds-in-flight").count() == 0
    assert f"{order.number} 退款 ¥44.00：包装破损" in page.inner_text("main")
