"""On PostgreSQL, payments and refunds committed at the same time never lose a summary update."""

import pytest

from core.extensions import db
from core.models import Role, User
from shop import services as shop_services
from shop.reports import services
from shop.reports.services import ReportFilters
from tests.certification.factories import certified_product
from tests.concurrency import run_parallel, skip_unless_postgres
from tests.shop.helpers import place
from tests.traceability.factories import batch

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _postgres_only():
    """Skip on SQLite: one writer at a time there, nothing to race."""
    skip_unless_postgres()


def test_concurrent_payments_and_refunds_of_one_village_all_count(app, client, make):
    village = make.village("永顺县")
    rice = certified_product(make, villages=[village], price_fen=1_000, category="rice")
    batch(rice, quantity=1_000)
    buyers = [make.user(Role.CANTEEN_BUYER) for _ in range(6)]
    orders = [place(client, make, buyer, (rice, 10 * (n + 1)), payment_method="bank_transfer")
              for n, buyer in enumerate(buyers)]
    finance_id = make.user(Role.FINANCE).id
    official = make.user(Role.OFFICIAL)

    def confirm(order):
        """A job: finance confirms the order's transfer."""
        def job():
            """Confirm, in this thread's session."""
            return shop_services.confirm_transfer(db.session.get(User, finance_id), order["id"],
                                                  {"amount_fen": order["total_fen"], "reference": f"R{order['id']}"}).id
        return job

    assert all(isinstance(result, int) for result in run_parallel(app, [confirm(order) for order in orders]))

    def refund(order, amount):
        """A job: finance refunds ``amount`` of the order."""
        def job():
            """Refund, in this thread's session."""
            return shop_services.refund_order(db.session.get(User, finance_id), order["id"],
                                              {"amount_fen": amount, "reason": "部分退货"}).id
        return job

    refunds = [refund(orders[0], orders[0]["total_fen"]), refund(orders[1], 5_000), refund(orders[2], 1)]
    assert all(isinstance(result, int) for result in run_parallel(app, refunds))

    db.session.expire_all()
    year = services.default_year()
    item = next(i for i in services.report_village_sales(official, ReportFilters(year=year, county="永顺县")).items
                if i["village_id"] == village.id)
    paid = sum(order["total_fen"] for order in orders)              # 10+20+…+60 units × ¥10 = 210,000
    assert item["sales_fen"] == paid - orders[0]["total_fen"] - 5_000 - 1
    assert item["orders"] == 5                                     # the first one was refunded in full
    assert services.reconcile_village_sales(year).ok
