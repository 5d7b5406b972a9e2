"""Cooperative registration: credit code, village, county scope, duplicates."""
import pytest

from core.demo import demo_credit_code
from core.identifiers import is_valid_credit_code
from core.models import Role


def _payload(village_id, credit_code=None, **overrides):
    return {"name": "牛角山村茶叶专业合作社", "credit_code": credit_code or demo_credit_code(42),
            "village_id": village_id, "contact_name": "龙献文", "contact_phone": "0743-4512345", **overrides}


@pytest.mark.parametrize("code,valid", [
    ("91350100M000100Y43", True),       # published example
    ("91350100M000100Y44", False),      # check character altered
    ("91350100M000100Y4", False),       # 17 characters
    ("91350100M000I00Y43", False),      # I is not in the GB 32100 alphabet
    ("9135010OM000100Y43", False),      # O neither
    ("", False),
])
def test_credit_code_check_character(code, valid):
    assert is_valid_credit_code(code) is valid


def test_admin_registers_a_cooperative(client, make):
    village = make.village("古丈县")
    response = client.post("/api/v1/cooperatives", json=_payload(village.id), headers=make.headers(make.user(Role.ADMIN)))
    assert response.status_code == 201
    body = response.json
    assert body["id"] and body["county"] == "古丈县" and body["village"]["id"] == village.id
    assert client.get(f"/api/v1/cooperatives/{body['id']}").json["credit_code"] == demo_credit_code(42)


def test_county_reviewer_registers_only_in_own_county(client, make):
    reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    own = client.post("/api/v1/cooperatives", json=_payload(make.village("古丈县").id), headers=make.headers(reviewer))
    assert own.status_code == 201
    other = client.post("/api/v1/cooperatives", json=_payload(make.village("花垣县").id, demo_credit_code(43)),
                        headers=make.headers(reviewer))
    assert other.status_code == 403


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COOPERATIVE, Role.PREFECTURE_REVIEWER,
                                  Role.CANTEEN_BUYER, Role.FINANCE, Role.OFFICIAL])
def test_other_roles_may_not_register_cooperatives(client, make, role):
    response = client.post("/api/v1/cooperatives", json=_payload(make.village().id), headers=make.headers(make.user(role)))
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"


def test_invalid_credit_code_is_422_and_creates_nothing(client, make):
    from core.extensions import db
    from core.models import Cooperative

    response = client.post("/api/v1/cooperatives", json=_payload(make.village().id, "91350100M000100Y44"),
                           headers=make.headers(make.user(Role.ADMIN)))
    assert response.status_code == 422
    assert "credit_code" in response.json["error"]["fields"]
    assert db.session.query(Cooperative).count() == 0


def test_unknown_village_is_422(client, make):
    response = client.post("/api/v1/cooperatives", json=_payload(999999), headers=make.headers(make.user(Role.ADMIN)))
    assert response.status_code == 422
    assert "village_id" in response.json["error"]["fields"]


def test_duplicate_credit_code_is_409(client, make):
    admin = make.headers(make.user(Role.ADMIN))
    village_id = make.village().id
    assert client.post("/api/v1/cooperatives", json=_payload(village_id), headers=admin).status_code == 201
    again = client.post("/api/v1/cooperatives", json=_payload(village_id, name="另一个名字"), headers=admin)
    assert again.status_code == 409


def test_registration_is_audited(client, make):
    from core.audit import history_of, verify_chain

    response = client.post("/api/v1/cooperatives", json=_payload(make.village().id), headers=make.headers(make.user(Role.ADMIN)))
    events = history_of("cooperative", response.json["id"])
    assert [e.action for e in events] == ["register"]
    assert verify_chain().ok


def test_missing_cooperative_is_404(client):
    assert client.get("/api/v1/cooperatives/12345").status_code == 404
