"""Staff accounts: administrators open and deactivate any role's account, a county reviewer only
its county's cooperatives' logins; deactivation revokes tokens and sessions at once; all audited."""
import pytest
import sqlalchemy as sa

from core.audit import history_of, verify_chain
from core.extensions import db
from core.models import Role, User

STRONG = "youshui-tea-2026"


def test_admin_creates_accounts_of_every_role_with_their_scope(client, make):
    admin = make.user(Role.ADMIN)
    cooperative, unit = make.cooperative(), make.budget_unit()
    scopes = {"county_reviewer": {"county": "花垣县"}, "cooperative": {"cooperative_id": cooperative.id},
              "canteen_buyer": {"budget_unit_id": unit.id}}
    for role in Role:
        body = {"email": f"{role.value}@new.cn", "display_name": "新同事", "password": STRONG, "role": role.value,
                **scopes.get(role.value, {})}
        response = client.post("/api/v1/users", json=body, headers=make.headers(admin))
        assert response.status_code == 201, response.json
        assert response.json["role"] == role.value and response.json["is_active"] is True
        created = db.session.get(User, response.json["id"])
        assert created.check_password(STRONG)
        assert [(event.action, event.actor_id) for event in history_of("user", created.id)] == [("create", admin.id)]
    assert client.post("/api/v1/auth/token", json={"email": "finance@new.cn", "password": STRONG}).status_code == 200
    assert verify_chain().ok


@pytest.mark.parametrize("body, field", [
    ({"role": "county_reviewer"}, "county"),
    ({"role": "consumer", "county": "花垣县"}, "county"),
    ({"role": "cooperative", "cooperative_id": 999999}, "cooperative_id"),
    ({"role": "king"}, "role"),
    ({"role": "finance", "password": "password123"}, "password"),
])
def test_account_creation_refuses_bad_input(client, make, body, field):
    admin = make.user(Role.ADMIN)
    response = client.post("/api/v1/users", headers=make.headers(admin),
                           json={"email": "x@new.cn", "display_name": "x", "password": STRONG, **body})
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 1


def test_a_taken_email_is_refused_to_staff_creation(client, make):
    admin, existing = make.user(Role.ADMIN), make.user()
    response = client.post("/api/v1/users", headers=make.headers(admin),
                           json={"email": existing.email.upper(), "display_name": "x", "password": STRONG,
                                 "role": "finance"})
    assert response.status_code == 422 and "email" in response.json["error"]["fields"]


def test_county_reviewer_creates_logins_for_its_own_countys_cooperative_only(client, make):
    reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    own = make.cooperative(make.village("古丈县"))
    foreign = make.cooperative(make.village("花垣县"))
    headers = make.headers(reviewer)
    ok = client.post("/api/v1/users", headers=headers, json={"email": "own@new.cn", "display_name": "社员",
                                                              "password": STRONG, "role": "cooperative",
                                                              "cooperative_id": own.id})
    assert ok.status_code == 201
    other_county = client.post("/api/v1/users", headers=headers, json={
        "email": "foreign@new.cn", "display_name": "社员", "password": STRONG, "role": "cooperative",
        "cooperative_id": foreign.id})
    assert other_county.status_code == 403
    other_role = client.post("/api/v1/users", headers=headers, json={
        "email": "boss@new.cn", "display_name": "x", "password": STRONG, "role": "admin"})
    assert other_role.status_code == 403
    assert db.session.scalar(sa.select(sa.func.count(User.id)).where(User.email.in_(["foreign@new.cn", "boss@new.cn"]))) == 0


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COOPERATIVE, Role.PREFECTURE_REVIEWER, Role.FINANCE,
                                  Role.OFFICIAL, Role.CANTEEN_BUYER])
def test_other_roles_may_not_manage_accounts(client, make, role):
    headers = make.headers(make.user(role))
    assert client.get("/api/v1/users", headers=headers).status_code == 403
    assert client.post("/api/v1/users", headers=headers, json={}).status_code == 403
    assert client.patch(f"/api/v1/users/1", headers=headers, json={"is_active": False}).status_code == 403


