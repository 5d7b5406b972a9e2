"""The public resolver (Digital Link and short codes) and the cooperative's batch pages."""
import re
from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today, utcnow
from tests.certification.factories import certified_product
from tests.traceability import factories
from tests.traceability.helpers import data_uri_pngs, decode_qr, make_gtin14, path_of
from traceability import codes, services
from traceability.models import Batch, ScanEvent, Serial, TraceEvent

JSON = {"Accept": "application/json"}
PHONE = {"User-Agent": "Mozilla/5.0 (Linux; Android 14; V2309A) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36"}
CONTRACT_KEYS = {"authentic", "product", "batch", "village", "cooperative", "certification", "village_sales",
                 "scans", "warnings"}


@pytest.fixture
def coop(make):
    return make.user(Role.COOPERATIVE)


@pytest.fixture
def gtin_batch(make, coop):
    """A batch (made through the service) of a certified product with a GTIN, and three item serials."""
    item = certified_product(make, cooperative=coop.cooperative, gtin=make_gtin14(), name="古丈毛尖 明前特级")
    batch = services.create_batch(coop, item.id, {
        "lot": "GZ/2026-04.01", "village_id": item.villages[0].id, "quantity": 200,
        "produced_on": (shanghai_today() - timedelta(days=5)).isoformat()})
    factories.serials(batch, 3)
    return batch


@pytest.fixture
def plain_batch(make, coop):
    """A batch of a certified product without a GTIN, and three item serials."""
    batch = factories.batch(certified_product(make, cooperative=coop.cooperative, name="十八洞猕猴桃"))
    factories.serials(batch, 3)
    return batch


def serials_of(batch) -> list[str]:
    return list(db.session.scalars(sa.select(Serial.serial).where(Serial.batch_id == batch.id).order_by(Serial.id)))


def urls_of(batch) -> dict:
    return {"batch": services.batch_trace_url(batch), "item": services.serial_trace_url(batch, serials_of(batch)[0])}


# --------------------------------------------------------------------------- answers for authentic codes

@pytest.mark.parametrize("which", ["gtin_batch", "plain_batch"])
@pytest.mark.parametrize("kind", ["batch", "item"])
def test_authentic_code_answers_json_in_the_contracts_shape(client, request, which, kind):
    batch = request.getfixturevalue(which)
    body = client.get(path_of(urls_of(batch)[kind]), headers=JSON).get_json()
    assert CONTRACT_KEYS <= body.keys()
    assert body["authentic"] is True and body["warnings"] == []
    village = batch.village
    assert {key: body["village"][key] for key in ("name", "township", "county", "zone")} == {
        "name": village.name, "township": village.township, "county": village.county, "zone": village.zone}
    assert body["product"]["name"] == batch.product.name and body["product"]["url"] == f"/products/{batch.product.id}"
    assert body["batch"]["lot"] == batch.lot and body["batch"]["id"] == batch.id
    assert body["cooperative"]["name"] == batch.product.cooperative.name
    certificate = batch.product.certificate
    assert body["certification"] == {"status": "certified", "certificate_no": certificate.certificate_no,
                                     "valid_until": certificate.valid_until.isoformat()}
    assert body["village_sales"]["year"] == shanghai_today().year
    assert body["village_sales"]["target_fen"] == 15_000_000
    assert body["scans"]["count"] == 1 and body["scans"]["first_at"].endswith("+08:00")
    assert body["batch"]["serial"] == (serials_of(batch)[0] if kind == "item" else None)


def test_html_scan_page_shows_origin_certificate_sales_and_buy_link(client, gtin_batch):
    response = client.get(path_of(urls_of(gtin_batch)["batch"]), headers=PHONE)
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    village = gtin_batch.village
    for text in (village.name, village.township, village.county, "乡村振兴示范区", gtin_batch.product.name,
                 gtin_batch.lot, gtin_batch.product.certificate.certificate_no, "承诺达标合格证", "开具时间",
                 "承诺依据", "质量安全控制", "此码已被查询 <strong>1</strong> 次", "¥150,000.00", "生产赋码",
                 f'href="/products/{gtin_batch.product.id}"', "验证通过"):
        assert text in html, text
    assert 'id="warnings"' not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "noindex" in response.headers["X-Robots-Tag"]
    assert "csrf" not in html.lower()


