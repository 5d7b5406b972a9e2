"""Settlement on a phone: finance issues last month's statements and records the bank transfer
that paid one; the cooperative's member sees it paid, with the reference and the amount in ¥.
CSRF is on, as in production."""
import re
from datetime import datetime

import pytest

from core.models import Role
from core.timeutil import SHANGHAI, shanghai_today
from tests.browser_helpers import assert_fits_phone, sign_in_as
from tests.certification.factories import certified_product
from tests.shop.factories import paid_order
from tests.traceability.factories import batch

pytestmark = pytest.mark.browser


def _last_month_day(day: int) -> datetime:
    today = shanghai_today()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return datetime(year, month, day, 15, tzinfo=SHANGHAI)


def test_finance_issues_and_pays_a_statement_and_the_cooperative_sees_it_paid(page, make):
    tea = certified_product(make, name="古丈毛尖 结算装", price_fen=12_850)
    paid_order(make.user(), [(batch(tea, quantity=20), 3)], paid_at=_last_month_day(12))
    finance = make.user(Role.FINANCE)
    member = make.user(Role.COOPERATIVE, cooperative=tea.cooperative)
    page.on("dialog", lambda dialog: dialog.accept())

    sign_in_as(page, finance)
    page.goto("/finance/orders")
    page.get_by_role("link", name=re.compile("合作社结算单")).click()
    page.wait_for_url("**/settlements")
    page.get_by_role("button", name="出具结算单").click()
    page.wait_for_load_state()
    assert "已出具 1 份" in page.content()
    card = page.locator(".order-row[data-statement-id]")
    assert tea.cooperative.name in card.inner_text() and "¥385.50" in card.inner_text()
    assert_fits_phone(page)
    card.click()
    page.wait_for_url(re.compile(r".*/settlements/\d+$"))
    page.fill("#bank_reference", "HXB-2026-0001")
    page.get_by_role("button", name="登记付款").click()
    page.wait_for_load_state()
    assert "已登记付款" in page.content()
    assert page.locator("#statement-status").inner_text() == "已付款"
    assert_fits_phone(page)

    sign_in_as(page, member)
    page.goto("/")
    page.get_by_role("link", name="结算单").first.click()
    page.wait_for_url("**/settlements")
    card = page.locator(".order-row[data-statement-id]")
    text = card.inner_text()
    assert "已付款" in text and "HXB-2026-0001" in text and "¥385.50" in text
    assert page.get_by_role("button", name="出具结算单").count() == 0
    card.click()
    page.wait_for_url(re.compile(r".*/settlements/\d+$"))
    assert page.locator("#statement-reference").inner_text() == "HXB-2026-0001"
    assert page.locator("#statement-net").inner_text() == "¥385.50"
    assert page.locator("#pay-statement").count() == 0
    assert_fits_phone(page)
