"""Keeps the village sales summary (``shop/reports/models.py``) exact, in the order's own transaction.

Shop's code is not edited for this: SQLAlchemy session events on the app's session class
(``install``, called once from ``shop/reports/__init__.py``) follow every change that can move
a sale:

- ``after_flush``: orders whose allocations were inserted (paid), changed or deleted, or whose
  payment time or refunded amount changed, are remembered in ``session.info``;
- ``do_orm_execute``: an ORM bulk UPDATE or DELETE of ``OrderAllocation`` (shop marks an order's
  allocations paid that way) or a bulk DELETE of ``Order`` remembers the orders its WHERE
  selects, before it runs;
- ``before_commit``: the session is flushed, then each remembered order's contribution per
  (village, Shanghai month, channel) is recomputed from its allocations, compared with what the
  summary holds for it, and only the difference is applied: ``sales_fen + Δ`` and
  ``orders + Δ`` on the monthly rows, in a fixed key order (increments commute, so concurrent
  payments of different orders never lose an update; shop's order row lock serialises changes
  to one order). It all happens before COMMIT, so the summary commits or rolls back with the
  order;
- ``after_transaction_end`` of the outermost transaction (rollback, close): forget.

Writes that bypass the session (raw SQL, COPY, psql) are not seen: run
``flask --app wsgi reports rebuild`` after them; ``reports reconcile`` reports any drift.
"""
from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.extensions import db
from core.timeutil import SHANGHAI, to_shanghai
from shop.models import Order, OrderAllocation
from shop.reports.models import OrderVillageSales, VillageMonthSales

_TOUCHED = "reports_touched_orders"
# Columns of an allocation / order whose change can move a village's sales.
_ALLOCATION_FIELDS = ("order_id", "village_id", "channel", "amount_fen", "refunded_fen", "paid_at")
_ORDER_FIELDS = ("paid_at", "refunded_fen")
_CHUNK = 500


def _touched(session) -> set:
    """The orders this session changed since its last commit or rollback."""
    return session.info.setdefault(_TOUCHED, set())


def _changed(obj, names) -> bool:
    """True when one of ``names`` changed on ``obj`` in the flush being processed."""
    attrs = sa.inspect(obj).attrs
    return any(attrs[name].history.has_changes() for name in names)


def _after_flush(session, flush_context) -> None:
    """Remember the orders whose sales figures this flush may have moved."""
    touched = _touched(session)
    for obj in session.new:
        # A new unpaid allocation (an order being placed) moves nothing yet.
        if isinstance(obj, OrderAllocation) and obj.paid_at is not None:
            touched.add(obj.order_id)
    for obj in session.dirty:
        if isinstance(obj, OrderAllocation) and _changed(obj, _ALLOCATION_FIELDS):
            touched.add(obj.order_id)
            touched.update(i for i in sa.inspect(obj).attrs.order_id.history.deleted if i is not None)
        elif isinstance(obj, Order) and _changed(obj, _ORDER_FIELDS):
            touched.add(obj.id)
    for obj in session.deleted:
        if isinstance(obj, OrderAllocation):
            touched.add(obj.order_id)
        elif isinstance(obj, Order):
            touched.add(obj.id)


def _before_bulk_statement(state) -> None:
    """Remember the orders an ORM bulk UPDATE/DELETE is about to touch (its WHERE, read first)."""
    if not (state.is_update or state.is_delete) or state.bind_mapper is None:
        return
    entity = state.bind_mapper.class_
    if entity is OrderAllocation:
        column = OrderAllocation.order_id
    elif entity is Order and state.is_delete:
        column = Order.id
    else:
        return
    query = sa.select(column).distinct()
    if state.statement.whereclause is not None:
        query = query.where(state.statement.whereclause)
    _touched(state.session).update(state.session.scalars(query))


def _before_commit(session) -> None:
    """Flush, then bring the summary in line with every order this transaction changed."""
    session.flush()
    ids = session.info.pop(_TOUCHED, None)
    if ids:
        refresh_orders(session, ids)


def _forget(session, transaction) -> None:
    """The outermost transaction ended (committed, rolled back or closed): start afresh."""
    if transaction.parent is None:
        session.info.pop(_TOUCHED, None)


def install() -> None:
    """Register the listeners on the app's session class (idempotent)."""
    for name, listener in (("after_flush", _after_flush), ("do_orm_execute", _before_bulk_statement),
                           ("before_commit", _before_commit), ("after_transaction_end", _forget)):
        if not sa.event.contains(db.session, name, listener):
            sa.event.listen(db.session, name, listener)


def _upsert_cells(session, deltas: dict) -> None:
    """Add (Δsales, Δorders) to each (year, village, month, channel) row, creating it if needed."""
    rows = [{"year": year, "village_id": village_id, "month": month, "channel": channel,
             "sales_fen": sales, "orders": orders}
            for (year, village_id, month, channel), (sales, orders) in sorted(deltas.items()) if sales or orders]
    if not rows:
        return
    table = VillageMonthSales.__table__
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect](table)
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.year, table.c.village_id, table.c.month, table.c.channel],
        set_={"sales_fen": table.c.sales_fen + insert.excluded.sales_fen,
              "orders": table.c.orders + insert.excluded.orders})
    # One row at a time, in key order: a fixed lock order for concurrent transactions.
    for row in rows:
        session.execute(statement, row)


