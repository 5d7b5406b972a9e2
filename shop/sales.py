"""Village sales: the goods value of paid order lines net of refunds, credited to the village
of the batch the units came from, in the Asia/Shanghai year of payment.

One indexed aggregate over ``order_allocations`` (village_id, paid_at); see ``shop/models.py``.
"""
import sqlalchemy as sa

from core.extensions import db
from core.timeutil import shanghai_year_bounds
from shop.models import OrderAllocation

#: The SQL expression of one allocation's contribution to sales, for anyone aggregating.
NET_SALES_FEN = OrderAllocation.amount_fen - OrderAllocation.refunded_fen


def paid_in_year_clause(year: int):
    """A condition on ``OrderAllocation`` selecting units paid in the Shanghai ``year``."""
    start, end = shanghai_year_bounds(year)
    return sa.and_(OrderAllocation.paid_at >= start, OrderAllocation.paid_at < end)


def village_sales_fen(village_id: int, year: int) -> int:
    """Return a village's sales in fen for a Shanghai calendar year (paid, net of refunds)."""
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(NET_SALES_FEN), 0))
        .where(OrderAllocation.village_id == village_id, paid_in_year_clause(year))
    )
    return int(total or 0)


def villages_sales_fen(village_ids, year: int) -> dict[int, int]:
    """Return sales in fen per village for a Shanghai year, zero for villages without any."""
    ids = [int(v) for v in village_ids]
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(OrderAllocation.village_id, sa.func.sum(NET_SALES_FEN))
        .where(OrderAllocation.village_id.in_(ids), paid_in_year_clause(year))
        .group_by(OrderAllocation.village_id)
    )
    totals = dict.fromkeys(ids, 0)
    totals.update({village_id: int(total or 0) for village_id, total in rows})
    return totals
