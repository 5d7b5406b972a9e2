"""Village sales report on 1,000,000 paid order lines, PostgreSQL.

    .venv/bin/python bench/report_bench.py
    .venv/bin/python bench/report_bench.py --lines 1000000 --runs 15 --year 2025 \
        --database-url postgresql://postgres@127.0.0.1:5432/xiangban_bench_reports [--keep]

What it does, in one run (bounded: about two minutes on 2 cores):
1. drops and creates its own scratch database (never a shared one), migrates it to head and
   loads the registry's 1,110 villages;
2. bulk-loads with COPY: 300 cooperatives, 900 products over 14 categories, one batch per
   (product, origin village) so every village has stock, ``--lines`` paid order lines in
   ``--year`` (one allocation each, one in ten split over two batches of two villages),
   online and canteen channels, partial and full refunds with their per-allocation parts,
   plus unpaid and cancelled orders that must not count; then VACUUM ANALYZE (as autovacuum
   would). COPY bypasses the ORM session, so the monthly village summary the reports read is
   then built with ``reports rebuild`` (timed) — the path a bulk import takes in production;
3. times, ``--runs`` times each after one warm-up: the full-year village report service
   (all villages, default sort), the same over HTTP through the Flask app
   (``GET /api/v1/reports/village-sales?year=&per_page=2000`` with a bearer token, JSON
   encoding included), the county/zone roll-up, the monthly trend, a one-county filter and
   a category filter; prints p50/p95/max in milliseconds;
4. times the summary upkeep on the write path: committing a refund recorded on one allocation
   through the ORM (the session listeners recompute that order's contribution before COMMIT);
5. runs the reconciliation once (timed) and checks it finds no difference, and checks that
   the report's total equals the generator's own running total;
6. drops the scratch database (unless ``--keep``).

Numbers go to docs/benchmarks.md ("Village sales report") by hand.
"""
import argparse
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/xiangban_bench_reports"
SECRET = "bench-secret-key-not-for-production"


def _driver_url(url: str) -> str:
    """SQLAlchemy's URL for psycopg 3."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _admin(url: str, statement: str) -> None:
    """Run one statement against the server's maintenance database (CREATE/DROP DATABASE)."""
    import sqlalchemy as sa

    engine = sa.create_engine(_driver_url(url).rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(statement))
    engine.dispose()


def create_scratch_database(url: str) -> None:
    """Drop and create the bench's own database; refuse names that are not obviously scratch."""
    name = urlsplit(url).path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"refusing to recreate {name!r}: the bench database name must contain 'bench'")
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(url, f'CREATE DATABASE "{name}"')


