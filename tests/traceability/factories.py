"""Builders for batches (sellable stock), usable by every domain's tests."""
import itertools
from datetime import date, timedelta

from core.extensions import db
from core.timeutil import shanghai_today
from traceability.models import Batch

_lots = itertools.count(1)


def batch(product, *, quantity=100, village=None, produced_on: date | None = None, **fields) -> Batch:
    """A batch of ``product`` from its first village with ``quantity`` units all available."""
    item = Batch(
        product=product,
        village=village or product.villages[0],
        lot=fields.pop("lot", f"L{next(_lots):05d}"),
        produced_on=produced_on or shanghai_today() - timedelta(days=10),
        quantity=quantity,
        available_quantity=fields.pop("available_quantity", quantity),
        **fields,
    )
    db.session.add(item)
    db.session.commit()
    return item


def serials(item: Batch, count: int = 3) -> list:
    """Item serials of ``item`` issued directly (no API), with zero scans."""
    from traceability.codes import new_serial
    from traceability.models import Serial

    rows = [Serial(batch_id=item.id, serial=new_serial(), scan_count=0) for _ in range(count)]
    db.session.add_all(rows)
    db.session.commit()
    return rows
