"""Duplicate-key races (issue #14 item 2): parallel requests creating the same thing give one
success and 409s (registration: the same 201 for all), never a 500, and one row.

The races need PostgreSQL (real parallel transactions); the app-wide IntegrityError net is
checked on both databases.
"""
import pytest
import sqlalchemy as sa

from core.demo import demo_credit_code
from core.extensions import db
from core.identifiers import gtin_check_digit
from core.models import BudgetUnit, Cooperative, Role, User, VillageSalesTarget
from tests.certification.factories import certified_product, member
from tests.concurrency import run_parallel, skip_unless_postgres
from traceability.models import Batch

PARALLEL = 8
GTIN = "690123456789" + str(gtin_check_digit("690123456789"))


def _race(app, method, path, body, headers):
    """Send the same request from PARALLEL threads at once; return their status codes and bodies."""
    def send():
        response = app.test_client().open(path, method=method, json=body, headers=headers)
        return response.status_code, response.get_json()

    return run_parallel(app, [send] * PARALLEL)


def _one_winner(answers, created=201, code=None):
    statuses = sorted(status for status, _ in answers)
    assert statuses == [created] + [409] * (PARALLEL - 1), statuses
    for status, body in answers:
        if status == 409:
            assert set(body) == {"error"} and (code is None or body["error"]["code"] == code), body


def _count(query) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))


@pytest.mark.postgres
def test_parallel_registrations_of_one_email_all_answer_201_and_make_one_account(app, make):
    skip_unless_postgres()
    body = {"email": "race@test.cn", "password": "Xiangxi-2026-long", "display_name": "抢注"}
    answers = _race(app, "POST", "/api/v1/auth/register", body, {})
    assert [status for status, _ in answers] == [201] * PARALLEL
    assert sum(1 for _, answer in answers if answer.get("id") is not None) == 1
    assert _count(sa.select(User).where(User.email == "race@test.cn")) == 1


@pytest.mark.postgres
def test_parallel_admin_creations_of_one_email_give_one_account(app, make):
    skip_unless_postgres()
    body = {"email": "staff-race@test.cn", "password": "Xiangxi-2026-long", "display_name": "财务",
            "role": "finance"}
    answers = _race(app, "POST", "/api/v1/users", body, make.headers(make.user(Role.ADMIN)))
    statuses = sorted(status for status, _ in answers)
    # The loser either saw the winner's row (422, e-mail taken) or lost at the unique key (409).
    assert statuses.count(201) == 1 and set(statuses) <= {201, 409, 422}, statuses
    assert _count(sa.select(User).where(User.email == "staff-race@test.cn")) == 1


@pytest.mark.postgres
def test_parallel_cooperatives_with_one_credit_code(app, make):
    skip_unless_postgres()
    code = demo_credit_code(987654)
    body = {"name": "抢登合作社", "credit_code": code, "village_id": make.village().id,
            "contact_name": "李四", "contact_phone": "0743-1234567"}
    _one_winner(_race(app, "POST", "/api/v1/cooperatives", body, make.headers(make.user(Role.ADMIN))),
                code="duplicate_credit_code")
    assert _count(sa.select(Cooperative).where(Cooperative.credit_code == code)) == 1


@pytest.mark.postgres
def test_parallel_products_with_one_gtin(app, make):
    skip_unless_postgres()
    coop = member(make)
    body = {"name": "抢注产品", "category": "tea", "description": "", "unit": "盒", "price_fen": 1000,
            "village_ids": [coop.cooperative.village_id], "gtin": GTIN}
    _one_winner(_race(app, "POST", "/api/v1/products", body, make.headers(coop)), code="duplicate_gtin")


@pytest.mark.postgres
def test_parallel_batches_with_one_lot(app, make):
    skip_unless_postgres()
    product = certified_product(make)
    body = {"lot": "RACE-1", "village_id": product.villages[0].id, "produced_on": "2026-11-01", "quantity": 5}
    _one_winner(_race(app, "POST", f"/api/v1/products/{product.id}/batches", body,
                      make.headers(member(make, product.cooperative))), code="duplicate_lot")
    assert _count(sa.select(Batch).where(Batch.lot == "RACE-1")) == 1


@pytest.mark.postgres
def test_parallel_first_targets_for_one_village_and_year(app, make):
    skip_unless_postgres()
    village = make.village()
    answers = _race(app, "PUT", f"/api/v1/villages/{village.id}/sales-targets/2026",
                    {"target_fen": 20_000_000, "reason": "调整"}, make.headers(make.user(Role.ADMIN)))
    statuses = sorted(status for status, _ in answers)
    # Every loser sees either the winner's row (200, unchanged) or loses the insert (409): never 500.
    assert statuses.count(500) == 0 and set(statuses) <= {200, 409} and 200 in statuses, statuses
    assert _count(sa.select(VillageSalesTarget).where(VillageSalesTarget.village_id == village.id)) == 1


@pytest.mark.postgres
def test_parallel_budget_units_with_one_name(app, make):
    skip_unless_postgres()
    body = {"name": "抢登单位", "annual_canteen_budget_fen": 1_000_000, "reserved_share": "0.10"}
    _one_winner(_race(app, "POST", "/api/v1/budget-units", body, make.headers(make.user(Role.ADMIN))),
                code="duplicate_budget_unit")
    assert _count(sa.select(BudgetUnit).where(BudgetUnit.name == "抢登单位")) == 1


def test_an_integrity_error_no_service_expected_is_a_409_in_the_contract_shape(tmp_path):
    """The last net: a unique violation that escapes every service answers 409, and rolls back."""
    from core.app import create_app

    app = create_app({"SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/net.db",
                      "WTF_CSRF_ENABLED": False})

    @app.post("/api/v1/_duplicate_for_test")
    def duplicate():
        db.session.execute(sa.text("INSERT INTO t (k) VALUES (1)"))
        db.session.execute(sa.text("INSERT INTO t (k) VALUES (1)"))
        return {}

    with app.app_context():
        db.session.execute(sa.text("CREATE TABLE t (k INTEGER UNIQUE)"))
        db.session.commit()
    response = app.test_client().post("/api/v1/_duplicate_for_test")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    with app.app_context():
        assert db.session.scalar(sa.text("SELECT count(*) FROM t")) == 0