def test_county_reviewer_lists_and_sees_only_its_countys_cooperative_logins(client, make):
    reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    own = make.user(Role.COOPERATIVE, cooperative=make.cooperative(make.village("古丈县")))
    foreign = make.user(Role.COOPERATIVE, cooperative=make.cooperative(make.village("花垣县")))
    make.user(Role.FINANCE)
    headers = make.headers(reviewer)
    listed = client.get("/api/v1/users", headers=headers).json
    assert [item["id"] for item in listed["items"]] == [own.id] and listed["total"] == 1
    assert client.get(f"/api/v1/users/{foreign.id}", headers=headers).status_code == 404
    assert client.patch(f"/api/v1/users/{foreign.id}", headers=headers, json={"is_active": False}).status_code == 404
    db.session.refresh(foreign)
    assert foreign.is_active


def test_admin_lists_with_filters(client, make):
    admin = make.user(Role.ADMIN)
    finance = make.user(Role.FINANCE)
    gone = make.user(Role.FINANCE, is_active=False)
    headers = make.headers(admin)
    ids = lambda query: [item["id"] for item in client.get(f"/api/v1/users?{query}", headers=headers).json["items"]]
    assert ids("role=finance") == [gone.id, finance.id]
    assert ids("role=finance&is_active=true") == [finance.id]
    assert ids(f"q={finance.email.upper()}") == [finance.id]
    assert client.get("/api/v1/users?is_active=maybe", headers=headers).status_code == 422
    assert client.get("/api/v1/users?role=king", headers=headers).status_code == 422


def test_deactivation_revokes_tokens_at_once_and_reactivation_does_not_revive_them(client, make):
    admin, staff = make.user(Role.ADMIN), make.user(Role.FINANCE)
    staff_token = make.headers(staff)
    assert client.get("/api/v1/me", headers=staff_token).status_code == 200
    response = client.patch(f"/api/v1/users/{staff.id}", headers=make.headers(admin),
                            json={"is_active": False, "reason": "调离"})
    assert response.status_code == 200 and response.json["is_active"] is False
    assert client.get("/api/v1/me", headers=staff_token).status_code == 401
    assert client.post("/api/v1/auth/token", json={"email": staff.email, "password": "password123"}).status_code == 401
    assert client.patch(f"/api/v1/users/{staff.id}", headers=make.headers(admin), json={"is_active": True}).status_code == 200
    assert client.get("/api/v1/me", headers=staff_token).status_code == 401, "old tokens stay dead"
    assert client.post("/api/v1/auth/token", json={"email": staff.email, "password": "password123"}).status_code == 200
    events = [(event.action, event.from_state, event.to_state, event.comment) for event in history_of("user", staff.id)]
    assert events == [("deactivate", "active", "inactive", "调离"), ("activate", "inactive", "active", "")]


def test_county_reviewer_deactivates_its_cooperatives_login(client, make):
    reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    member = make.user(Role.COOPERATIVE, cooperative=make.cooperative(make.village("古丈县")))
    member_token = make.headers(member)
    response = client.patch(f"/api/v1/users/{member.id}", headers=make.headers(reviewer), json={"is_active": False})
    assert response.status_code == 200
    assert client.get("/api/v1/me", headers=member_token).status_code == 401


@pytest.mark.parametrize("body", [{"is_active": "no"}, {"is_active": 0}, {"role": "admin"}, {"display_name": ""}])
def test_account_update_refuses_bad_input_and_changes_nothing(client, make, body):
    admin, staff = make.user(Role.ADMIN), make.user(Role.FINANCE)
    response = client.patch(f"/api/v1/users/{staff.id}", headers=make.headers(admin), json=body)
    assert response.status_code == 422
    db.session.refresh(staff)
    assert staff.is_active and staff.role == "finance" and history_of("user", staff.id) == []


