"""PATCH /api/v1/budget-units/{id}: admins change a unit's name, budget or share; every change is
audited old → new; bad input is 422 (or 400/403/404/409) and changes nothing."""
import json

import pytest
import sqlalchemy as sa

from core.audit import AuditEvent, verify_chain
from core.extensions import db
from core.models import BudgetUnit, Role


def _patch(client, make, unit_id, body, user=None):
    user = user or make.user(Role.ADMIN)
    return client.patch(f"/api/v1/budget-units/{unit_id}", json=body, headers=make.headers(user))


def _values(unit_id):
    """The unit's stored values, read fresh from the database."""
    db.session.expire_all()
    unit = db.session.get(BudgetUnit, unit_id)
    return unit.name, int(unit.annual_canteen_budget_fen), str(unit.reserved_share.normalize())


def _events(unit_id, action="update"):
    return list(db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.subject_type == "budget_unit", AuditEvent.subject_id == unit_id, AuditEvent.action == action)))


def test_admin_changes_share_and_budget_and_the_audit_records_old_and_new(client, make):
    unit = make.budget_unit(name="州直机关食堂", annual_canteen_budget_fen=100_000_000, reserved_share="0.10")
    admin = make.user(Role.ADMIN)
    response = _patch(client, make, unit.id, {"reserved_share": "0.15", "annual_canteen_budget_fen": 120_000_000,
                                              "reason": "州政府文件提高比例"}, user=admin)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["id"], body["name"], body["annual_canteen_budget_fen"], body["reserved_share"]) == \
           (unit.id, "州直机关食堂", 120_000_000, "0.15")
    assert body["below_policy_minimum"] is False
    assert _values(unit.id) == ("州直机关食堂", 120_000_000, "0.15")
    [event] = _events(unit.id)
    assert (event.actor_id, event.actor_role, event.comment) == (admin.id, "admin", "州政府文件提高比例")
    assert json.loads(event.data)["changes"] == {
        "annual_canteen_budget_fen": {"from": 100_000_000, "to": 120_000_000},
        "reserved_share": {"from": "0.10", "to": "0.15"}}
    assert verify_chain().ok


def test_fields_left_out_keep_their_values(client, make):
    unit = make.budget_unit(name="吉首市政府食堂", annual_canteen_budget_fen=5_000_000, reserved_share="0.30")
    assert _patch(client, make, unit.id, {"name": "吉首市人民政府机关食堂"}).status_code == 200
    assert _values(unit.id) == ("吉首市人民政府机关食堂", 5_000_000, "0.3")
    assert json.loads(_events(unit.id)[0].data)["changes"] == {
        "name": {"from": "吉首市政府食堂", "to": "吉首市人民政府机关食堂"}}


def test_an_update_that_changes_nothing_records_nothing(client, make):
    unit = make.budget_unit(annual_canteen_budget_fen=5_000_000, reserved_share="0.10")
    for body in ({}, {"reserved_share": "0.1000"}, {"name": unit.name, "annual_canteen_budget_fen": 5_000_000}):
        response = _patch(client, make, unit.id, body)
        assert response.status_code == 200 and response.get_json()["reserved_share"] == "0.10"
    assert _events(unit.id) == []


def test_a_share_below_ten_percent_is_accepted_and_flagged(client, make):
    unit = make.budget_unit(reserved_share="0.10")
    response = _patch(client, make, unit.id, {"reserved_share": "0.05"})
    assert response.status_code == 200 and response.get_json()["below_policy_minimum"] is True
    assert json.loads(_events(unit.id)[0].data)["below_policy_minimum"] is True
    # A unit without a canteen (budget 0) has no quota, so no share is "below policy".
    response = _patch(client, make, unit.id, {"annual_canteen_budget_fen": 0})
    assert response.get_json()["below_policy_minimum"] is False


