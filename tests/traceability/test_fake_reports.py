""""Report a suspected fake" (issue #13): a link on every scan page carries the scanned code; a
report of an authentic code is tied to its batch and serial; the prefecture sees flagged serials."""
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

from core.models import Role
from tests.traceability.helpers import path_of
from tests.traceability.test_views import PHONE, coop, gtin_batch, plain_batch, serials_of, urls_of  # noqa: F401
from traceability.models import FakeReport


def _report_link(html: str) -> str:
    return unescape(re.search(r'class="report-fake"><a href="([^"]+)"', html).group(1))


def test_the_scan_page_links_to_a_report_of_this_very_code(client, make, plain_batch):
    url = urls_of(plain_batch)["item"]
    html = client.get(path_of(url), headers=PHONE).get_data(as_text=True)
    link = _report_link(html)
    assert parse_qs(urlsplit(link).query)["code"] == [path_of(url)]
    form = client.get(link)
    assert form.status_code == 200 and "此码是平台签发的真码" in form.get_data(as_text=True)

    done = client.post("/report-fake", data={"code": path_of(url), "reason": "label_mismatch",
                                             "note": "集市上 20 元一罐", "contact": ""})
    assert done.status_code == 200 and "举报已收到" in done.get_data(as_text=True)
    [report] = FakeReport.query.all()
    assert report.authentic and report.batch_id == plain_batch.id and report.serial == serials_of(plain_batch)[0]
    assert report.contact is None


def test_a_forged_code_is_reported_as_unverifiable(client, gtin_batch):
    forged = path_of(urls_of(gtin_batch)["batch"]).replace("?s=", "?s=x")
    page = client.get(forged, headers=PHONE)
    assert page.status_code == 404
    link = unescape(re.search(r'class="report-fake" href="([^"]+)"', page.get_data(as_text=True)).group(1))
    assert parse_qs(urlsplit(link).query)["code"] == [forged]
    client.post("/report-fake", data={"code": forged, "reason": "other"})
    [report] = FakeReport.query.all()
    assert not report.authentic and report.batch_id is None and report.code == forged


def test_bad_reports_are_refused(client, plain_batch):
    url = path_of(urls_of(plain_batch)["item"])
    assert client.post("/report-fake", data={"code": url, "reason": "whatever"}).status_code == 422
    assert client.post("/report-fake", data={"code": "", "reason": "other"}).status_code == 422
    assert client.post("/report-fake", data={"code": url, "reason": "other", "note": "x" * 501}).status_code == 422
    assert FakeReport.query.count() == 0


def test_reports_are_rate_limited_per_address(app, client, plain_batch):
    from core.ratelimit import counter
    counter().clear()
    url = path_of(urls_of(plain_batch)["item"])
    statuses = [client.post("/report-fake", data={"code": url, "reason": "other"}).status_code for _ in range(7)]
    counter().clear()
    assert statuses == [200] * 5 + [429] * 2


def test_the_prefecture_sees_flagged_serials_most_reported_first(client, make, plain_batch, gtin_batch):
    first, second = serials_of(plain_batch)[:2]
    from traceability import services
    for serial, times in ((first, 1), (second, 3)):
        path = path_of(services.serial_trace_url(plain_batch, serial))
        for _ in range(times):
            client.post("/report-fake", data={"code": path, "reason": "scanned_often"})
    prefecture = make.user(Role.PREFECTURE_REVIEWER)
    body = client.get("/api/v1/fake-reports", headers=make.headers(prefecture)).get_json()
    assert [(i["serial"], i["reports"]) for i in body["items"]] == [(second, 3), (first, 1)]
    assert body["items"][0]["reasons"] == {"提示扫码次数异常": 3}
    assert client.get("/api/v1/fake-reports", headers=make.headers(make.user(Role.COUNTY_REVIEWER))).status_code == 403
    assert client.get("/api/v1/fake-reports").status_code == 401


def test_the_prefecture_page_lists_flagged_codes(client, make, plain_batch):
    path = path_of(urls_of(plain_batch)["item"])
    client.post("/report-fake", data={"code": path, "reason": "price_too_low"})
    client.post("/report-fake", data={"code": path.replace("?s=", "?s=x"), "reason": "other", "note": "街边摊"})
    prefecture = make.user(Role.PREFECTURE_REVIEWER)
    client.post("/login", data={"email": prefecture.email, "password": "password123"})
    html = client.get("/traceability/fake-reports").get_data(as_text=True)
    assert serials_of(plain_batch)[0] in html and "售价明显偏低 1" in html and "街边摊" in html
    client.post("/logout")
    consumer = make.user()
    client.post("/login", data={"email": consumer.email, "password": "password123"})
    assert client.get("/traceability/fake-reports").status_code == 403
