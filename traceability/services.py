"""Traceability use cases: batches, trace URLs, scans. Other packages read stock through here."""
import sqlalchemy as sa

from core.extensions import db
from core.timeutil import shanghai_today
from traceability.models import Batch


def available_quantities(product_ids) -> dict[int, int]:
    """Return sellable units per product: available units of its batches not past their expiry."""
    ids = list(product_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(Batch.product_id, sa.func.coalesce(sa.func.sum(Batch.available_quantity), 0))
        .where(Batch.product_id.in_(ids),
               sa.or_(Batch.expires_on.is_(None), Batch.expires_on >= shanghai_today()))
        .group_by(Batch.product_id)
    )
    totals = {product_id: 0 for product_id in ids}
    totals.update({product_id: int(total) for product_id, total in rows})
    return totals
