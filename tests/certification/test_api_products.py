"""Products API: registration and its validation, edits of certified products, the public list."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from certification.models import CertificationStatus, Product, ProductStatus
from core.audit import AuditEvent
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from tests.certification.factories import (
    certified_product,
    certified_through_workflow,
    member,
    product,
    reviewer,
    submitted,
)


def _payload(make, **overrides):
    village = make.village("古丈县")
    body = {"name": "古丈毛尖 明前特级", "category": "tea", "description": "明前手工采制", "unit": "盒",
            "specification": "250克", "price_fen": 12_800, "village_ids": [village.id]}
    body.update(overrides)
    return body


def test_member_registers_a_draft_product_with_villages_gtin_and_bulk_terms(client, make):
    user = member(make)
    villages = [make.village("古丈县"), make.village("花垣县")]
    response = client.post("/api/v1/products", headers=make.headers(user), json=_payload(
        make, village_ids=[v.id for v in villages], gtin="6901234567892",
        bulk={"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 11_800}, {"min_qty": 50, "price_fen": 10_800}]}))
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "draft" and body["certification"] is None and body["sellable"] is False
    assert body["cooperative_id"] == user.cooperative_id
    assert {v["id"]: v["county"] for v in body["villages"]} == {v.id: v.county for v in villages}
    assert body["gtin"] == "06901234567892"  # stored as GTIN-14
    assert body["bulk"] == {"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 11_800},
                                                 {"min_qty": 50, "price_fen": 10_800}]}
    created = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.subject_type == "product"))
    assert created.action == "create" and created.actor_id == user.id


def test_unknown_village_is_422_and_nothing_is_stored(client, make):
    response = client.post("/api/v1/products", headers=make.headers(member(make)),
                           json=_payload(make, village_ids=[999_999]))
    assert response.status_code == 422
    assert "village_ids" in response.json["error"]["fields"]
    assert db.session.scalar(sa.select(sa.func.count(Product.id))) == 0


@pytest.mark.parametrize("gtin", ["6901234567891", "690123456789", "69012345678X", "123", 6901234567892,
                                  "690123456789²"])
def test_gtin_with_wrong_check_digit_or_shape_is_422(client, make, gtin):
    response = client.post("/api/v1/products", headers=make.headers(member(make)), json=_payload(make, gtin=gtin))
    assert response.status_code == 422
    assert "gtin" in response.json["error"]["fields"]


def test_duplicate_gtin_is_409_even_in_another_length(client, make):
    client.post("/api/v1/products", headers=make.headers(member(make)), json=_payload(make, gtin="6901234567892"))
    response = client.post("/api/v1/products", headers=make.headers(member(make)),
                           json=_payload(make, gtin="06901234567892"))
    assert response.status_code == 409
    assert response.json["error"]["code"] == "duplicate_gtin"


@pytest.mark.parametrize("price", [128.5, 12800.0, "12800", True, 0, -1, None, 10**13])
def test_price_must_be_a_positive_json_integer_of_fen(client, make, price):
    response = client.post("/api/v1/products", headers=make.headers(member(make)),
                           json=_payload(make, price_fen=price))
    assert response.status_code == 422
    assert "price_fen" in response.json["error"]["fields"]


@pytest.mark.parametrize("bulk", [
    {"moq": 0, "tiers": []},
    {"moq": 10.0, "tiers": []},
    {"moq": "10", "tiers": []},
    {"moq": 10, "tiers": [{"min_qty": 5, "price_fen": 100}]},                     # below moq
    {"moq": 10, "tiers": [{"min_qty": 20, "price_fen": 100}, {"min_qty": 20, "price_fen": 90}]},  # not rising
    {"moq": 10, "tiers": [{"min_qty": 30, "price_fen": 100}, {"min_qty": 20, "price_fen": 90}]},
    {"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 99.5}]},
    {"moq": 10, "tiers": [{"min_qty": 10, "price_fen": False}]},
    {"moq": 10, "tiers": [{"min_qty": 10}]},
    {"tiers": []},
    "ten",
])
def test_bad_bulk_terms_are_422(client, make, bulk):
    response = client.post("/api/v1/products", headers=make.headers(member(make)), json=_payload(make, bulk=bulk))
    assert response.status_code == 422, response.json
    assert "bulk" in response.json["error"]["fields"]


@pytest.mark.parametrize("field,value", [("category", "diamonds"), ("name", "   "), ("name", ""), ("unit", None),
                                         ("village_ids", []), ("village_ids", ["1"]), ("village_ids", "1")])
def test_other_invalid_fields_are_422(client, make, field, value):
    response = client.post("/api/v1/products", headers=make.headers(member(make)), json=_payload(make, **{field: value}))
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]


def test_malformed_json_is_400(client, make):
    response = client.post("/api/v1/products", headers={**make.headers(member(make)), "Content-Type": "application/json"},
                           data="{not json")
    assert response.status_code == 400


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.FINANCE])
def test_only_cooperatives_and_admins_register_products(client, make, role):
    response = client.post("/api/v1/products", headers=make.headers(make.user(role)), json=_payload(make))
    assert response.status_code == 403


def test_anonymous_registration_is_401(client, make):
    assert client.post("/api/v1/products", json=_payload(make)).status_code == 401


def test_member_cannot_register_for_another_cooperative(client, make):
    other = make.cooperative()
    response = client.post("/api/v1/products", headers=make.headers(member(make)),
                           json=_payload(make, cooperative_id=other.id))
    assert response.status_code == 403


def test_admin_registers_for_a_named_cooperative_only(client, make):
    admin = make.user(Role.ADMIN)
    cooperative = make.cooperative()
    assert client.post("/api/v1/products", headers=make.headers(admin), json=_payload(make)).status_code == 422
    response = client.post("/api/v1/products", headers=make.headers(admin),
                           json=_payload(make, cooperative_id=cooperative.id))
    assert response.status_code == 201 and response.json["cooperative_id"] == cooperative.id


def test_price_description_and_bulk_of_a_certified_product_may_change_and_it_stays_sellable(client, make):
    item = certified_product(make)
    user = member(make, item.cooperative)
    response = client.patch(f"/api/v1/products/{item.id}", headers=make.headers(user),
                            json={"price_fen": 13_800, "description": "新茶上市", "bulk": {"moq": 5, "tiers": []}})
    assert response.status_code == 200, response.json
    assert response.json["price_fen"] == 13_800 and response.json["status"] == "certified"
    assert response.json["bulk"] == {"moq": 5, "tiers": []}
    assert client.get(f"/api/v1/products/{item.id}").json["price_fen"] == 13_800


@pytest.mark.parametrize("change", [{"name": "别的茶"}, {"category": "herbs"}, {"unit": "斤"},
                                    {"specification": "500克"}, {"gtin": "6901234567892"}])
def test_brand_defining_fields_of_a_certified_product_are_locked(client, make, change):
    item = certified_product(make)
    user = member(make, item.cooperative)
    response = client.patch(f"/api/v1/products/{item.id}", headers=make.headers(user), json=change)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "brand_fields_locked"
    db.session.expire_all()
    assert db.session.get(Product, item.id).name == "古丈毛尖 明前特级"


def test_villages_are_locked_while_an_application_is_reviewed(client, make):
    application = submitted(make)
    user = member(make, application.product.cooperative)
    response = client.patch(f"/api/v1/products/{application.product_id}", headers=make.headers(user),
                            json={"village_ids": [make.village("花垣县").id]})
    assert response.status_code == 409


def test_sending_unchanged_locked_fields_is_fine(client, make):
    item = certified_product(make)
    user = member(make, item.cooperative)
    response = client.patch(f"/api/v1/products/{item.id}", headers=make.headers(user),
                            json={"name": item.name, "village_ids": [v.id for v in reversed(item.villages)],
                                  "price_fen": 9_900})
    assert response.status_code == 200 and response.json["price_fen"] == 9_900


def test_after_rejection_or_expiry_the_product_may_be_corrected(client, make):
    item = certified_product(make, valid_from=shanghai_today() - timedelta(days=800),
                             valid_until=shanghai_today() - timedelta(days=1))
    user = member(make, item.cooperative)
    response = client.patch(f"/api/v1/products/{item.id}", headers=make.headers(user), json={"name": "古丈毛尖 2027新茶"})
    assert response.status_code == 200 and response.json["name"] == "古丈毛尖 2027新茶"


def test_another_cooperative_gets_404_for_a_draft_and_403_for_a_sellable_product(client, make):
    outsider = member(make)
    draft = product(make)
    sellable = certified_product(make)
    assert client.patch(f"/api/v1/products/{draft.id}", headers=make.headers(outsider),
                        json={"price_fen": 1}).status_code == 404
    assert client.patch(f"/api/v1/products/{sellable.id}", headers=make.headers(outsider),
                        json={"price_fen": 1}).status_code == 403


def _not_sellable_products(make):
    today = shanghai_today()
    draft = product(make, name="草稿")
    waiting = submitted(make).product
    expired = certified_product(make, name="过期", valid_from=today - timedelta(days=1000),
                                valid_until=today - timedelta(days=1))
    future = certified_product(make, name="未生效", valid_from=today + timedelta(days=1),
                               valid_until=today + timedelta(days=900))
    revoked = certified_product(make, name="已撤销")
    revoked.certificate.status = CertificationStatus.REVOKED.value
    revoked.status = ProductStatus.REVOKED.value
    db.session.commit()
    return {"draft": draft, "submitted": waiting, "expired": expired, "future": future, "revoked": revoked}


def test_public_list_and_pages_show_only_products_that_may_be_sold_now(client, make):
    hidden = _not_sellable_products(make)
    listed = certified_product(make, name="在售")
    last_day = certified_product(make, name="今天到期", valid_until=shanghai_today())
    body = client.get("/api/v1/products").json
    assert {item["id"] for item in body["items"]} == {listed.id, last_day.id}
    assert body["total"] == 2 and body["page"] == 1 and body["per_page"] == 50
    for item in hidden.values():
        assert client.get(f"/api/v1/products/{item.id}").status_code == 404
        assert client.get(f"/catalogue/{item.id}").status_code == 404
    shown = client.get(f"/api/v1/products/{listed.id}").json
    assert shown["status"] == "certified" and shown["certification"]["certificate_no"] == listed.certificate.certificate_no
    assert "applications" not in shown  # workflow details are for the product's overseers


def test_owner_sees_derived_expired_and_revoked_statuses(client, make):
    hidden = _not_sellable_products(make)
    for key, expected in (("expired", "expired"), ("revoked", "revoked"), ("draft", "draft"),
                          ("submitted", "submitted")):
        item = hidden[key]
        body = client.get(f"/api/v1/products/{item.id}", headers=make.headers(member(make, item.cooperative))).json
        assert body["status"] == expected
    expired = client.get(f"/api/v1/products/{hidden['expired'].id}",
                         headers=make.headers(member(make, hidden["expired"].cooperative))).json
    assert expired["certification"]["status"] == "expired" and expired["certification"]["expires_in_days"] == -1


def test_overseers_see_a_draft_others_do_not(client, make):
    draft = product(make)  # a cooperative in 古丈县
    for user, status in ((member(make, draft.cooperative), 200), (reviewer(make, "古丈县"), 200),
                         (make.user(Role.PREFECTURE_REVIEWER), 200), (make.user(Role.ADMIN), 200),
                         (reviewer(make, "花垣县"), 404), (member(make), 404), (make.user(Role.CONSUMER), 404)):
        assert client.get(f"/api/v1/products/{draft.id}", headers=make.headers(user)).status_code == status, user.role


def test_list_filters_by_category_county_and_village(client, make):
    guzhang = make.village("古丈县")
    huayuan = make.village("花垣县")
    tea = certified_product(make, villages=[guzhang])
    kiwi = certified_product(make, cooperative=make.cooperative(village=huayuan), category="kiwifruit",
                             name="十八洞猕猴桃")

    def ids(query):
        return {item["id"] for item in client.get(f"/api/v1/products?{query}").json["items"]}

    assert ids("category=tea") == {tea.id}
    assert ids("county=花垣县") == {kiwi.id}
    assert ids(f"village_id={guzhang.id}") == {tea.id}
    assert ids("category=kiwifruit&county=古丈县") == set()
    assert ids("category=&county=&village_id=") == {tea.id, kiwi.id}


def test_category_may_be_given_as_its_chinese_label_and_is_stored_as_the_code(client, make):
    response = client.post("/api/v1/products", headers=make.headers(member(make)),
                           json=_payload(make, category="猕猴桃"))
    assert response.status_code == 201, response.json
    assert response.json["category"] == "kiwifruit"
    kiwi = certified_product(make, category="kiwifruit", name="十八洞猕猴桃")
    listed = client.get("/api/v1/products?category=猕猴桃").json["items"]
    assert [item["id"] for item in listed] == [kiwi.id]


def test_an_unknown_category_error_names_the_codes_and_labels(client, make):
    response = client.post("/api/v1/products", headers=make.headers(member(make)),
                           json=_payload(make, category="钻石"))
    assert response.status_code == 422
    message = response.json["error"]["fields"]["category"][0]
    assert "tea（茶叶）" in message and "kiwifruit（猕猴桃）" in message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Product)) == 0


@pytest.mark.parametrize("query", ["category=gold", "county=长沙县", "village_id=abc", "per_page=501", "page=0"])
def test_bad_list_parameters_are_422(client, query):
    assert client.get(f"/api/v1/products?{query}").status_code == 422


def test_list_is_paginated(client, make):
    items = [certified_product(make, name=f"产品{i}") for i in range(3)]
    body = client.get("/api/v1/products?page=2&per_page=2").json
    assert body["total"] == 3 and [item["id"] for item in body["items"]] == [items[2].id]


def test_renewal_keeps_the_product_listed_and_owner_sees_the_pending_renewal(client, make):
    application = certified_through_workflow(make)
    product_id = application.product_id
    renewal = submitted(make, product_=application.product)
    assert product_id in {item["id"] for item in client.get("/api/v1/products").json["items"]}
    body = client.get(f"/api/v1/products/{product_id}",
                      headers=make.headers(member(make, application.product.cooperative))).json
    assert body["status"] == "certified"
    assert body["pending_application"] == {"id": renewal.id, "status": "submitted"}
    assert body["certification"]["id"] == application.id


def test_cooperative_products_lists_all_statuses_to_the_member_and_sellable_to_others(client, make):
    cooperative = make.cooperative()
    draft = product(make, cooperative=cooperative)
    sold = certified_product(make, cooperative=cooperative)
    url = f"/api/v1/cooperatives/{cooperative.id}/products"
    mine = client.get(url, headers=make.headers(member(make, cooperative))).json
    assert {item["id"] for item in mine["items"]} == {draft.id, sold.id}
    public = client.get(url).json
    assert [item["id"] for item in public["items"]] == [sold.id]
    assert client.get("/api/v1/cooperatives/999999/products").status_code == 404