def test_item_page_shows_its_serial_and_own_count(client, plain_batch):
    serial = serials_of(plain_batch)[1]
    url = path_of(services.serial_trace_url(plain_batch, serial))
    client.get(url)
    html = client.get(url).get_data(as_text=True)
    assert f"单品码 {serial}" in html and "此码已被查询 <strong>2</strong> 次" in html


def test_village_sales_come_from_the_shops_paid_orders(client, make, gtin_batch):
    from tests.shop.factories import paid_order

    paid_order(make.user(Role.CONSUMER), [(gtin_batch, 3)], paid_at=utcnow())
    body = client.get(path_of(urls_of(gtin_batch)["batch"]), headers=JSON).get_json()
    assert body["village_sales"]["sales_fen"] == 3 * gtin_batch.product.price_fen
    html = client.get(path_of(urls_of(gtin_batch)["batch"])).get_data(as_text=True)
    assert "¥384.00" in html
    assert "已完成 0.2%" in html  # ¥384 of ¥150,000, one decimal as on the other pages (not "0%")


def test_events_appear_on_the_scan_page_in_time_order(client, make, coop, plain_batch):
    url = path_of(urls_of(plain_batch)["batch"])
    client.get(url)  # the page is now cached in this worker
    services.record_trace_event(coop, plain_batch.id, {"type": "shipping", "location": "吉首市冷链仓",
                                                       "partner": "州机关食堂"})
    events = client.get(url, headers=JSON).get_json()["events"]
    assert [event["type"] for event in events] == ["shipping"]  # a factory batch has no commissioning event
    assert "吉首市冷链仓" in client.get(url).get_data(as_text=True)


# --------------------------------------------------------------------------- unknown, forged, malformed

def test_unknown_or_forged_code_is_404_with_authentic_false(client, plain_batch):
    url = urls_of(plain_batch)["batch"]
    forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    response = client.get(path_of(forged), headers=JSON)
    assert response.status_code == 404
    assert response.get_json()["authentic"] is False
    page = client.get(path_of(forged))
    assert page.status_code == 404 and "无法验证此二维码" in page.get_data(as_text=True)


def _alter(url: str, part: str, batch) -> str:
    """Change one part of a trace URL (keeping it well-formed)."""
    parts = urlsplit(url)
    path, signature = parts.path, parts.query[len("s="):]
    key_id, mac = signature.split(".")
    segments = path.split("/")
    if part == "signature":
        mac = ("B" if mac[0] == "A" else "A") + mac[1:]
    elif part == "key_id":
        key_id = "k1"
    elif part == "no_signature":
        return path
    elif part == "gtin":
        from tests.traceability.helpers import make_gtin14 as other
        segments[2] = other("690123456780")
    elif part == "lot":
        segments[4] = segments[4][:-1] + ("9" if segments[4][-1] != "9" else "8")
    elif part == "serial":
        segments[-1] = segments[-1][:-1] + ("0" if segments[-1][-1] != "0" else "1")
    elif part == "batch_id":
        segments[2] = str(int(segments[2]) + 1)
    elif part == "add_variant":
        segments[3:3] = ["22", "V1"]
    return "/".join(segments) + f"?s={key_id}.{mac}"


@pytest.mark.parametrize("part", ["gtin", "lot", "serial", "signature", "key_id", "no_signature", "add_variant"])
def test_altering_any_part_of_a_digital_link_gives_404(client, gtin_batch, part):
    altered = _alter(path_of(urls_of(gtin_batch)["item"]), part, gtin_batch)
    assert altered != path_of(urls_of(gtin_batch)["item"])
    response = client.get(altered, headers=JSON)
    assert response.status_code == 404, altered
    assert response.get_json()["authentic"] is False


