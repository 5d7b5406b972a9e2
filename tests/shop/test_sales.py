"""Village sales: paid goods value net of refunds, credited to the batch's village, by Shanghai year."""
from datetime import datetime, timezone

from core.models import Role
from shop.sales import village_sales_fen, villages_sales_fen
from tests.certification.factories import certified_product
from tests.shop.factories import paid_order
from tests.traceability.factories import batch


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_sales_credit_the_batch_village_net_of_refunds_in_the_shanghai_year(make):
    home = make.village("古丈县")
    other = make.village("花垣县")
    tea = certified_product(make, price_fen=10_000, villages=[home, other])
    home_batch = batch(tea, village=home)
    other_batch = batch(tea, village=other)
    buyer = make.user(Role.CONSUMER)

    paid_order(buyer, [(home_batch, 3)], paid_at=_utc(2026, 6, 1, 4))              # 30,000 in 2026
    paid_order(buyer, [(home_batch, 2), (other_batch, 1)], paid_at=_utc(2026, 7, 1),
               refunded={home_batch: 5_000}, status="partially_refunded")           # +15,000 home, +10,000 other
    paid_order(buyer, [(home_batch, 1)], paid_at=_utc(2026, 12, 31, 17))            # 2027-01-01 01:00 Shanghai
    paid_order(buyer, [(home_batch, 4)], paid_at=_utc(2025, 12, 31, 15, 59))        # 2025-12-31 23:59 Shanghai
    paid_order(buyer, [(home_batch, 9)], paid_at=None, status="pending_payment")    # unpaid: never a sale

    assert village_sales_fen(home.id, 2026) == 45_000
    assert village_sales_fen(other.id, 2026) == 10_000
    assert village_sales_fen(home.id, 2027) == 10_000
    assert village_sales_fen(home.id, 2025) == 40_000
    assert villages_sales_fen([home.id, other.id, other.id + 1], 2026) == {home.id: 45_000, other.id: 10_000,
                                                                           other.id + 1: 0}


def test_a_village_without_orders_has_zero_sales(make):
    assert village_sales_fen(make.village("凤凰县").id, 2026) == 0
