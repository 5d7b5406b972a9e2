"""Traceability use cases: batches, trace URLs, scans. Other packages read stock through here."""
import sqlalchemy as sa

from core.extensions import db
from traceability.models import Batch


def available_quantities(product_ids) -> dict[int, int]:
    """Return sellable units per product (sum of its batches' available quantity); 0 when none."""
    ids = list(product_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(Batch.product_id, sa.func.coalesce(sa.func.sum(Batch.available_quantity), 0))
        .where(Batch.product_id.in_(ids))
        .group_by(Batch.product_id)
    )
    totals = {product_id: 0 for product_id in ids}
    totals.update({product_id: int(total) for product_id, total in rows})
    return totals
