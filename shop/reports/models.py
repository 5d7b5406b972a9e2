"""The village sales summary the reports read, kept exact by ``shop/reports/summary.py``.

Why a summary at all: the report's ``orders`` column is a count of *distinct* paid orders per
village; over 1,000,000 allocations a year ``COUNT(DISTINCT order_id)`` takes seconds on
PostgreSQL (measured, docs/benchmarks.md), far above the 300 ms target. Two small tables fix it:

- ``OrderVillageSales``: one order's net contribution to one village in one Shanghai month
  and channel (what the summary last counted for that order, so a change to the order can be
  taken out exactly and put back recomputed);
- ``VillageMonthSales``: per village, Shanghai month and channel, the sum of those
  contributions and how many of them are positive (= distinct contributing orders, because an
  order is paid once, in one month, through one channel).

A year's report is then a GROUP BY over at most 1,110 × 12 × 2 rows. Both tables are derived
data: ``order_id`` deliberately has no foreign key (a cascade would delete a contribution
without taking it out of its month); ``flask --app wsgi reports rebuild`` recreates both from
``order_allocations`` and ``reports reconcile`` proves them right.

The category filter needs each allocation's product, which the summary does not keep, so it
aggregates ``order_allocations`` directly; ``ALLOCATIONS_BY_PRODUCT`` below (declared here on
shop's table, created by the reports migration) lets PostgreSQL answer it from the index alone,
only for the category's products (540 ms → 56 ms on 1,000,000 lines, docs/benchmarks.md).
"""
import sqlalchemy as sa

from core.extensions import db
from shop.models import CHANNELS, OrderAllocation

#: (product, payment time) with the summed columns included: an index-only scan per product.
ALLOCATIONS_BY_PRODUCT = sa.Index(
    "ix_order_allocations_product_paid", OrderAllocation.product_id, OrderAllocation.paid_at,
    postgresql_include=["village_id", "order_id", "channel", "amount_fen", "refunded_fen"])


def _channel_known() -> sa.CheckConstraint:
    """The channels shop knows, as a CHECK (same SQL on both databases)."""
    return sa.CheckConstraint(f"channel IN ({', '.join(repr(c) for c in CHANNELS)})", name="channel_known")


class OrderVillageSales(db.Model):
    """What one paid order contributes (net of refunds) to one village in one month and channel."""

    __tablename__ = "report_order_village_sales"
    __table_args__ = (
        sa.PrimaryKeyConstraint("order_id", "village_id", "year", "month", "channel"),
        sa.CheckConstraint("net_fen >= 0", name="net_not_negative"),
        _channel_known(),
    )

    order_id = db.Column(db.Integer, nullable=False)
    village_id = db.Column(db.Integer, nullable=False)
    year = db.Column(db.SmallInteger, nullable=False)
    month = db.Column(db.SmallInteger, nullable=False)
    channel = db.Column(db.String(20), nullable=False)
    net_fen = db.Column(db.BigInteger, nullable=False)


class VillageMonthSales(db.Model):
    """A village's sales (fen, net of refunds) and contributing orders in one Shanghai month and channel."""

    __tablename__ = "report_village_month_sales"
    __table_args__ = (
        # Year first: every report reads one year, grouped by village.
        sa.PrimaryKeyConstraint("year", "village_id", "month", "channel"),
        sa.CheckConstraint("month BETWEEN 1 AND 12", name="month_in_range"),
        _channel_known(),
    )

    year = db.Column(db.SmallInteger, nullable=False)
    village_id = db.Column(db.Integer, db.ForeignKey("villages.id"), nullable=False)
    month = db.Column(db.SmallInteger, nullable=False)
    channel = db.Column(db.String(20), nullable=False)
    sales_fen = db.Column(db.BigInteger, nullable=False, default=0)
    orders = db.Column(db.Integer, nullable=False, default=0)