def refresh_orders(session, order_ids) -> None:
    """Recompute these orders' contributions and apply the differences to the monthly rows."""
    ordered = sorted({int(i) for i in order_ids if i is not None})
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start:start + _CHUNK]
        old = {(r.order_id, r.village_id, r.year, r.month, r.channel): r.net_fen
               for r in session.execute(sa.select(OrderVillageSales).where(OrderVillageSales.order_id.in_(chunk)))
               .scalars()}
        new: dict[tuple, int] = defaultdict(int)
        for order_id, village_id, channel, paid_at, net in session.execute(
                sa.select(OrderAllocation.order_id, OrderAllocation.village_id, OrderAllocation.channel,
                          OrderAllocation.paid_at, OrderAllocation.amount_fen - OrderAllocation.refunded_fen)
                .where(OrderAllocation.order_id.in_(chunk), OrderAllocation.paid_at.is_not(None))):
            local = to_shanghai(paid_at)
            new[(order_id, village_id, local.year, local.month, channel)] += int(net)
        if old == new:
            continue
        deltas: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
        for key in old.keys() | new.keys():
            before, after = old.get(key, 0), new.get(key, 0)
            _, village_id, year, month, channel = key
            delta = deltas[(year, village_id, month, channel)]
            delta[0] += after - before
            delta[1] += int(after > 0) - int(before > 0)
        changed = {key[0] for key in old.keys() ^ new.keys()} \
            | {key[0] for key in old.keys() & new.keys() if old[key] != new[key]}
        session.execute(sa.delete(OrderVillageSales).where(OrderVillageSales.order_id.in_(sorted(changed))))
        fresh = [{"order_id": o, "village_id": v, "year": y, "month": m, "channel": c, "net_fen": net}
                 for (o, v, y, m, c), net in sorted(new.items()) if o in changed]
        if fresh:
            session.execute(sa.insert(OrderVillageSales), fresh)
        _upsert_cells(session, deltas)


def month_starts(year: int) -> list[datetime]:
    """The 13 instants bounding the Asia/Shanghai months of ``year`` (aware)."""
    return [datetime(year, month, 1, tzinfo=SHANGHAI) for month in range(1, 13)] + \
        [datetime(year + 1, 1, 1, tzinfo=SHANGHAI)]


def shanghai_month_sql(column, year: int):
    """SQL: the Shanghai month (1-12) of a UTC ``column`` known to lie in ``year``.

    A CASE over boundaries computed by zoneinfo, so SQL buckets exactly as ``to_shanghai`` does,
    on SQLite and PostgreSQL alike, without time-zone functions in SQL.
    """
    starts = month_starts(year)
    return sa.case(*[(column < starts[index + 1], index + 1) for index in range(12)])


def rebuild_summary() -> dict:
    """Recreate both summary tables from ``order_allocations`` in one transaction; return row counts.

    For after bulk loads that bypassed the session, or to repair drift ``reports reconcile`` found.
    """
    from core.timeutil import shanghai_year_bounds

    session = db.session
    session.execute(sa.delete(OrderVillageSales))
    session.execute(sa.delete(VillageMonthSales))
    first, last = session.execute(sa.select(sa.func.min(OrderAllocation.paid_at),
                                            sa.func.max(OrderAllocation.paid_at))).one()
    if first is not None:
        for year in range(to_shanghai(first).year, to_shanghai(last).year + 1):
            start, end = shanghai_year_bounds(year)
            net = OrderAllocation.amount_fen - OrderAllocation.refunded_fen
            paid = (sa.select(OrderAllocation.order_id, OrderAllocation.village_id,
                              shanghai_month_sql(OrderAllocation.paid_at, year).label("month"),
                              OrderAllocation.channel, net.label("net_fen"))
                    .where(OrderAllocation.paid_at >= start, OrderAllocation.paid_at < end).subquery("paid"))
            session.execute(sa.insert(OrderVillageSales).from_select(
                ["order_id", "village_id", "year", "month", "channel", "net_fen"],
                sa.select(paid.c.order_id, paid.c.village_id, sa.literal(year, sa.SmallInteger), paid.c.month,
                          paid.c.channel, sa.func.sum(paid.c.net_fen))
                .group_by(paid.c.order_id, paid.c.village_id, paid.c.month, paid.c.channel)))
    contributions = OrderVillageSales
    session.execute(sa.insert(VillageMonthSales).from_select(
        ["year", "village_id", "month", "channel", "sales_fen", "orders"],
        sa.select(contributions.year, contributions.village_id, contributions.month, contributions.channel,
                  sa.func.sum(contributions.net_fen),
                  sa.func.sum(sa.case((contributions.net_fen > 0, 1), else_=0)))
        .group_by(contributions.year, contributions.village_id, contributions.month, contributions.channel)))
    counts = {"contributions": session.scalar(sa.select(sa.func.count()).select_from(OrderVillageSales)),
              "cells": session.scalar(sa.select(sa.func.count()).select_from(VillageMonthSales))}
    session.info.pop(_TOUCHED, None)
    session.commit()
    return counts