def test_admin_cannot_deactivate_itself(client, make):
    admin = make.user(Role.ADMIN)
    response = client.patch(f"/api/v1/users/{admin.id}", headers=make.headers(admin),
                            json={"is_active": False, "display_name": "改名"})
    assert response.status_code == 409
    db.session.refresh(admin)
    assert admin.is_active and admin.display_name != "改名"


# ---------------------------------------------------------------- pages

def _browser(app, user):
    browser = app.test_client()
    browser.post("/login", data={"email": user.email, "password": "password123"})
    return browser


def test_admin_opens_an_account_on_the_page_and_sees_it_listed(app, make):
    admin = make.user(Role.ADMIN)
    unit = make.budget_unit(name="吉首市第一中学")
    browser = _browser(app, admin)
    form = browser.get("/accounts/new").get_data(as_text=True)
    assert "开设账号" in form and "吉首市第一中学" in form and 'name="viewport"' in form
    response = browser.post("/accounts/new", data={"email": "buyer@new.cn", "display_name": "采购员", "password": STRONG,
                                                  "role": "canteen_buyer", "budget_unit_id": str(unit.id)})
    assert response.status_code == 302
    created = db.session.scalar(sa.select(User).where(User.email == "buyer@new.cn"))
    assert created.budget_unit_id == unit.id
    listing = browser.get("/accounts").get_data(as_text=True)
    assert "buyer@new.cn" in listing and "食堂采购员" in listing
    assert "账号管理" in listing, "in the navigation"


def test_account_page_shows_field_errors_in_chinese(app, make):
    browser = _browser(app, make.user(Role.ADMIN))
    response = browser.post("/accounts/new", data={"email": "x@new.cn", "display_name": "x", "password": "12345678",
                                                  "role": "county_reviewer"})
    assert response.status_code == 422
    assert "过于常见" in response.get_data(as_text=True)
    response = browser.post("/accounts/new", data={"email": "x@new.cn", "display_name": "x", "password": STRONG,
                                                  "role": "county_reviewer"})
    assert response.status_code == 422
    assert "必须指定" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 1


def test_county_reviewer_page_offers_only_its_cooperatives(app, make):
    reviewer = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    own = make.cooperative(make.village("古丈县"), name="古丈本县合作社")
    foreign = make.cooperative(make.village("花垣县"), name="花垣外县合作社")
    browser = _browser(app, reviewer)
    form = browser.get("/accounts/new").get_data(as_text=True)
    assert "古丈本县合作社" in form and "花垣外县合作社" not in form
    assert 'value="admin"' not in form
    refused = browser.post("/accounts/new", data={"email": "f@new.cn", "display_name": "x", "password": STRONG,
                                                 "role": "cooperative", "cooperative_id": str(foreign.id)})
    assert refused.status_code == 403
    ok = browser.post("/accounts/new", data={"email": "o@new.cn", "display_name": "x", "password": STRONG,
                                            "role": "cooperative", "cooperative_id": str(own.id)})
    assert ok.status_code == 302


def test_deactivate_on_the_page_is_audited_and_confirmed(app, make):
    admin, staff = make.user(Role.ADMIN), make.user(Role.OFFICIAL)
    browser = _browser(app, admin)
    detail = browser.get(f"/accounts/{staff.id}").get_data(as_text=True)
    assert 'data-confirm="确定停用账号' in detail
    browser.post(f"/accounts/{staff.id}/active", data={"is_active": "0", "reason": "退休"})
    db.session.refresh(staff)
    assert not staff.is_active
    detail = browser.get(f"/accounts/{staff.id}").get_data(as_text=True)
    assert "停用" in detail and "退休" in detail


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.FINANCE, Role.PREFECTURE_REVIEWER])
def test_account_pages_are_refused_to_other_roles(app, make, role):
    browser = _browser(app, make.user(role))
    assert browser.get("/accounts").status_code == 403
    assert browser.get("/accounts/new").status_code == 403
    assert "账号管理" not in browser.get("/").get_data(as_text=True)


def test_anonymous_is_sent_to_login_from_account_pages(client):
    for path in ("/account", "/accounts", "/accounts/new"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
