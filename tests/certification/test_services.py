"""Service rules that are not visible through one request: status derivation and races."""
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from certification import services
from certification.gate import is_sellable, sellable_clause
from certification.models import Certification, Product
from core.errors import Conflict
from core.extensions import db
from core.models import User
from core.timeutil import shanghai_today
from tests.certification.factories import EVIDENCE, certified_product, member, product, reviewer, submitted


def test_status_derivation_agrees_with_the_brand_gate(make):
    today = shanghai_today()
    cases = [
        product(make),
        certified_product(make),
        certified_product(make, valid_until=today),
        certified_product(make, valid_from=today - timedelta(days=1000), valid_until=today - timedelta(days=1)),
        certified_product(make, valid_from=today + timedelta(days=1), valid_until=today + timedelta(days=99)),
    ]
    in_sql = set(db.session.scalars(sa.select(Product.id).where(sellable_clause())))
    for item in cases:
        assert is_sellable(item) == (item.id in in_sql)
        assert (services.product_status(item) == "certified") == is_sellable(item)
    assert services.product_status(cases[3]) == "expired"


def test_certificate_number_is_prefixed_by_brand_and_year(make):
    item = certified_product(make)
    certificate = item.certificate
    certificate.valid_from = shanghai_today().replace(year=2027, month=1, day=1)
    assert services.certificate_number(certificate) == f"XXXB-2027-{certificate.id:06d}"


def _run_concurrently(app, *calls):
    """Run callables at the same moment in their own app contexts; return results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def worker(index, call):
        with app.app_context():
            barrier.wait()
            try:
                results[index] = call()
            except Exception as exc:  # noqa: BLE001 - the test inspects what each caller got
                results[index] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.postgres
def test_two_simultaneous_applications_for_one_product_yield_one(app, make):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks are a PostgreSQL matter")
    item = product(make)
    user_id, product_id = member(make, item.cooperative).id, item.id

    def apply():
        return services.submit_application(db.session.get(User, user_id), product_id,
                                           {"evidence": [dict(EVIDENCE)]}).id

    results = _run_concurrently(app, apply, apply, apply)
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 2
    assert db.session.scalar(sa.select(sa.func.count(Certification.id))) == 1


@pytest.mark.postgres
def test_two_simultaneous_decisions_yield_one_transition(app, make):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks are a PostgreSQL matter")
    application_id = submitted(make).id
    reviewer_ids = [reviewer(make).id, reviewer(make).id]

    def decide(user_id, decision):
        def call():
            body = {"decision": decision, "comment": "并发"}
            return services.decide_application(db.session.get(User, user_id), application_id, body).status
        return call

    results = _run_concurrently(app, decide(reviewer_ids[0], "approve"), decide(reviewer_ids[1], "reject"))
    assert sum(isinstance(r, str) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 1
    events = services.application_history(application_id)
    assert [e.action for e in events][0] == "submit" and len(events) == 2