@pytest.mark.parametrize("part", ["batch_id", "serial", "signature", "key_id", "no_signature"])
def test_altering_any_part_of_a_short_code_gives_404(client, make, plain_batch, part):
    factories.batch(plain_batch.product)  # so that batch id + 1 exists
    altered = _alter(path_of(urls_of(plain_batch)["item"]), part, plain_batch)
    assert client.get(altered, headers=JSON).status_code == 404, altered
    altered_batch = _alter(path_of(urls_of(plain_batch)["batch"]), part if part != "serial" else "signature", plain_batch)
    assert client.get(altered_batch, headers=JSON).status_code == 404, altered_batch


def test_signature_of_one_code_does_not_open_another(client, plain_batch):
    first, second = serials_of(plain_batch)[:2]
    signature = services.serial_trace_url(plain_batch, first).split("?")[1]
    assert client.get(f"/t/{plain_batch.id}/{second}?{signature}", headers=JSON).status_code == 404


def test_unknown_serial_with_a_valid_signature_is_404(client, plain_batch):
    from traceability import codes

    url = codes.trace_url(plain_batch.id, plain_batch.lot, None, "ZZZZZZZZZZZZ")
    assert client.get(path_of(url), headers=JSON).status_code == 404


def test_malformed_digital_links_are_400(client, gtin_batch):
    gtin = make_gtin14()
    bad_check = gtin[:-1] + str((int(gtin[-1]) + 1) % 10)
    for path in (f"/01/{bad_check}/10/L1?s=k0.x", f"/01/{gtin}/21/S1/10/L1?s=k0.x", f"/01/{gtin}/10/L1/99/x",
                 f"/01/{gtin}/10", "/01/123/10/L1"):
        response = client.get(path, headers=JSON)
        assert response.status_code == 400, path
        assert response.get_json()["error"]["code"] == "malformed_digital_link"
        assert response.get_json()["authentic"] is False
    page = client.get(f"/01/{bad_check}/10/L1")
    assert page.status_code == 400 and "校验位" in page.get_data(as_text=True)


def test_rotated_key_keeps_printed_labels_valid_until_removed(app, client, plain_batch):
    old_url = path_of(urls_of(plain_batch)["batch"])
    try:
        app.config["TRACE_SIGNING_KEYS"] = "k1:a-brand-new-secret-0123,k0:@SECRET_KEY"
        new_url = path_of(services.batch_trace_url(plain_batch))
        assert "s=k1." in new_url
        assert client.get(old_url, headers=JSON).status_code == 200
        assert client.get(new_url, headers=JSON).status_code == 200
        app.config["TRACE_SIGNING_KEYS"] = "k1:a-brand-new-secret-0123"
        assert client.get(old_url, headers=JSON).status_code == 404
        assert client.get(new_url, headers=JSON).status_code == 200
    finally:
        app.config.pop("TRACE_SIGNING_KEYS")


# --------------------------------------------------------------------------- warnings

def test_revocation_through_the_certification_api_warns_on_the_next_scan(client, make, plain_batch):
    url = path_of(urls_of(plain_batch)["batch"])
    assert client.get(url, headers=JSON).get_json()["warnings"] == []  # the page is now cached
    reviewer = make.user(Role.PREFECTURE_REVIEWER)
    certificate_id = plain_batch.product.certificate_id
    response = client.post(f"/api/v1/certifications/{certificate_id}/revoke", json={"reason": "抽检不合格"},
                           headers=make.headers(reviewer))
    assert response.status_code == 200
    body = client.get(url, headers=JSON).get_json()
    assert body["certification"]["status"] == "revoked"
    assert body["warning_codes"] == ["certificate_revoked"] and "撤销" in body["warnings"][0]
    assert "抽检不合格" in body["warnings"][0]
    html = client.get(url).get_data(as_text=True)
    assert 'id="warnings"' in html and "已被撤销" in html
    assert f'href="/products/{plain_batch.product.id}"' not in html  # no "buy" link for a delisted product
    assert "原有效期至" in html and "已提前撤销" in html
    assert body["product"]["photo_url"] is None  # the catalogue no longer serves its photo: no broken image


