"""Administrators manage budget units on pages: a list with this year's progress, a create form
and an edit form (budget typed in yuan, stored in fen; share a decimal 0–1), every save audited."""
import json

import pytest
import sqlalchemy as sa

from core.audit import AuditEvent
from core.extensions import db
from core.models import BudgetUnit, Role


def _sign_in(client, user):
    """Sign in through the login form (session cookie)."""
    client.post("/login", data={"email": user.email, "password": "password123"})


def _admin(client, make):
    admin = make.user(Role.ADMIN)
    _sign_in(client, admin)
    return admin


def _form(**overrides):
    return {"name": "州直机关食堂", "annual_canteen_budget_yuan": "1,200,000.50", "reserved_share": "0.15", **overrides}


def _unit(name):
    db.session.expire_all()
    return db.session.scalar(sa.select(BudgetUnit).where(BudgetUnit.name == name))


def _events(unit_id):
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "budget_unit",
                                                               AuditEvent.subject_id == unit_id).order_by(AuditEvent.id)))


def test_admin_creates_a_unit_with_the_budget_in_yuan_stored_in_fen(client, make):
    admin = _admin(client, make)
    form = client.get("/budget-units/new").get_data(as_text=True)
    assert 'name="csrf_token"' in form and 'value="0.10"' in form  # the policy minimum is the default share
    response = client.post("/budget-units/new", data=_form(reason="新设职工食堂"))
    assert response.status_code == 302 and response.headers["Location"].endswith("/budget-units")
    unit = _unit("州直机关食堂")
    assert (unit.annual_canteen_budget_fen, str(unit.reserved_share.normalize())) == (120_000_050, "0.15")
    [event] = _events(unit.id)
    assert (event.action, event.actor_id, event.comment) == ("create", admin.id, "新设职工食堂")
    assert "已保存：州直机关食堂" in client.get("/budget-units").get_data(as_text=True)


def test_admin_edits_a_unit_and_the_page_shows_the_audited_change(client, make):
    unit = make.budget_unit(name="凤凰县机关食堂", annual_canteen_budget_fen=30_000_000, reserved_share="0.10")
    _admin(client, make)
    page = client.get(f"/budget-units/{unit.id}/edit").get_data(as_text=True)
    assert 'value="300000.00"' in page and 'value="0.10"' in page and 'value="凤凰县机关食堂"' in page
    response = client.post(f"/budget-units/{unit.id}/edit",
                           data=_form(name="凤凰县机关食堂", annual_canteen_budget_yuan="350000", reserved_share="0.3",
                                      reason="县政府要求 30%"))
    assert response.status_code == 302
    unit = _unit("凤凰县机关食堂")
    assert (unit.annual_canteen_budget_fen, str(unit.reserved_share.normalize())) == (35_000_000, "0.3")
    [event] = _events(unit.id)
    assert json.loads(event.data)["changes"] == {
        "annual_canteen_budget_fen": {"from": 30_000_000, "to": 35_000_000},
        "reserved_share": {"from": "0.10", "to": "0.30"}}
    history = client.get(f"/budget-units/{unit.id}/edit").get_data(as_text=True).split('id="unit-history"')[1]
    assert "¥300,000.00 → " in history and "¥350,000.00" in history and "10% → " in history and "30%" in history
    assert "县政府要求 30%" in history


@pytest.mark.parametrize("field,value", [
    ("annual_canteen_budget_yuan", "12.345"), ("annual_canteen_budget_yuan", "一百万"),
    ("annual_canteen_budget_yuan", ""), ("annual_canteen_budget_yuan", "-5"),
    ("annual_canteen_budget_yuan", "99999999999999999"), ("reserved_share", "1.2"), ("reserved_share", "150%"),
    ("name", ""),
])
def test_bad_edit_shows_the_error_under_its_field_and_changes_nothing(client, make, field, value):
    unit = make.budget_unit(name="保靖县机关食堂", annual_canteen_budget_fen=30_000_000, reserved_share="0.10")
    _admin(client, make)
    response = client.post(f"/budget-units/{unit.id}/edit",
                           data=_form(**{"name": "保靖县机关食堂", "reserved_share": "0.2", field: value}))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert page.count('class="field-error"') == 1
    assert 'class="field-error"' in page.split(f'id="{field}"')[1].split("<label")[0]
    unit = _unit("保靖县机关食堂")
    assert (unit.annual_canteen_budget_fen, str(unit.reserved_share.normalize())) == (30_000_000, "0.1")
    assert _events(unit.id) == []


