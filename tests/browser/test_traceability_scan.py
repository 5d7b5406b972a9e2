"""A consumer scans a label with a phone: the page fits the screen, names the village and
warns prominently when the product's certificate has been revoked."""
import pytest

from core.extensions import db
from core.models import Role
from tests.certification.factories import certified_product
from tests.traceability import factories
from tests.traceability.helpers import path_of
from traceability import services

pytestmark = pytest.mark.browser

# Headless Chromium announces itself as HeadlessChrome, which the scan log treats as a robot
# (not counted); a real phone's WeChat browser is what consumers use.
WECHAT_ON_IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                    "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN")


@pytest.fixture
def batch(make):
    services.clear_scan_caches()
    coop = make.user(Role.COOPERATIVE)
    village = make.village("花垣县", "十八洞村")
    item = certified_product(make, cooperative=make.cooperative(village=village), villages=[village],
                             name="十八洞村猕猴桃 精品礼盒", category="kiwifruit")
    assert coop  # the product's cooperative has its own (unused) account here
    return factories.batch(item, lot="SBD-20260915-01")


def test_scan_page_on_a_phone_shows_the_village_and_no_warning(page, batch):
    page.set_extra_http_headers({"User-Agent": WECHAT_ON_IPHONE})
    page.goto(path_of(services.batch_trace_url(batch)))
    assert page.viewport_size == {"width": 390, "height": 844}
    assert "十八洞村" in page.locator("#origin .village").inner_text()
    assert "双龙镇" in page.locator("#origin").inner_text() and "花垣县" in page.locator("#origin").inner_text()
    assert page.locator("#warnings").count() == 0
    assert "验证通过" in page.locator("#authentic").inner_text()
    assert "此码已被查询 1 次" in page.locator("#scans").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK SC\"')")


def test_scan_page_of_a_revoked_product_shows_the_warnings_box_first(page, batch, tmp_path):
    certificate = batch.product.certificate
    certificate.status, certificate.revoked_reason = "revoked", "品牌使用不规范"
    db.session.commit()
    page.goto(path_of(services.batch_trace_url(batch)))
    warnings = page.locator("#warnings")
    assert warnings.is_visible()
    assert "已被撤销" in warnings.inner_text() and "品牌使用不规范" in warnings.inner_text()
    assert "十八洞村" in page.locator("#origin").inner_text()
    # Prominent: above the product details, inside the first screen.
    box = warnings.bounding_box()
    assert box["y"] < page.locator("#product").bounding_box()["y"] and box["y"] + box["height"] < 844
    assert page.locator("a.buy").count() == 0
    page.screenshot(path=str(tmp_path / "revoked.png"), full_page=True)


def test_forged_code_shows_a_plain_warning(page, batch):
    response = page.goto(path_of(services.batch_trace_url(batch)).replace("s=k0.", "s=k0.X"))
    assert response.status == 404
    assert "无法验证此二维码" in page.locator("#warnings").inner_text()
