"""Running the platform without a shell (issue #11), on a phone with the CSP on: a county reviewer
opens a login for a cooperative of its county, the member signs in, its product is certified by
the county and the prefecture, and the member sees the unread count in the header and the notices
in its inbox; the product sells, finance issues and pays the month's settlement statement on its
pages, and the member is told and sees the statement paid with the bank reference."""
import re
from datetime import datetime

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role, User
from core.timeutil import SHANGHAI, shanghai_today
from tests.browser_helpers import assert_fits_phone, sign_in
from tests.certification.factories import prefecture, product
from tests.shop.factories import paid_order
from tests.traceability.factories import batch

pytestmark = pytest.mark.browser


def _last_month_day(day: int) -> datetime:
    today = shanghai_today()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return datetime(year, month, day, 15, tzinfo=SHANGHAI)


def test_a_member_is_told_of_its_approval_and_its_paid_statement(page, make, browser, live_server):
    from certification import services

    reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    cooperative = make.cooperative(name="牛角山村茶叶专业合作社")
    sign_in(page, reviewer.email)
    page.click("text=账号管理")
    page.click("text=开设账号")
    page.fill("#email", "niujiao@test.cn")
    page.fill("#display_name", "牛角山社员")
    page.fill("#password", "maojian-tea-2026")
    page.select_option("#cooperative_id", str(cooperative.id))
    page.click("form.stacked button[type=submit]")
    page.wait_for_load_state()
    assert "已开设账号" in page.content()

    member_context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN",
                                         base_url=live_server.url)
    phone = member_context.new_page()
    phone.set_default_timeout(15000)
    sign_in(phone, "niujiao@test.cn", password="maojian-tea-2026")
    assert phone.locator(".account .unread-count").count() == 0

    member = db.session.scalar(sa.select(User).where(User.email == "niujiao@test.cn"))
    tea = product(make, cooperative=cooperative, name="古丈毛尖 明前特级")
    application = services.submit_application(member, tea.id, {"evidence": [
        {"type": "green_food", "number": "LB-15-1711196965A", "issuer": "中国绿色食品发展中心",
         "valid_until": "2029-12-31"}]})
    services.decide_application(reviewer, application.id, {"decision": "approve", "comment": "材料齐全"})
    services.decide_application(prefecture(make), application.id, {"decision": "approve", "comment": "准予认定"})

    phone.reload()
    assert phone.locator(".account .unread-count").inner_text() == "2"
    phone.click(".account a.inbox")
    phone.wait_for_load_state()
    assert_fits_phone(phone)
    notices = phone.locator("li.notice.unread")
    assert notices.count() == 2
    newest = notices.first.inner_text()
    assert "“古丈毛尖 明前特级”已获湘西香伴品牌认定" in newest and "证书编号" in newest
    assert "已通过县级审核" in notices.nth(1).inner_text()

    notices.first.locator("button:has-text('查看')").click()
    phone.wait_for_load_state()
    assert phone.url.endswith(f"/certifications/{application.id}")
    assert phone.locator(".account .unread-count").inner_text() == "1"
    phone.click(".account a.inbox")
    phone.click("text=全部标为已读")
    phone.wait_for_load_state()
    assert "已将 1 条消息标为已读" in phone.content()
    assert phone.locator(".account .unread-count").count() == 0

    # The certified tea sells (paid last month); finance settles the month on its own pages.
    paid_order(make.user(), [(batch(tea, quantity=20), 3)], paid_at=_last_month_day(12))
    tea_price = db.session.get(type(tea), tea.id).price_fen
    page.context.clear_cookies()
    sign_in(page, make.user(Role.FINANCE).email)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto("/settlements")
    page.get_by_role("button", name="出具结算单").click()
    page.wait_for_load_state()
    assert "已出具 1 份" in page.content()
    page.locator(".order-row[data-statement-id]").click()
    page.wait_for_url(re.compile(r".*/settlements/\d+$"))
    page.fill("#bank_reference", "HXB-2026-1207")
    page.get_by_role("button", name="登记付款").click()
    page.wait_for_load_state()
    assert page.locator("#statement-status").inner_text() == "已付款"

    phone.reload()
    assert phone.locator(".account .unread-count").inner_text() == "2"  # issued, then paid
    phone.click(".account a.inbox")
    phone.wait_for_load_state()
    paid_notice = phone.locator("li.notice.unread").first
    assert "结算款已支付" in paid_notice.inner_text() and "HXB-2026-1207" in paid_notice.inner_text()
    assert paid_notice.locator(".badge").inner_text() == "结算付款"
    paid_notice.locator("button:has-text('查看')").click()
    phone.wait_for_url(re.compile(r".*/settlements/\d+$"))
    assert phone.locator("#statement-status").inner_text() == "已付款"
    assert phone.locator("#statement-reference").inner_text() == "HXB-2026-1207"
    yuan = f"¥{3 * tea_price // 100:,}.{3 * tea_price % 100:02d}"
    assert phone.locator("#statement-net").inner_text() == yuan
    assert phone.locator("#pay-statement").count() == 0
    assert_fits_phone(phone)
    member_context.close()