def test_every_bad_field_shows_at_once_even_with_an_unreadable_amount(client, make):
    _admin(client, make)
    page = client.post("/budget-units/new", data=_form(name="", annual_canteen_budget_yuan="abc",
                                                       reserved_share="2")).get_data(as_text=True)
    assert page.count('class="field-error"') == 3
    assert db.session.scalar(sa.select(sa.func.count(BudgetUnit.id))) == 0


def test_a_duplicate_name_is_shown_on_the_name_field(client, make):
    make.budget_unit(name="州直机关食堂")
    _admin(client, make)
    response = client.post("/budget-units/new", data=_form())
    assert response.status_code == 422 and "同名预算单位已存在" in response.get_data(as_text=True)


def test_a_share_below_ten_percent_saves_with_a_warning(client, make):
    _admin(client, make)
    client.post("/budget-units/new", data=_form(reserved_share="0.05"))
    assert _unit("州直机关食堂") is not None
    page = client.get("/budget-units").get_data(as_text=True)
    assert "注意：预留比例 5% 低于政策要求的 10%" in page and "比例低于 10%" in page


def test_the_list_shows_every_unit_with_this_years_progress(client, make):
    make.budget_unit(name="州直机关食堂", annual_canteen_budget_fen=100_000_000, reserved_share="0.10")
    make.budget_unit(name="州档案馆", annual_canteen_budget_fen=0, reserved_share="0.10")
    _admin(client, make)
    page = client.get("/budget-units").get_data(as_text=True)
    assert "州直机关食堂" in page and "目标 ¥100,000.00" in page and "已采购 <strong>¥0.00</strong>" in page
    assert "未设食堂 · 无预留份额" in page
    assert page.count('class="unit-card"') == 2


def test_header_links_for_admins_and_canteen_buyers(client, make):
    _admin(client, make)
    assert 'href="/budget-units">预算单位</a>' in client.get("/").get_data(as_text=True)
    client.post("/logout")
    _sign_in(client, make.user(Role.CANTEEN_BUYER))
    home = client.get("/").get_data(as_text=True)
    assert 'href="/reports/canteen">本单位食堂</a>' in home and 'href="/budget-units"' not in home


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
def test_only_admins_open_the_management_pages(client, make, role):
    unit = make.budget_unit(reserved_share="0.10")
    _sign_in(client, make.user(role))
    for url in ("/budget-units", "/budget-units/new", f"/budget-units/{unit.id}/edit"):
        assert client.get(url).status_code == 403
    assert client.post(f"/budget-units/{unit.id}/edit", data=_form(reserved_share="0.5")).status_code == 403
    assert str(_unit(unit.name).reserved_share.normalize()) == "0.1"


def test_anonymous_is_sent_to_login(client, make):
    response = client.get("/budget-units")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_editing_an_unknown_unit_is_404(client, make):
    _admin(client, make)
    assert client.get("/budget-units/999999/edit").status_code == 404


def test_the_share_may_be_typed_as_a_percentage(client, make):
    _admin(client, make)
    response = client.post("/budget-units/new", data=_form(name="百分比食堂", reserved_share="15%"))
    assert response.status_code == 302
    assert str(_unit("百分比食堂").reserved_share.normalize()) == "0.15"
    refused = client.post("/budget-units/new", data=_form(name="乱填食堂", reserved_share="很多%"))
    assert refused.status_code == 422 and _unit("乱填食堂") is None
