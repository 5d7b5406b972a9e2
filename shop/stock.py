"""Stock per batch: allocation at ordering time and release on cancellation or expiry.

These helpers run inside the caller's transaction and never commit (``services`` does).

Concurrency, why it cannot oversell:
- PostgreSQL: every candidate batch row of the whole order is locked with ``SELECT ... FOR
  UPDATE`` in one statement ordered by batch id, so two orders touching overlapping batches
  always take their locks in the same order (no deadlock) and the second waits until the first
  commits, then re-reads the current quantities.
- SQLite serialises writers but lets a deferred transaction read before it writes; we take the
  database write lock first (a no-op UPDATE) so the quantities we read cannot change under us.
- On both, the decrement itself is ``UPDATE ... WHERE available_quantity >= n`` with a row count
  check, so even a mistake in the above could only refuse an order, never oversell.
"""
import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value

from core.errors import Conflict
from core.extensions import db
from core.timeutil import shanghai_today, utcnow
from shop.models import OrderAllocation
from traceability.models import Batch


@dataclass(frozen=True)
class Take:
    """Units of one product taken from one batch."""

    batch_id: int
    village_id: int
    quantity: int


def dialect() -> str:
    """Name of the database dialect of the current session."""
    return db.session.get_bind().dialect.name


def take_write_lock() -> None:
    """On SQLite, take the database write lock before reading what we are about to change.

    PostgreSQL needs nothing here: it locks the rows themselves (see ``lock_candidate_batches``).
    """
    if dialect() == "sqlite":
        db.session.execute(sa.text("UPDATE batches SET id = id WHERE 0"))


# Built once: placement runs these on every order, and building a statement costs about as
# much Python time as executing it.
_batches = Batch.__table__
_CANDIDATES = (
    sa.select(_batches.c.id, _batches.c.product_id, _batches.c.village_id, _batches.c.produced_on,
              _batches.c.available_quantity)
    .where(_batches.c.product_id.in_(sa.bindparam("product_ids", expanding=True)),
           _batches.c.available_quantity > 0,
           sa.or_(_batches.c.expires_on.is_(None), _batches.c.expires_on >= sa.bindparam("today", type_=sa.Date)))
    # One statement, one global order: lock rows by id across the whole order.
    .order_by(_batches.c.id)
)
_CANDIDATES_FOR_UPDATE = _CANDIDATES.with_for_update()


def lock_candidate_batches(product_ids, today: date | None = None) -> dict[int, list[dict]]:
    """Return each product's sellable batches, oldest production first, locked for this transaction.

    Sellable means units left and not past ``expires_on`` (an Asia/Shanghai date).
    """
    query = _CANDIDATES_FOR_UPDATE if dialect() == "postgresql" else _CANDIDATES
    by_product: dict[int, list[dict]] = defaultdict(list)
    rows = db.session.connection().execute(query, {"product_ids": list(product_ids),
                                                   "today": today or shanghai_today()})
    for row in rows.mappings():
        by_product[row["product_id"]].append(dict(row))
    for rows in by_product.values():
        rows.sort(key=lambda row: (row["produced_on"], row["id"]))
    return by_product


def plan_allocation(wanted: dict[int, int], candidates: dict[int, list[dict]]) -> tuple[dict[int, list[Take]], dict[int, int]]:
    """Split each product's wanted units over its batches, oldest first.

    :return: (takes per product, shortfall per product: units available when short).
    """
    takes: dict[int, list[Take]] = {}
    short: dict[int, int] = {}
    for product_id, quantity in wanted.items():
        remaining = quantity
        plan = []
        for row in candidates.get(product_id, []):
            if remaining == 0:
                break
            used = min(remaining, row["available_quantity"])
            plan.append(Take(row["id"], row["village_id"], used))
            remaining -= used
        if remaining:
            short[product_id] = quantity - remaining
        takes[product_id] = plan
    return takes, short


@functools.lru_cache(maxsize=32)
def _decrement(batch_count: int) -> sa.Update:
    """``UPDATE batches`` taking ``q<i>`` units from batch ``b<i>`` for ``batch_count`` batches, each
    row guarded so it cannot go below zero (one statement per batch count, built once)."""
    quantity = sa.case(*[(_batches.c.id == sa.bindparam(f"b{i}"), sa.bindparam(f"q{i}", type_=sa.Integer))
                         for i in range(batch_count)])
    return (sa.update(_batches)
            .where(_batches.c.id.in_([sa.bindparam(f"b{i}", type_=sa.Integer) for i in range(batch_count)]),
                   _batches.c.available_quantity >= quantity)
            .values(available_quantity=_batches.c.available_quantity - quantity))


def apply_takes(takes: dict[int, list[Take]]) -> None:
    """Decrement the batches in one UPDATE, each row guarded so it cannot go below zero.

    One statement instead of one per batch: this runs on every order while the batch rows are
    locked (``lock_candidate_batches`` took the locks in id order already).

    :raise Conflict: a batch no longer had the units (only possible if locking was bypassed).
    """
    taken: dict[int, int] = {}
    for plan in takes.values():
        for take in plan:
            taken[take.batch_id] = taken.get(take.batch_id, 0) + take.quantity
    if not taken:
        return
    params = {}
    for i, batch_id in enumerate(sorted(taken)):
        params[f"b{i}"], params[f"q{i}"] = batch_id, taken[batch_id]
    result = db.session.connection().execute(_decrement(len(taken)), params)
    if result.rowcount != len(taken):
        raise Conflict("库存刚刚被其他订单占用，请重试", code="insufficient_stock")


def release_allocations(allocations) -> list[int]:
    """Give each not-yet-released allocation's units back to its batch, once; return product ids.

    The ``released_at IS NULL`` guard makes a second release of the same row a no-op even if a
    caller's own status check were bypassed.
    """
    now = utcnow()
    product_ids = []
    for allocation in sorted(allocations, key=lambda a: (a.batch_id, a.id)):
        marked = db.session.execute(
            sa.update(OrderAllocation)
            .where(OrderAllocation.id == allocation.id, OrderAllocation.released_at.is_(None))
            .values(released_at=now)
            .execution_options(synchronize_session=False)
        )
        if marked.rowcount != 1:
            continue
        db.session.execute(
            sa.update(Batch).where(Batch.id == allocation.batch_id)
            .values(available_quantity=Batch.available_quantity + allocation.quantity)
            .execution_options(synchronize_session=False)
        )
        set_committed_value(allocation, "released_at", now)
        product_ids.append(allocation.product_id)
    return product_ids
