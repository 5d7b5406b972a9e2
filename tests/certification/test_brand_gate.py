"""The brand gate holds everywhere at once: list, product page, catalogue, CSV, orders, batches.

Listing and pages are certification's; orders and batches belong to shop and traceability and
are driven here through their public API, to prove they ask the same gate.
"""
from datetime import timedelta

import pytest

from certification import services
from core.models import Role
from core.timeutil import shanghai_today
from tests.certification.factories import certified_product, certified_through_workflow, member, prefecture, product
from tests.traceability.factories import batch

SHIPPING = {"name": "李四", "phone": "13800000000", "address": "湖南省吉首市人民北路 1 号"}


def _order(client, make, product_id):
    return client.post("/api/v1/orders", headers=make.headers(make.user(Role.CONSUMER)), json={
        "lines": [{"product_id": product_id, "quantity": 1}], "payment_method": "stripe", "shipping": SHIPPING})


def _new_batch(client, make, item):
    return client.post(f"/api/v1/products/{item.id}/batches", headers=make.headers(member(make, item.cooperative)),
                       json={"lot": f"GATE-{item.id}", "village_id": item.villages[0].id,
                             "produced_on": (shanghai_today() - timedelta(days=1)).isoformat(), "quantity": 10})


def _revoked(make):
    application = certified_through_workflow(make)
    batch(application.product, quantity=5)
    services.revoke_certificate(prefecture(make), application.id, {"reason": "抽检不合格"})
    return application.product


def _expired(make):
    today = shanghai_today()
    item = certified_product(make, valid_from=today - timedelta(days=1100), valid_until=today - timedelta(days=1))
    batch(item, quantity=5)
    return item


def _draft(make):
    return product(make)


@pytest.mark.parametrize("build", [_draft, _revoked, _expired], ids=["draft", "revoked", "expired"])
def test_a_product_without_a_valid_certificate_is_nowhere_and_cannot_be_ordered_or_batched(client, make, build):
    item = build(make)
    assert item.id not in {p["id"] for p in client.get("/api/v1/products").json["items"]}
    assert client.get(f"/api/v1/products/{item.id}").status_code == 404
    assert client.get(f"/catalogue/{item.id}").status_code == 404
    assert item.name not in client.get("/catalogue").get_data(as_text=True)
    assert item.name not in client.get("/catalogue.csv").get_data(as_text=True)
    ordered = _order(client, make, item.id)
    assert ordered.status_code == 409 and ordered.json["error"]["code"] == "product_not_sellable"
    batched = _new_batch(client, make, item)
    assert batched.status_code == 409 and batched.json["error"]["code"] == "product_not_sellable"


def test_the_same_product_sells_until_revoked_and_not_a_request_later(client, make):
    application = certified_through_workflow(make)
    item = application.product
    assert _new_batch(client, make, item).status_code == 201
    assert _order(client, make, item.id).status_code == 201
    response = client.post(f"/api/v1/certifications/{application.id}/revoke", headers=make.headers(prefecture(make)),
                           json={"reason": "冒用品牌"})
    assert response.status_code == 200
    assert _order(client, make, item.id).status_code == 409
    assert client.get(f"/api/v1/products/{item.id}").status_code == 404
