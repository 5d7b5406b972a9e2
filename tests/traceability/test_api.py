"""Batch, QR, serial, event and scan-log API: the contract's shapes, rules and permissions."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.audit import history_of
from core.extensions import db
from core.models import Role
from core.signals import products_changed
from core.timeutil import shanghai_today
from tests.certification.factories import certified_product, product
from tests.traceability import factories
from tests.traceability.helpers import decode_qr, make_gtin14, path_of
from traceability import services
from traceability.models import Batch, TraceEvent


@pytest.fixture
def coop(make):
    return make.user(Role.COOPERATIVE)


@pytest.fixture
def tea(make, coop):
    """A certified product of ``coop`` without a GTIN."""
    return certified_product(make, cooperative=coop.cooperative)


@pytest.fixture
def gtin_tea(make, coop):
    """A certified product of ``coop`` with a GTIN (Digital Link codes)."""
    return certified_product(make, cooperative=coop.cooperative, gtin=make_gtin14(), name="保靖黄金茶")


def batch_body(item, **overrides):
    body = {"lot": "GZMJ-20261101-01", "village_id": item.villages[0].id,
            "produced_on": (shanghai_today() - timedelta(days=3)).isoformat(), "quantity": 120}
    body.update(overrides)
    return body


def create(client, make, user, item, **overrides):
    return client.post(f"/api/v1/products/{item.id}/batches", json=batch_body(item, **overrides),
                       headers=make.headers(user))


@pytest.mark.parametrize("with_gtin", [False, True])
def test_creating_a_batch_answers_201_with_a_signed_trace_url_and_adds_stock(client, make, coop, tea, gtin_tea,
                                                                             with_gtin):
    item = gtin_tea if with_gtin else tea
    response = create(client, make, coop, item, expires_on=(shanghai_today() + timedelta(days=300)).isoformat())
    assert response.status_code == 201
    body = response.get_json()
    assert {"id", "lot", "village_id", "quantity", "trace_url", "qr_png_url"} <= body.keys()
    assert (body["lot"], body["village_id"], body["quantity"]) == ("GZMJ-20261101-01", item.villages[0].id, 120)
    expected_start = (f"https://trace.example.cn/01/{make_gtin14()}/10/GZMJ-20261101-01?s=" if with_gtin
                      else f"https://trace.example.cn/t/{body['id']}?s=")
    assert body["trace_url"].startswith(expected_start)
    assert services.available_quantities([item.id]) == {item.id: 120}
    assert db.session.get(Batch, body["id"]).available_quantity == 120


def test_batch_carries_the_compliance_certificate_fields(client, make, coop, tea):
    body = create(client, make, coop, tea, commitment_basis="entrusted_test").get_json()
    certificate = body["compliance_certificate"]
    assert certificate["title"] == "承诺达标合格证"
    assert certificate["product_name"] == tea.name
    assert (certificate["quantity"], certificate["unit"]) == (120, tea.unit)
    village = tea.villages[0]
    assert certificate["origin"] == f"{village.county}{village.township}{village.name}"
    assert certificate["committer"] == coop.cooperative.name
    assert certificate["contact"] == coop.cooperative.contact_phone
    assert certificate["issued_at"].endswith("+08:00")
    assert len(certificate["commitments"]) == 3
    assert (certificate["basis"], certificate["basis_label"]) == ("entrusted_test", "委托检测")


def test_creation_records_a_commissioning_event_an_audit_entry_and_announces_stock(client, make, coop, tea):
    announced = []
    listener = lambda sender, product_ids: announced.append(product_ids)  # noqa: E731
    products_changed.connect(listener)
    try:
        body = create(client, make, coop, tea).get_json()
    finally:
        products_changed.disconnect(listener)
    events = db.session.scalars(sa.select(TraceEvent).where(TraceEvent.batch_id == body["id"])).all()
    assert [(event.biz_step, event.quantity) for event in events] == [("commissioning", 120)]
    assert [event.action for event in history_of("batch", body["id"])] == ["commission"]
    assert announced == [[tea.id]]


def test_uncertified_product_gets_409_and_no_batch(client, make, coop):
    draft = product(make, cooperative=coop.cooperative)
    response = create(client, make, coop, draft)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "product_not_sellable"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0


@pytest.mark.parametrize("status", ["revoked", "expired"])
def test_revoked_or_expired_product_gets_409(client, make, coop, status):
    today = shanghai_today()
    if status == "expired":
        item = certified_product(make, cooperative=coop.cooperative, valid_from=today - timedelta(days=800),
                                 valid_until=today - timedelta(days=1))
    else:
        item = certified_product(make, cooperative=coop.cooperative)
        item.certificate.status = "revoked"
        db.session.commit()
    assert create(client, make, coop, item).status_code == 409


def test_other_cooperative_gets_403_and_anonymous_401(client, make, tea):
    other = make.user(Role.COOPERATIVE)
    assert create(client, make, other, tea).status_code == 403
    assert client.post(f"/api/v1/products/{tea.id}/batches", json=batch_body(tea)).status_code == 401
    consumer = make.user(Role.CONSUMER)
    assert create(client, make, consumer, tea).status_code == 403


def test_admin_may_create_for_any_cooperative_and_unknown_product_is_404(client, make, tea):
    admin = make.user(Role.ADMIN)
    assert create(client, make, admin, tea).status_code == 201
    response = client.post("/api/v1/products/999999/batches", json=batch_body(tea), headers=make.headers(admin))
    assert response.status_code == 404


def test_village_must_be_one_of_the_products_villages(client, make, coop, tea):
    elsewhere = make.village("花垣县")
    response = create(client, make, coop, tea, village_id=elsewhere.id)
    assert response.status_code == 422
    assert "village_id" in response.get_json()["error"]["fields"]


@pytest.mark.parametrize("overrides,field", [
    ({"quantity": 0}, "quantity"),
    ({"quantity": -5}, "quantity"),
    ({"quantity": "10"}, "quantity"),
    ({"quantity": 2.5}, "quantity"),
    ({"lot": ""}, "lot"),
    ({"lot": "   "}, "lot"),
    ({"lot": "批次一"}, "lot"),
    ({"lot": "L" * 21}, "lot"),
    ({"produced_on": "2026-13-01"}, "produced_on"),
    ({"commitment_basis": "trust_me"}, "commitment_basis"),
    ({"village_id": "abc"}, "village_id"),
])
def test_bad_input_is_422_with_the_field_named(client, make, coop, tea, overrides, field):
    response = create(client, make, coop, tea, **overrides)
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


def test_production_date_may_not_be_in_the_future_and_expiry_not_before_it(client, make, coop, tea):
    tomorrow = (shanghai_today() + timedelta(days=1)).isoformat()
    assert create(client, make, coop, tea, produced_on=tomorrow).status_code == 422
    response = create(client, make, coop, tea, produced_on="2026-06-01", expires_on="2026-05-31")
    assert response.status_code == 422
    assert "expires_on" in response.get_json()["error"]["fields"]
    assert create(client, make, coop, tea, produced_on="2026-06-01", expires_on="2026-06-01").status_code == 201


def test_missing_fields_and_malformed_json(client, make, coop, tea):
    response = client.post(f"/api/v1/products/{tea.id}/batches", json={}, headers=make.headers(coop))
    assert response.status_code == 422
    assert {"lot", "village_id", "produced_on", "quantity"} <= response.get_json()["error"]["fields"].keys()
    response = client.post(f"/api/v1/products/{tea.id}/batches", data="{oops", headers=make.headers(coop),
                           content_type="application/json")
    assert response.status_code == 400


def test_lot_is_unique_per_product_but_may_repeat_across_products(client, make, coop, tea, gtin_tea):
    assert create(client, make, coop, tea).status_code == 201
    again = create(client, make, coop, tea)
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "duplicate_lot"
    assert create(client, make, coop, gtin_tea).status_code == 201


@pytest.mark.parametrize("with_gtin", [False, True])
def test_qr_png_decodes_to_exactly_the_trace_url(client, make, coop, tea, gtin_tea, with_gtin):
    body = create(client, make, coop, gtin_tea if with_gtin else tea, lot="A/B-1.2_3").get_json()
    response = client.get(path_of(body["qr_png_url"]), headers=make.headers(coop))
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert decode_qr(response.data) == body["trace_url"]
    assert "max-age" in response.headers["Cache-Control"]
    again = client.get(path_of(body["qr_png_url"]), headers={**make.headers(coop),
                                                              "If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_qr_png_is_only_for_the_batchs_cooperative_and_admins(client, make, coop, tea):
    body = create(client, make, coop, tea).get_json()
    url = path_of(body["qr_png_url"])
    assert client.get(url).status_code == 401
    assert client.get(url, headers=make.headers(make.user(Role.COOPERATIVE))).status_code == 403
    assert client.get(url, headers=make.headers(make.user(Role.CONSUMER))).status_code == 403
    assert client.get(url, headers=make.headers(make.user(Role.ADMIN))).status_code == 200
    assert client.get("/api/v1/batches/999999/qr.png", headers=make.headers(coop)).status_code == 404


@pytest.mark.parametrize("with_gtin", [False, True])
def test_serials_are_unique_and_their_urls_decode_from_qr_images(client, make, coop, tea, gtin_tea, with_gtin):
    from traceability.qr import qr_png

    batch_id = create(client, make, coop, gtin_tea if with_gtin else tea).get_json()["id"]
    response = client.post(f"/api/v1/batches/{batch_id}/serials", json={"count": 25}, headers=make.headers(coop))
    assert response.status_code == 201
    items = response.get_json()["items"]
    assert len(items) == 25 and len({item["serial"] for item in items}) == 25
    for item in items:
        assert f"/21/{item['serial']}?s=" in item["trace_url"] if with_gtin else f"/{item['serial']}?s=" in item["trace_url"]
        assert decode_qr(qr_png(item["trace_url"])) == item["trace_url"]
    more = client.post(f"/api/v1/batches/{batch_id}/serials", json={"count": 5}, headers=make.headers(coop))
    assert not {item["serial"] for item in more.get_json()["items"]} & {item["serial"] for item in items}
    listed = client.get(f"/api/v1/batches/{batch_id}/serials?per_page=100", headers=make.headers(coop)).get_json()
    assert listed["total"] == 30


def test_ten_thousand_serials_in_one_request(client, make, coop, tea):
    batch_id = create(client, make, coop, tea).get_json()["id"]
    response = client.post(f"/api/v1/batches/{batch_id}/serials", json={"count": 10000}, headers=make.headers(coop))
    assert response.status_code == 201
    assert len({item["serial"] for item in response.get_json()["items"]}) == 10000


@pytest.mark.parametrize("count", [0, 10001, -1, "5", None, 1.5])
def test_serial_count_outside_1_to_10000_is_422(client, make, coop, tea, count):
    batch_id = create(client, make, coop, tea).get_json()["id"]
    response = client.post(f"/api/v1/batches/{batch_id}/serials", json={"count": count}, headers=make.headers(coop))
    assert response.status_code == 422


def test_serials_only_by_the_batchs_cooperative(client, make, coop, tea):
    batch_id = create(client, make, coop, tea).get_json()["id"]
    other = make.user(Role.COOPERATIVE)
    url = f"/api/v1/batches/{batch_id}/serials"
    assert client.post(url, json={"count": 1}, headers=make.headers(other)).status_code == 403
    assert client.post(url, json={"count": 1}).status_code == 401
    assert client.post("/api/v1/batches/999999/serials", json={"count": 1},
                       headers=make.headers(coop)).status_code == 404


def test_shipping_and_receiving_events_build_the_history(client, make, coop, tea):
    batch_id = create(client, make, coop, tea).get_json()["id"]
    url = f"/api/v1/batches/{batch_id}/events"
    shipped = client.post(url, json={"type": "shipping", "location": "古丈县默戎镇仓库", "partner": "吉首市冷链物流",
                                     "quantity": 60}, headers=make.headers(coop))
    assert shipped.status_code == 201
    assert shipped.get_json()["label"] == "发货"
    received = client.post(url, json={"type": "receiving", "location": "吉首市经开区冷链仓", "partner": "州机关食堂",
                                      "quantity": 60}, headers=make.headers(coop))
    assert received.status_code == 201
    history = client.get(url, headers=make.headers(coop)).get_json()["items"]
    assert [event["type"] for event in history] == ["commissioning", "shipping", "receiving"]
    assert history[2]["partner"] == "州机关食堂"


def test_an_event_may_be_dated_in_the_past_and_the_history_is_in_time_order(client, make, coop, tea):
    batch_id = create(client, make, coop, tea).get_json()["id"]
    earlier = (shanghai_today() - timedelta(days=1)).isoformat() + "T16:00:00+08:00"
    response = client.post(f"/api/v1/batches/{batch_id}/events",
                           json={"type": "shipping", "location": "默戎镇", "occurred_at": earlier},
                           headers=make.headers(coop))
    assert response.get_json()["occurred_at"] == earlier
    history = client.get(f"/api/v1/batches/{batch_id}/events", headers=make.headers(coop)).get_json()["items"]
    assert [event["type"] for event in history] == ["shipping", "commissioning"]


@pytest.mark.parametrize("body,field", [
    ({"type": "commissioning", "location": "x"}, "type"),
    ({"type": "shipping"}, "location"),
    ({"type": "shipping", "location": "x", "quantity": 0}, "quantity"),
    ({"type": "shipping", "location": "x", "quantity": 9999}, "quantity"),
    ({"type": "shipping", "location": "x", "occurred_at": "2026-11-29T09:30:00"}, "occurred_at"),
    ({"type": "shipping", "location": "x", "occurred_at": "2099-01-01T00:00:00+08:00"}, "occurred_at"),
])
def test_bad_events_are_422(client, make, coop, tea, body, field):
    batch_id = create(client, make, coop, tea).get_json()["id"]
    response = client.post(f"/api/v1/batches/{batch_id}/events", json=body, headers=make.headers(coop))
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


def test_events_only_by_the_batchs_cooperative(client, make, coop, tea):
    batch_id = create(client, make, coop, tea).get_json()["id"]
    response = client.post(f"/api/v1/batches/{batch_id}/events", json={"type": "shipping", "location": "x"},
                           headers=make.headers(make.user(Role.COOPERATIVE)))
    assert response.status_code == 403


def test_cooperative_sees_scans_of_its_batches(client, make, coop, tea):
    body = create(client, make, coop, tea).get_json()
    serial = client.post(f"/api/v1/batches/{body['id']}/serials", json={"count": 2},
                         headers=make.headers(coop)).get_json()["items"][0]
    phone = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) MicroMessenger/8.0.47"}
    for _ in range(3):
        client.get(path_of(body["trace_url"]), headers=phone)
    client.get(path_of(serial["trace_url"]), headers={"Accept": "application/json"})
    response = client.get(f"/api/v1/batches/{body['id']}/scans", headers=make.headers(coop))
    assert response.status_code == 200
    scans = response.get_json()
    assert scans["total"] == 4
    assert scans["summary"]["batch_code"] == 3 and scans["summary"]["items"] == 1 and scans["summary"]["total"] == 4
    assert scans["summary"]["by_client"] == {"wechat": 3, "other": 1}
    assert scans["summary"]["top_serials"][0]["serial"] == serial["serial"]
    newest = scans["items"][0]
    assert newest["serial"] == serial["serial"] and newest["as_json"] is True
    assert set(newest) == {"id", "at", "serial", "device_class", "client", "as_json"}
    other = make.user(Role.COOPERATIVE)
    assert client.get(f"/api/v1/batches/{body['id']}/scans", headers=make.headers(other)).status_code == 403
    listed = client.get("/api/v1/batches", headers=make.headers(coop)).get_json()
    assert listed["total"] == 1 and listed["items"][0]["scans"]["total"] == 4
    assert client.get("/api/v1/batches", headers=make.headers(other)).get_json()["total"] == 0


def test_batch_detail_and_product_batches(client, make, coop, tea):
    first = create(client, make, coop, tea).get_json()
    create(client, make, coop, tea, lot="GZMJ-20261101-02")
    detail = client.get(f"/api/v1/batches/{first['id']}", headers=make.headers(coop)).get_json()
    assert detail["events"][0]["type"] == "commissioning"
    assert detail["serials_count"] == 0 and detail["scans"]["total"] == 0
    listed = client.get(f"/api/v1/products/{tea.id}/batches", headers=make.headers(coop)).get_json()
    assert listed["total"] == 2 and [item["lot"] for item in listed["items"]][1] == "GZMJ-20261101-01"
    other = make.user(Role.COOPERATIVE)
    assert client.get(f"/api/v1/products/{tea.id}/batches", headers=make.headers(other)).status_code == 403


def test_factory_batches_without_a_counter_row_still_count(client, make, coop, tea):
    item = factories.batch(tea)
    url = services.batch_trace_url(item)
    assert client.get(path_of(url), headers={"Accept": "application/json"}).get_json()["scans"]["count"] == 1
    assert client.get(path_of(url), headers={"Accept": "application/json"}).get_json()["scans"]["count"] == 2