def test_a_change_made_elsewhere_shows_after_the_recheck_interval(app, client, plain_batch):
    url = path_of(urls_of(plain_batch)["batch"])
    client.get(url, headers=JSON)
    # Another worker (or a database console) revokes: this worker has no signal of it.
    certificate = plain_batch.product.certificate
    certificate.status = "revoked"
    db.session.commit()
    app.config["SCAN_RECHECK_SECONDS"] = 0  # as if the interval (1 s by default) had passed
    try:
        assert client.get(url, headers=JSON).get_json()["warning_codes"] == ["certificate_revoked"]
    finally:
        app.config.pop("SCAN_RECHECK_SECONDS")


def test_expired_certificate_warns(client, make, coop):
    today = shanghai_today()
    item = certified_product(make, cooperative=coop.cooperative, valid_from=today - timedelta(days=900),
                             valid_until=today - timedelta(days=1))
    body = client.get(path_of(services.batch_trace_url(factories.batch(item))), headers=JSON).get_json()
    assert body["certification"]["status"] == "expired"
    assert body["warning_codes"] == ["certificate_expired"]


def test_batch_past_its_expiry_warns(client, make, coop):
    item = certified_product(make, cooperative=coop.cooperative)
    batch = factories.batch(item, produced_on=shanghai_today() - timedelta(days=40),
                            expires_on=shanghai_today() - timedelta(days=1))
    body = client.get(path_of(services.batch_trace_url(batch)), headers=JSON).get_json()
    assert body["warning_codes"] == ["batch_expired"]


def test_serial_scanned_more_than_the_threshold_warns(app, client, plain_batch):
    app.config["SCAN_WARNING_THRESHOLD"] = 3
    try:
        item_url = path_of(urls_of(plain_batch)["item"])
        answers = [client.get(item_url, headers=JSON).get_json() for _ in range(4)]
        assert [answer["warnings"] == [] for answer in answers] == [True, True, True, False]
        assert answers[-1]["warning_codes"] == ["serial_scanned_often"] and "4 次" in answers[-1]["warnings"][0]
        assert 'id="warnings"' in client.get(item_url).get_data(as_text=True)
        batch_url = path_of(urls_of(plain_batch)["batch"])
        for _ in range(5):
            answer = client.get(batch_url, headers=JSON).get_json()
        assert answer["warnings"] == []  # a batch label is on many boxes: many scans are normal
    finally:
        app.config.pop("SCAN_WARNING_THRESHOLD")


# --------------------------------------------------------------------------- the scan log

def test_each_scan_is_logged_with_coarse_client_info_only(client, plain_batch):
    client.get(path_of(urls_of(plain_batch)["batch"]), headers={
        "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 MicroMessenger/8.0.47"})
    client.get(path_of(urls_of(plain_batch)["item"]), headers={**JSON, "User-Agent": "Mozilla/5.0 (iPad; CPU OS 17)"})
    services.flush_scans()
    rows = db.session.execute(sa.select(ScanEvent.device_class, ScanEvent.client, ScanEvent.as_json,
                                        ScanEvent.serial_id).order_by(ScanEvent.id)).all()
    assert [(row.device_class, row.client, row.as_json, row.serial_id is not None) for row in rows] == [
        ("mobile", "wechat", False, False), ("tablet", "other", True, True)]
    assert set(ScanEvent.__table__.columns.keys()) == {"id", "at", "batch_id", "serial_id", "device_class", "client",
                                                        "as_json"}


def test_head_requests_and_crawlers_are_answered_but_not_counted(client, plain_batch):
    url = path_of(urls_of(plain_batch)["batch"])
    assert client.head(url).status_code == 200
    crawler = {**JSON, "User-Agent": "Mozilla/5.0 (compatible; Baiduspider/2.0)"}
    assert client.get(url, headers=crawler).get_json()["scans"]["count"] == 0
    assert client.get(url, headers=JSON).get_json()["scans"]["count"] == 1
    services.flush_scans()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ScanEvent)) == 1


