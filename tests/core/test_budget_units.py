"""Budget units: created by admins with an integer budget and a decimal-string share."""
import pytest

from core.budget_units import reserved_target_fen
from core.models import BudgetUnit, Role


def _create(client, make, **overrides):
    body = {"name": "州直机关食堂", "annual_canteen_budget_fen": 100_000_000, "reserved_share": "0.10", **overrides}
    return client.post("/api/v1/budget-units", json=body, headers=make.headers(make.user(Role.ADMIN)))


def test_admin_creates_a_budget_unit(client, make):
    response = _create(client, make)
    assert response.status_code == 201
    assert response.json["reserved_share"] == "0.10"
    assert response.json["annual_canteen_budget_fen"] == 100_000_000


@pytest.mark.parametrize("field,value", [
    ("reserved_share", 0.1), ("reserved_share", "1.5"), ("reserved_share", "-0.1"), ("reserved_share", "0.123456"),
    ("reserved_share", "abc"), ("annual_canteen_budget_fen", 12.5), ("annual_canteen_budget_fen", "100"),
    ("annual_canteen_budget_fen", -1), ("name", ""),
])
def test_invalid_budget_unit_is_422_and_nothing_is_created(client, make, field, value):
    from core.extensions import db

    response = _create(client, make, **{field: value})
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]
    assert db.session.query(BudgetUnit).count() == 0


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
def test_only_admins_create_budget_units(client, make, role):
    response = client.post("/api/v1/budget-units", json={"name": "x食堂", "annual_canteen_budget_fen": 1,
                                                         "reserved_share": "0.1"}, headers=make.headers(make.user(role)))
    assert response.status_code == 403


def test_duplicate_name_is_409(client, make):
    assert _create(client, make).status_code == 201
    assert _create(client, make).status_code == 409


def test_buyer_sees_own_unit_only(client, make):
    own = make.budget_unit()
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=own)
    other = make.budget_unit()
    assert client.get(f"/api/v1/budget-units/{own.id}", headers=make.headers(buyer)).status_code == 200
    assert client.get(f"/api/v1/budget-units/{other.id}", headers=make.headers(buyer)).status_code == 404
    assert client.get(f"/api/v1/budget-units/{own.id}", headers=make.headers(make.user())).status_code == 403


def test_reserved_target_rounds_half_up_in_fen(make):
    unit = make.budget_unit(annual_canteen_budget_fen=1_000_005, reserved_share="0.1000")
    assert reserved_target_fen(unit) == 100_001  # 100000.5 rounds up