def drop_scratch_database(url: str) -> None:
    """Drop the bench database."""
    _admin(url, f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


class Copier:
    """COPY rows into one table through psycopg 3's copy protocol."""

    def __init__(self, cursor, table: str, columns: tuple[str, ...]):
        """Remember the cursor, table and column order."""
        self.cursor, self.table, self.columns = cursor, table, columns

    def load(self, rows) -> int:
        """Stream ``rows`` (tuples in column order) into the table; return how many."""
        count = 0
        with self.cursor.copy(f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count


def generate(app, lines_wanted: int, year: int, seed: int = 2025) -> dict:
    """Bulk-load the scenario; return counts and the independent expected total."""
    import sqlalchemy as sa

    from certification.models import CATEGORY_LABELS
    from core.demo import demo_credit_code
    from core.extensions import db
    from core.models import Village
    from core.timeutil import shanghai_year_bounds

    rng = random.Random(seed)
    with app.app_context():
        villages = list(db.session.execute(sa.select(Village.id, Village.county).order_by(Village.id)))
        raw = db.engine.raw_connection()
        connection = raw.driver_connection
        cursor = connection.cursor()
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        password = "pbkdf2:sha256:1000$bench$0"
        # Scratch database, consistent generated rows: skip per-row foreign-key triggers during the
        # bulk load (the reconciliation at the end checks every row against its sources anyway).
        cursor.execute("SET session_replication_role = replica")

        cursor.execute("INSERT INTO budget_units (name, annual_canteen_budget_fen, reserved_share, created_at) "
                       "SELECT '压测预算单位' || g, 50000000, 0.1, now() FROM generate_series(1, 20) g")
        cursor.execute("SELECT id FROM budget_units ORDER BY id")
        unit_ids = [row[0] for row in cursor.fetchall()]
        Copier(cursor, "users", ("email", "display_name", "password_hash", "role", "budget_unit_id",
                                 "token_generation", "is_active", "created_at")).load(
            [(f"buyer{n}@bench.test", f"买家{n}", password, "consumer", None, 0, True, now) for n in range(200)]
            + [(f"canteen{n}@bench.test", f"食堂{n}", password, "canteen_buyer", unit_ids[n], 0, True, now)
               for n in range(20)]
            + [("official@bench.test", "官员", password, "official", None, 0, True, now)])
        cursor.execute("SELECT id, role, budget_unit_id FROM users ORDER BY id")
        users = cursor.fetchall()
        consumers = [u for u in users if u[1] == "consumer"]
        canteens = [u for u in users if u[1] == "canteen_buyer"]
        official_id = next(u[0] for u in users if u[1] == "official")

        # Cooperatives and products; product villages are dealt round-robin so every village has stock.
        Copier(cursor, "cooperatives", ("name", "credit_code", "village_id", "contact_name", "contact_phone",
                                        "created_at")).load(
            (f"压测合作社{n}", demo_credit_code(500000 + n), villages[(n * 37) % len(villages)][0], "联系人",
             "0743-0000000", now) for n in range(300))
        cursor.execute("SELECT id, village_id FROM cooperatives ORDER BY id")
        cooperatives = cursor.fetchall()
        categories = list(CATEGORY_LABELS)
        product_rows = []
        for n in range(900):
            cooperative_id, _ = cooperatives[n % len(cooperatives)]
            product_rows.append((cooperative_id, f"压测产品{n}", categories[n % len(categories)], "", "盒", "",
                                 rng.randrange(1_000, 30_000), "certified", now, now))
        Copier(cursor, "products", ("cooperative_id", "name", "category", "description", "unit", "specification",
                                    "price_fen", "status", "created_at", "updated_at")).load(product_rows)
        cursor.execute("SELECT id, price_fen, cooperative_id FROM products ORDER BY id")
        products = cursor.fetchall()
        product_villages: dict[int, list[int]] = {}
        deal = 0
        for product_id, _, _ in products:
            count = 1 + (product_id % 3)
            product_villages[product_id] = sorted({villages[(deal + k) % len(villages)][0] for k in range(count)})
            deal += count
        Copier(cursor, "product_villages", ("product_id", "village_id")).load(
            (pid, vid) for pid, vids in product_villages.items() for vid in vids)
        Copier(cursor, "batches", ("product_id", "village_id", "lot", "produced_on", "quantity", "available_quantity",
                                   "commitment_basis", "created_at")).load(
            (pid, vid, f"B{pid}-{vid}", f"{year}-01-01", 1_000_000_000, 1_000_000_000, "quality_control", now)
            for pid, vids in product_villages.items() for vid in vids)
        cursor.execute("SELECT id, product_id, village_id FROM batches ORDER BY id")
        batches_of: dict[int, list[tuple[int, int]]] = {}
        for batch_id, product_id, village_id in cursor.fetchall():
            batches_of.setdefault(product_id, []).append((batch_id, village_id))
        connection.commit()

        start, end = shanghai_year_bounds(year)
        span = int((end - start).total_seconds())
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM orders")
        order_id = cursor.fetchone()[0]
        line_id = allocation_id = refund_id = 0
        orders, lines, allocations, refunds, parts = [], [], [], [], []
        expected_total = 0
        paid_lines = 0
        while paid_lines < lines_wanted:
            order_id += 1
            canteen = rng.random() < 0.2
            buyer = rng.choice(canteens if canteen else consumers)
            n_lines = min(rng.choice((1, 1, 2, 2, 3, 4)), lines_wanted - paid_lines)
            chosen = rng.sample(products, n_lines)
            paid_at = (start + timedelta(seconds=rng.randrange(span))).replace(tzinfo=None)
            roll = rng.random()
            # 2% unpaid or cancelled (no payment time: never a sale), the rest paid.
            status = "pending_payment" if roll < 0.01 else "cancelled" if roll < 0.02 else "paid"
            paid = status == "paid"
            order_lines = []
            for product_id, price, cooperative_id in chosen:
                line_id += 1
                quantity = rng.randrange(1, 20) * (5 if canteen else 1)
                takes = batches_of[product_id]
                if len(takes) > 1 and quantity > 1 and rng.random() < 0.1:
                    first = rng.randrange(1, quantity)
                    split = [(takes[0], first), (takes[1], quantity - first)]
                else:
                    split = [(rng.choice(takes), quantity)]
                line_allocations = []
                for (batch_id, village_id), qty in split:
                    allocation_id += 1
                    line_allocations.append([allocation_id, order_id, line_id, batch_id, village_id, product_id,
                                             "canteen" if canteen else "online", qty, price * qty, 0,
                                             paid_at if paid else None])
                order_lines.append([line_id, order_id, product_id, cooperative_id, price, quantity, line_allocations])
            total = sum(line[4] * line[5] for line in order_lines)
            refunded = 0
            if paid and rng.random() < 0.04:
                # A refund: full for a quarter of them, else part of one allocation.
                refund_id += 1
                every = [a for line in order_lines for a in line[6]]
                if rng.random() < 0.25:
                    pieces = [(a, a[8]) for a in every]
                    status = "refunded"
                else:
                    victim = rng.choice(every)
                    pieces = [(victim, rng.randrange(1, victim[8] + 1))]
                    status = "partially_refunded" if pieces[0][1] < total else "refunded"
                for allocation, amount in pieces:
                    allocation[9] += amount
                    parts.append((refund_id, allocation[0], amount))
                refunded = sum(amount for _, amount in pieces)
                refunds.append((refund_id, order_id, refunded, "压测退款", "sandbox", now))
            if paid:
                paid_lines += len(order_lines)
                expected_total += total - refunded
            orders.append((order_id, f"BENCH-{order_id:08d}", buyer[0], buyer[2] if canteen else None,
                           "canteen" if canteen else "online", status,
                           "bank_transfer" if canteen else "stripe", "bank_transfer" if canteen else "sandbox",
                           "cny", total, refunded, "收货人", "13800000000", "吉首市", now,
                           paid_at if paid else None, now if status == "cancelled" else None,
                           paid_at - timedelta(minutes=5)))
            for line in order_lines:
                line_refunded = sum(a[9] for a in line[6])
                lines.append((line[0], line[1], line[2], line[3], "压测产品", "盒", line[4], line[5],
                              line[4] * line[5], line_refunded))
                allocations.extend(tuple(a) for a in line[6])

        Copier(cursor, "orders", ("id", "number", "buyer_id", "budget_unit_id", "channel", "status", "payment_method",
                                  "payment_provider", "currency", "total_fen", "refunded_fen", "shipping_name",
                                  "shipping_phone", "shipping_address", "reserved_until", "paid_at",
                                  "cancelled_at", "created_at")).load(orders)
        Copier(cursor, "order_lines", ("id", "order_id", "product_id", "cooperative_id", "product_name", "unit",
                                       "unit_price_fen", "quantity", "line_total_fen", "refunded_fen")).load(lines)
        Copier(cursor, "order_allocations", ("id", "order_id", "line_id", "batch_id", "village_id", "product_id",
                                             "channel", "quantity", "amount_fen", "refunded_fen",
                                             "paid_at")).load(allocations)
        Copier(cursor, "refunds", ("id", "order_id", "amount_fen", "reason", "provider", "created_at")).load(refunds)
        Copier(cursor, "refund_allocations", ("refund_id", "allocation_id", "amount_fen")).load(parts)
        for table in ("orders", "order_lines", "order_allocations", "refunds", "refund_allocations"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        connection.commit()
        connection.autocommit = True
        cursor.execute("VACUUM ANALYZE")
        connection.autocommit = False
        raw.close()
    return {"orders": len(orders), "paid_lines": paid_lines, "lines": len(lines), "allocations": len(allocations),
            "refunds": len(refunds), "expected_total_fen": expected_total, "official_id": official_id}


def _timings(fn, runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls of ``fn`` after one warm-up call."""
    fn()
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def _summary(label: str, samples: list[float]) -> str:
    """p50/p95/max of samples in ms."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{label:<46} p50 {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms   max {ordered[-1]:7.1f} ms"


def _refund_commits(year: int, runs: int) -> list[float]:
    """Milliseconds to commit one allocation's refund change through the ORM (listeners included).

    Each run refunds one more fen on a paid allocation and commits, then takes it back, so the
    data (and the reconciliation after) is unchanged.
    """
    import sqlalchemy as sa

    from core.extensions import db
    from core.timeutil import shanghai_year_bounds
    from shop.models import OrderAllocation

    start, end = shanghai_year_bounds(year)
    ids = list(db.session.scalars(sa.select(OrderAllocation.id).where(
        OrderAllocation.paid_at >= start, OrderAllocation.paid_at < end,
        OrderAllocation.refunded_fen == 0, OrderAllocation.amount_fen > 1).limit(runs + 1)))
    db.session.rollback()
    samples = []
    for allocation_id in ids:
        allocation = db.session.get(OrderAllocation, allocation_id)
        allocation.refunded_fen += 1
        began = time.perf_counter()
        db.session.commit()
        samples.append((time.perf_counter() - began) * 1000)
        allocation = db.session.get(OrderAllocation, allocation_id)
        allocation.refunded_fen -= 1
        db.session.commit()
    return samples[1:]


def main() -> None:
    """Build, time, check, drop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
    parser.add_argument("--reuse", action="store_true", help="time an existing scratch database (from --keep)")
    args = parser.parse_args()

    if not args.reuse:
        create_scratch_database(args.database_url)
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["SECRET_KEY"] = SECRET
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from core.app import create_app
    from core.auth import issue_token
    from core.extensions import db
    from core.models import User
    from core.villages import load_registry
    from shop.reports import services
    from shop.reports.services import ReportFilters

    app = create_app()
    began = time.perf_counter()
    if args.reuse:
        with app.app_context():
            official_id = db.session.scalar(sa.select(User.id).where(User.role == "official"))
            facts = {"official_id": official_id}
    else:
        with app.app_context():
            upgrade()
            load_registry()
        facts = generate(app, args.lines, args.year)
        print(f"loaded {facts['paid_lines']:,} paid lines ({facts['lines']:,} lines, {facts['allocations']:,} "
              f"allocations, {facts['orders']:,} orders, {facts['refunds']:,} refunds) "
              f"in {time.perf_counter() - began:.1f} s")
        from shop.reports.summary import rebuild_summary

        with app.app_context():
            began = time.perf_counter()
            counts = rebuild_summary()
            print(f"reports rebuild: {counts['contributions']:,} order-village contributions, {counts['cells']:,} "
                  f"village-month rows in {time.perf_counter() - began:.1f} s")
            db.session.execute(sa.text("ANALYZE report_order_village_sales"))
            db.session.execute(sa.text("ANALYZE report_village_month_sales"))
            db.session.commit()
    try:
        with app.app_context():
            official = db.session.get(User, facts["official_id"])
            server = db.session.scalar(sa.text("SELECT version()")).split(",")[0]
            token = issue_token(official)
            year = args.year
            everything = ReportFilters(year=year)
            report = services.report_village_sales(official, everything)
            assert report.total == db.session.scalar(sa.text("SELECT COUNT(*) FROM villages"))
            if "expected_total_fen" in facts:
                assert report.totals["sales_fen"] == facts["expected_total_fen"], "report total differs from input"
            print(f"{server}; {platform.python_implementation()} {platform.python_version()}; "
                  f"{os.cpu_count()} cores; year {year}: {report.totals['sales_fen'] / 100:,.2f} yuan over "
                  f"{report.total} villages, {report.totals['villages_at_target']} at target")
            db.session.rollback()

            client = app.test_client()
            headers = {"Authorization": f"Bearer {token}"}

            def http_report():
                """The full-year report over HTTP, JSON decoded and checked."""
                response = client.get(f"/api/v1/reports/village-sales?year={year}&per_page=2000", headers=headers)
                assert response.status_code == 200 and len(response.get_json()["items"]) == report.total

            def timed(fn):
                """Wrap a service call so each run ends its read transaction."""
                def run():
                    """Call, then roll back."""
                    fn()
                    db.session.rollback()
                return run

            rows = [
                ("village report, service (all villages)", timed(lambda: services.report_village_sales(
                    official, everything))),
                ("village report, HTTP JSON (all villages)", http_report),
                ("county + zone roll-up, service", timed(lambda: services.report_county_sales(official, everything))),
                ("monthly trend, service", timed(lambda: services.report_monthly_sales(official, everything))),
                ("village report, one county (花垣县)", timed(lambda: services.report_village_sales(
                    official, ReportFilters(year=year, county="花垣县")))),
                ("village report, category tea + canteen", timed(lambda: services.report_village_sales(
                    official, ReportFilters(year=year, category="tea", channel="canteen")))),
                ("village report, CSV export over HTTP", lambda: client.get(
                    f"/api/v1/reports/village-sales?year={year}&format=csv", headers=headers)),
            ]
            for label, fn in rows:
                print(_summary(label, _timings(fn, args.runs)))

            print(_summary("summary upkeep: commit one allocation refund", _refund_commits(year, args.runs)))

            began = time.perf_counter()
            result = services.reconcile_village_sales(year)
            db.session.rollback()
            print(f"reconcile {year}: {len(result.differences)} village differences, {len(result.anomalies)} "
                  f"row anomalies, {result.villages} villages checked in {time.perf_counter() - began:.1f} s")
            assert result.ok, "reconciliation found differences on generated data"
            db.session.remove()
            db.engine.dispose()
    finally:
        if not args.keep:
            drop_scratch_database(args.database_url)


if __name__ == "__main__":
    main()