def test_counts_are_per_code(client, plain_batch):
    urls = [path_of(services.serial_trace_url(plain_batch, serial)) for serial in serials_of(plain_batch)]
    for _ in range(3):
        client.get(urls[0], headers=JSON)
    client.get(urls[1], headers=JSON)
    assert client.get(urls[0], headers=JSON).get_json()["scans"]["count"] == 4
    assert client.get(urls[2], headers=JSON).get_json()["scans"]["count"] == 1
    assert client.get(path_of(urls_of(plain_batch)["batch"]), headers=JSON).get_json()["scans"]["count"] == 1
    services.flush_scans()
    counts = dict(db.session.execute(sa.select(Serial.serial, Serial.scan_count)).all())
    assert sorted(counts.values()) == [1, 1, 4]


# --------------------------------------------------------------------------- cooperative pages

def sign_in(client, user):
    with client.session_transaction() as session:
        session["user_id"], session["gen"] = user.id, user.token_generation
        session["sid"] = f"test-session-{user.id}"  # any id not on the revoked list


def test_cooperative_lists_its_batches_with_scan_counts(client, make, coop, plain_batch):
    client.get(path_of(urls_of(plain_batch)["batch"]))
    sign_in(client, coop)
    html = client.get("/traceability/batches").get_data(as_text=True)
    assert plain_batch.lot in html and "批次溯源" in html
    other = make.user(Role.COOPERATIVE)
    sign_in(client, other)
    assert plain_batch.lot not in client.get("/traceability/batches").get_data(as_text=True)
    assert client.get(f"/traceability/batches/{plain_batch.id}").status_code == 403


def test_pages_need_a_cooperative_or_admin(client, make, plain_batch):
    assert client.get("/traceability/batches").status_code == 302
    sign_in(client, make.user(Role.CONSUMER))
    assert client.get("/traceability/batches").status_code == 403


def test_batch_form_creates_a_batch_and_shows_its_page(client, make, coop):
    item = certified_product(make, cooperative=coop.cooperative, name="保靖黄金茶")
    sign_in(client, coop)
    form = client.get("/traceability/batches/new")
    assert form.status_code == 200 and "保靖黄金茶" in form.get_data(as_text=True)
    response = client.post(f"/traceability/batches/new?product_id={item.id}", data={
        "product_id": item.id, "lot": "BJHJ-20261120-01", "village_id": item.villages[0].id,
        "produced_on": (shanghai_today() - timedelta(days=2)).isoformat(), "quantity": "80",
        "commitment_basis": "self_test", "committer": coop.cooperative.name, "contact_phone": "0743-7654321"})
    assert response.status_code == 302
    batch = db.session.scalars(sa.select(Batch)).one()
    assert (batch.lot, batch.quantity, batch.commitment_basis, batch.contact_phone) == (
        "BJHJ-20261120-01", 80, "self_test", "0743-7654321")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "自行检测" in page and "0743-7654321" in page
    (qr,) = data_uri_pngs(page)
    assert decode_qr(qr) == services.batch_trace_url(batch)


