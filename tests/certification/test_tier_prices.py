"""Canteen tier prices are honest (issue #12): strictly below the list price and falling as the
quantity rises, checked on create and on every PATCH, and never charged above the list price."""
import pytest

from certification.models import BulkTier
from core.extensions import db
from shop import services
from tests.certification.factories import certified_product, member


def _body(make, **overrides):
    body = {"name": "保靖黄金茶", "category": "tea", "description": "", "unit": "盒", "price_fen": 16_800,
            "village_ids": [make.village().id]}
    body.update(overrides)
    return body


@pytest.mark.parametrize("tiers, where", [
    ([{"min_qty": 10, "price_fen": 99_900}], ("0", "price_fen")),                             # ¥999 for ¥168
    ([{"min_qty": 10, "price_fen": 16_800}], ("0", "price_fen")),                             # equal is not a discount
    ([{"min_qty": 10, "price_fen": 15_000}, {"min_qty": 50, "price_fen": 15_000}], ("1", "price_fen")),  # not falling
    ([{"min_qty": 10, "price_fen": 14_000}, {"min_qty": 50, "price_fen": 15_000}], ("1", "price_fen")),  # rising
])
def test_a_tier_at_or_above_the_list_price_or_not_falling_is_422_and_nothing_is_saved(client, make, tiers, where):
    user = member(make)
    response = client.post("/api/v1/products", headers=make.headers(user),
                           json=_body(make, bulk={"moq": 10, "tiers": tiers}))
    assert response.status_code == 422, response.get_json()
    index, field = where
    assert field in response.get_json()["error"]["fields"]["bulk"]["tiers"][index]
    assert db.session.query(BulkTier).count() == 0


def test_falling_tiers_below_the_list_price_are_accepted(client, make):
    response = client.post("/api/v1/products", headers=make.headers(member(make)), json=_body(
        make, bulk={"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 15_800}, {"min_qty": 50, "price_fen": 14_800}]}))
    assert response.status_code == 201, response.get_json()


def test_a_patch_is_checked_against_what_it_leaves_unchanged(client, make):
    user = member(make)
    headers = make.headers(user)
    created = client.post("/api/v1/products", headers=headers, json=_body(
        make, bulk={"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 15_800}]})).get_json()
    url = f"/api/v1/products/{created['id']}"
    # Lowering the list price under the saved tier is refused on the price.
    lowered = client.patch(url, headers=headers, json={"price_fen": 15_000})
    assert lowered.status_code == 422 and "price_fen" in lowered.get_json()["error"]["fields"]
    # New tiers above the saved list price are refused on the tiers.
    raised = client.patch(url, headers=headers, json={"bulk": {"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 17_000}]}})
    assert raised.status_code == 422 and "bulk" in raised.get_json()["error"]["fields"]
    # Both together, consistent: accepted.
    both = client.patch(url, headers=headers, json={"price_fen": 15_000,
                                                    "bulk": {"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 14_000}]}})
    assert both.status_code == 200 and both.get_json()["price_fen"] == 15_000


def test_a_tier_saved_before_the_rule_never_charges_above_the_list_price(make):
    item = certified_product(make, price_fen=16_800)
    item.bulk_moq = 10
    item.bulk_tiers.append(BulkTier(min_qty=10, price_fen=99_900))
    db.session.commit()
    assert services.unit_price_fen(item, 20, canteen=True) == 16_800
    assert services.unit_price_fen(item, 20, canteen=False) == 16_800
