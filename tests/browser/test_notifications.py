"""Notifications on a phone with the CSP on: a county reviewer opens a login for a cooperative of its
county, the member signs in, its product is certified by the county and the prefecture, and the
member sees the unread count in the header and the notices in its inbox."""
import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role, User
from tests.browser_helpers import sign_in
from tests.certification.factories import prefecture, product

pytestmark = pytest.mark.browser


def test_a_member_sees_the_approval_of_its_product_in_its_inbox(page, make, browser, live_server):
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
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
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
    member_context.close()