def test_batch_form_shows_errors_and_creates_nothing(client, make, coop):
    item = certified_product(make, cooperative=coop.cooperative)
    sign_in(client, coop)
    response = client.post(f"/traceability/batches/new?product_id={item.id}", data={
        "product_id": item.id, "lot": "批号", "village_id": item.villages[0].id, "produced_on": "2026-01-01",
        "quantity": "0"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "批号须为" in html and "必须是 1 到" in html
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0


def test_events_and_serials_from_the_batch_page(client, coop, plain_batch):
    sign_in(client, coop)
    response = client.post(f"/traceability/batches/{plain_batch.id}/events", data={
        "type": "shipping", "location": "默戎镇收购点", "partner": "吉首物流", "quantity": "10",
        # Yesterday, so the time is in the past whatever the hour of the run (today 08:15 is not before 08:15).
        "occurred_at": (shanghai_today() - timedelta(days=1)).isoformat() + "T08:15"})
    assert response.status_code == 302
    event = db.session.scalars(sa.select(TraceEvent).where(TraceEvent.biz_step == "shipping")).one()
    assert event.event_time.astimezone().isoformat()  # stored as an aware UTC time
    assert event.event_time.hour == 0 and event.event_time.minute == 15  # 08:15 Beijing time = 00:15 UTC
    response = client.post(f"/traceability/batches/{plain_batch.id}/serials", data={"count": "4"})
    assert response.status_code == 302
    assert len(serials_of(plain_batch)) == 7
    html = client.get(f"/traceability/batches/{plain_batch.id}").get_data(as_text=True)
    assert "默戎镇收购点" in html and "已生成 7 个单品码" in html


def test_a_refused_event_is_explained_next_to_its_form_which_keeps_what_was_typed(client, coop, plain_batch):
    sign_in(client, coop)
    response = client.post(f"/traceability/batches/{plain_batch.id}/events", data={
        "type": "receiving", "location": "吉首市冷链仓", "partner": "州机关食堂", "quantity": "999999",
        "note": "整车"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    form = html.split('id="event-form"')[1].split("</form>")[0]
    assert "事件未记录" in form and "不能超过批次数量" in form
    assert 'value="吉首市冷链仓"' in form and 'value="999999"' in form and 'value="整车"' in form
    assert '<option value="receiving" selected' in form
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TraceEvent)
                             .where(TraceEvent.biz_step == "receiving")) == 0


def test_scan_log_and_serial_form_speak_chinese_and_offer_the_labels_still_missing(client, coop, plain_batch):
    services.resolve_scan(codes.parse_short(str(plain_batch.id), None),
                          user_agent="Mozilla/5.0 (iPhone) Mobile Safari/604.1 Chrome/120.0")
    sign_in(client, coop)
    html = client.get(f"/traceability/batches/{plain_batch.id}").get_data(as_text=True)
    log = html.split('id="scan-log"')[1]
    assert "手机" in log and "Chrome 浏览器" in log and ">mobile<" not in log and ">chrome<" not in log
    existing = len(serials_of(plain_batch))
    expected = min(max(plain_batch.quantity - existing, 1), 10_000)
    assert f'name="count" type="number" min="1" max="10000" value="{expected}"' in html


@pytest.mark.parametrize("which", ["gtin_batch", "plain_batch"])
def test_item_label_sheet_has_a_decodable_qr_per_serial_and_the_certificate_wording(client, request, coop, which):
    batch = request.getfixturevalue(which)
    sign_in(client, coop)
    html = client.get(f"/traceability/batches/{batch.id}/labels?kind=items").get_data(as_text=True)
    decoded = [decode_qr(png) for png in data_uri_pngs(html)]
    assert decoded == [services.serial_trace_url(batch, serial) for serial in serials_of(batch)]
    for text in ("湘西香伴", "承诺达标合格证", "产品名称", "数量", "产地", "开具时间", "承诺主体", "联系方式", "承诺事项",
                 "承诺依据", batch.product.name, batch.lot, batch.village.name, "@media print", "size: A4",
                 "Noto Sans CJK SC"):
        assert text in html, text


def test_batch_label_sheet_repeats_the_batch_code(client, coop, gtin_batch):
    sign_in(client, coop)
    html = client.get(f"/traceability/batches/{gtin_batch.id}/labels?kind=batch&per_page=8").get_data(as_text=True)
    pngs = data_uri_pngs(html)
    assert len(pngs) == 8 and {decode_qr(png) for png in pngs} == {services.batch_trace_url(gtin_batch)}
    assert client.get(f"/traceability/batches/{gtin_batch.id}/labels?kind=nope").status_code == 404


def test_serials_csv_lists_every_serial_and_url(client, coop, plain_batch):
    sign_in(client, coop)
    response = client.get(f"/traceability/batches/{plain_batch.id}/serials.csv")
    lines = response.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0] == "serial,trace_url,scan_count" and len(lines) == 4
    assert lines[1].split(",")[1] == services.serial_trace_url(plain_batch, serials_of(plain_batch)[0])