@pytest.mark.parametrize("field,value", [
    ("reserved_share", 0.1), ("reserved_share", "1.5"), ("reserved_share", "-0.1"), ("reserved_share", "0.123456"),
    ("reserved_share", "abc"), ("reserved_share", None), ("annual_canteen_budget_fen", 12.5),
    ("annual_canteen_budget_fen", "100"), ("annual_canteen_budget_fen", -1), ("annual_canteen_budget_fen", None),
    ("annual_canteen_budget_fen", 10**19), ("name", ""), ("name", "x" * 121), ("reason", "说" * 501), ("reason", 5),
    ("id", 99), ("created_at", "2026-01-01"),
])
def test_invalid_update_is_422_and_nothing_changes(client, make, field, value):
    unit = make.budget_unit(name="州直机关食堂", annual_canteen_budget_fen=100_000_000, reserved_share="0.10")
    response = _patch(client, make, unit.id, {"reserved_share": "0.20", field: value} if field != "reserved_share"
                      else {"name": "改名食堂", field: value})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and field in error["fields"]
    assert _values(unit.id) == ("州直机关食堂", 100_000_000, "0.1")
    assert _events(unit.id) == []


def test_every_invalid_field_is_reported_at_once(client, make):
    unit = make.budget_unit()
    response = _patch(client, make, unit.id, {"reserved_share": "2", "annual_canteen_budget_fen": -5, "name": ""})
    assert response.status_code == 422
    assert set(response.get_json()["error"]["fields"]) == {"reserved_share", "annual_canteen_budget_fen", "name"}


def test_renaming_to_another_units_name_is_409_and_nothing_changes(client, make):
    make.budget_unit(name="州直机关食堂")
    unit = make.budget_unit(name="凤凰县政府食堂", reserved_share="0.10")
    response = _patch(client, make, unit.id, {"name": "州直机关食堂", "reserved_share": "0.30"})
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "duplicate_budget_unit"
    assert _values(unit.id)[0::2] == ("凤凰县政府食堂", "0.1")
    assert _events(unit.id) == []


def test_malformed_json_is_400(client, make):
    unit = make.budget_unit()
    response = client.patch(f"/api/v1/budget-units/{unit.id}", data="{not json",
                            headers={**make.headers(make.user(Role.ADMIN)), "Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "malformed_json"


def test_unknown_unit_is_404(client, make):
    assert _patch(client, make, 999_999, {"reserved_share": "0.2"}).status_code == 404


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
def test_only_admins_change_budget_units(client, make, role):
    unit = make.budget_unit(reserved_share="0.10")
    user = make.user(role, **({"budget_unit": unit} if role is Role.CANTEEN_BUYER else {}))
    response = _patch(client, make, unit.id, {"reserved_share": "0.30"}, user=user)
    assert response.status_code == 403
    assert _values(unit.id)[2] == "0.1" and _events(unit.id) == []


def test_anonymous_update_is_401(client, make):
    unit = make.budget_unit()
    assert client.patch(f"/api/v1/budget-units/{unit.id}", json={"reserved_share": "0.3"}).status_code == 401


def test_creation_is_audited_with_its_values(client, make):
    admin = make.user(Role.ADMIN)
    response = client.post("/api/v1/budget-units", headers=make.headers(admin), json={
        "name": "龙山县机关食堂", "annual_canteen_budget_fen": 30_000_000, "reserved_share": "0.08"})
    assert response.status_code == 201 and response.get_json()["below_policy_minimum"] is True
    [event] = _events(response.get_json()["id"], action="create")
    assert event.actor_id == admin.id
    assert json.loads(event.data) == {"name": "龙山县机关食堂", "annual_canteen_budget_fen": 30_000_000,
                                      "reserved_share": "0.08", "approval_threshold_fen": None,
                                      "below_policy_minimum": True}


def test_a_name_differing_only_by_spaces_is_the_same_name(client, make):
    from core.models import Role

    admin = make.headers(make.user(Role.ADMIN))
    make.budget_unit(name="乙单位")
    other = make.budget_unit(name="甲单位")
    response = client.patch(f"/api/v1/budget-units/{other.id}", json={"name": " 乙单位 "}, headers=admin)
    assert response.status_code == 409
    renamed = client.patch(f"/api/v1/budget-units/{other.id}", json={"name": " 丙单位 "}, headers=admin)
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "丙单位"


def test_a_page_number_past_a_million_is_a_clear_error(client, make):
    from core.models import Role

    unit = make.budget_unit()
    official = make.user(Role.OFFICIAL)
    response = client.get("/api/v1/villages?page=99999999999999999999")
    assert response.status_code == 422 and response.get_json()["error"]["fields"]["page"]
    client.post("/login", data={"email": official.email, "password": "password123"})
    assert client.get(f"/reports/canteens/{unit.id}/orders?page=99999999999999999999").status_code in (400, 422)
