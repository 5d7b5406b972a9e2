"""Domain signals, sent by services *after* their transaction commits.

Why signals: search (and any future cache) must follow product, certificate and stock
changes without the certification, traceability or shop packages importing it.
Receivers must be quick and must not raise; they run in the request that made the change.
"""
from blinker import Namespace

_signals = Namespace()

#: sent with ``product_ids`` (an iterable of ints) when anything an index or cache keeps changed:
#: product fields, certification status or validity, batches, or stock running out or coming back
#: (not every unit sold: pages read live stock counts).
products_changed = _signals.signal("products-changed")


def notify_products_changed(*product_ids: int) -> None:
    """Announce committed changes to these products."""
    ids = sorted({int(pid) for pid in product_ids if pid is not None})
    if ids:
        products_changed.send(None, product_ids=ids)
