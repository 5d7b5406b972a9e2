"""Order placement throughput under contention, PostgreSQL.

    .venv/bin/python bench/order_bench.py
    .venv/bin/python bench/order_bench.py --processes 4 --threads 4 --seconds 20 --products 3 \
        --stock 3000 --database-url postgresql://postgres@127.0.0.1:5432/xiangban_bench_orders [--keep]

What it does, in one run (bounded by ``--seconds`` plus setup, about a minute):
1. drops and creates its own scratch database (the name must contain "bench"), migrates it to
   head and loads the registry's villages;
2. creates one cooperative, ``--products`` hot certified products, each with three batches of
   different ages holding ``--stock`` units in all, and 64 consumer accounts;
3. starts ``--processes`` worker processes × ``--threads`` threads (each thread its own app
   context and database session, as gunicorn workers would), released together; each buyer
   places orders through ``shop.services.place_order`` (the API's code path: validation,
   per-batch allocation under ``SELECT … FOR UPDATE``, audit, and the sandbox checkout session)
   for 1–2 of the hot products, 1–3 units each, until the time is up or the stock is gone;
   (``--no-receivers`` disconnects other packages' products_changed receivers, to time the shop alone);
4. prints successful orders/s, attempts/s, 409s, p50/p95/p99 latency of successful
   placements and the worker processes' CPU per order, then verifies: no batch below zero,
   every batch's available + reserved units equals its quantity, units sold equal what the
   workers were told they got, and the audit chain is intact;
5. drops the scratch database (unless ``--keep``).

Numbers go to docs/benchmarks.md ("Order placement") by hand.
"""
import argparse
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/xiangban_bench_orders"
SECRET = "bench-secret-key-not-for-production"
SHIPPING = {"name": "压测买家", "phone": "13800000000", "address": "湖南省吉首市人民北路 1 号"}


def _driver_url(url: str) -> str:
    """SQLAlchemy's URL for psycopg 3."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _admin(url: str, statement: str) -> None:
    """Run one statement against the server's maintenance database."""
    import sqlalchemy as sa

    engine = sa.create_engine(_driver_url(url).rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(statement))
    engine.dispose()


def _make_app(url: str):
    """The real application against the bench database, offline (sandbox) payments."""
    from core.app import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": _driver_url(url), "SECRET_KEY": SECRET,
                       "SEARCH_INDEX_DIR": os.path.join(tempfile.gettempdir(), "xiangban_order_bench_index"),
                       "STRIPE_SECRET_KEY": "", "STRIPE_WEBHOOK_SECRET": "whsec_bench",
                       # Offline checkout: online payments fail closed without it (no Stripe here).
                       "SANDBOX_PAYMENTS": True,
                       "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
                       "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 8, "max_overflow": 8, "pool_pre_ping": True}})


def setup(url: str, products: int, stock: int) -> dict:
    """Create the scratch database and the hot products; return their ids and the buyers."""
    name = urlsplit(url).path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"refusing to recreate {name!r}: the bench database name must contain 'bench'")
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(url, f'CREATE DATABASE "{name}"')
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from certification.models import Certification, Product
    from core.demo import demo_credit_code
    from core.extensions import db
    from core.models import Cooperative, User, Village
    from core.timeutil import shanghai_today
    from core.villages import load_registry
    from traceability.models import Batch

    app = _make_app(url)
    with app.app_context():
        upgrade()
        load_registry()
        villages = list(db.session.scalars(sa.select(Village).where(Village.county == "古丈县").limit(3)))
        cooperative = Cooperative(name="压测合作社", credit_code=demo_credit_code(900001), village=villages[0],
                                  contact_name="压测", contact_phone="0743-0000000")
        db.session.add(cooperative)
        today = shanghai_today()
        product_ids = []
        for n in range(products):
            product = Product(cooperative=cooperative, name=f"热销产品{n}", category="tea", unit="盒",
                              price_fen=9_900 + n * 100, status="certified")
            product.villages = villages
            db.session.add(product)
            db.session.flush()
            certificate = Certification(product=product, status="certified", certificate_no=f"BENCH-{n:04d}",
                                        valid_from=today - timedelta(days=10), valid_until=today + timedelta(days=999))
            db.session.add(certificate)
            db.session.flush()
            product.certificate = certificate
            shares = (stock // 3, stock // 3, stock - 2 * (stock // 3))
            for index, (share, village) in enumerate(zip(shares, villages)):
                db.session.add(Batch(product=product, village=village, lot=f"B{n}-{index}", quantity=share,
                                     available_quantity=share, produced_on=today - timedelta(days=30 - index * 10)))
            product_ids.append(product.id)
        users = []
        for n in range(64):
            user = User(email=f"buyer{n}@bench.test", display_name=f"买家{n}", role="consumer")
            user.set_password("bench-password")
            db.session.add(user)
            users.append(user)
        db.session.commit()
        return {"products": product_ids, "users": [u.id for u in users]}


def worker(url: str, scenario: dict, threads: int, seconds: float, start_at: float, seed: int, queue,
           receivers: bool = True) -> None:
    """One process: ``threads`` buyers placing orders until time is up or stock runs out."""
    from core.errors import Conflict
    from core.extensions import db
    from core.models import User
    from core.signals import products_changed
    from shop import services

    app = _make_app(url)
    if not receivers:
        # Measures the shop alone: other packages' products_changed receivers (search reindexing)
        # run synchronously after every stock change and are not the shop's cost.
        products_changed.receivers.clear()
    results = []
    lock = threading.Lock()

    def buyer(index: int) -> None:
        """One buyer: place orders in a loop and record latencies."""
        rng = random.Random(seed * 1000 + index)
        latencies, refused, units = [], 0, {}
        with app.app_context():
            user = db.session.get(User, rng.choice(scenario["users"]))
            sold_out_streak = 0
            while time.time() < start_at:
                time.sleep(0.001)
            while time.time() < start_at + seconds and sold_out_streak < 20:
                chosen = rng.sample(scenario["products"], k=rng.choice((1, 1, 2)))
                lines = [{"product_id": pid, "quantity": rng.randint(1, 3)} for pid in chosen]
                began = time.perf_counter()
                try:
                    services.place_order(user, {"lines": lines, "payment_method": "stripe", "shipping": SHIPPING})
                except Conflict:
                    refused += 1
                    sold_out_streak += 1
                    continue
                latencies.append((time.perf_counter() - began) * 1000)
                sold_out_streak = 0
                for line in lines:
                    units[line["product_id"]] = units.get(line["product_id"], 0) + line["quantity"]
            db.session.remove()
        with lock:
            results.append((latencies, refused, units))

    pool = [threading.Thread(target=buyer, args=(i,)) for i in range(threads)]
    cpu_before = time.process_time()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    # This process's CPU over the run: the buyers and the audit sealer thread alike.
    queue.put((results, time.process_time() - cpu_before))


def verify(url: str, scenario: dict, units_claimed: dict) -> list[str]:
    """Check stock invariants after the run; return problems (empty when all hold)."""
    import sqlalchemy as sa

    from core.audit import seal_pending, verify_chain
    from core.extensions import db
    from shop.models import OrderAllocation
    from traceability.models import Batch

    problems = []
    app = _make_app(url)
    with app.app_context():
        reserved = dict(db.session.execute(
            sa.select(OrderAllocation.batch_id, sa.func.sum(OrderAllocation.quantity))
            .where(OrderAllocation.released_at.is_(None)).group_by(OrderAllocation.batch_id)).all())
        sold = {}
        for b in db.session.scalars(sa.select(Batch)):
            if b.available_quantity < 0:
                problems.append(f"batch {b.id} below zero: {b.available_quantity}")
            if b.available_quantity + reserved.get(b.id, 0) != b.quantity:
                problems.append(f"batch {b.id}: available {b.available_quantity} + reserved {reserved.get(b.id, 0)}"
                                f" != quantity {b.quantity}")
            sold[b.product_id] = sold.get(b.product_id, 0) + reserved.get(b.id, 0)
        for product_id in scenario["products"]:
            if sold.get(product_id, 0) != units_claimed.get(product_id, 0):
                problems.append(f"product {product_id}: {sold.get(product_id, 0)} units allocated, workers got "
                                f"{units_claimed.get(product_id, 0)}")
        # Worker processes end without atexit: what their sealers had not linked yet is sealed here.
        left = seal_pending()
        print(f"audit events still unsealed when the buyers stopped: {left}")
        report = verify_chain()
        if not report.ok:
            problems.append(f"audit chain broken at {report.broken_at}")
    return problems, sold


def main() -> None:
    """Set up, run the buyers, print the numbers, verify, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--products", type=int, default=3)
    parser.add_argument("--stock", type=int, default=3000, help="units per product over its three batches")
    parser.add_argument("--no-receivers", action="store_true",
                        help="disconnect products_changed receivers (search reindexing) to time the shop alone")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    scenario = setup(args.database_url, args.products, args.stock)
    queue = multiprocessing.Queue()
    start_at = time.time() + 3  # let every process import and connect before the gun
    processes = [multiprocessing.Process(target=worker, args=(args.database_url, scenario, args.threads,
                                                               args.seconds, start_at, n, queue,
                                                               not args.no_receivers))
                 for n in range(args.processes)]
    for process in processes:
        process.start()
    collected = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    ended = time.time()
    latencies, refused, units = [], 0, {}
    worker_cpu = sum(cpu for _, cpu in collected)
    for results, _ in collected:
        for lat, ref, got in results:
            latencies += lat
            refused += ref
            for pid, qty in got.items():
                units[pid] = units.get(pid, 0) + qty
    elapsed = min(args.seconds, ended - start_at)
    problems, sold = verify(args.database_url, scenario, units)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0] * 99
    total_stock = args.stock * args.products
    print(f"buyers: {args.processes} processes × {args.threads} threads on {args.products} hot products "
          f"({args.stock} units each, 3 batches); products_changed receivers "
          + ("disconnected" if args.no_receivers else "connected (search reindexes a product when an order sells it out)"))
    print(f"orders placed: {len(latencies)} in {elapsed:.1f} s = {len(latencies) / elapsed:.1f} orders/s; "
          f"attempts {len(latencies) + refused} ({(len(latencies) + refused) / elapsed:.1f}/s), 409 refused {refused}")
    print(f"latency of a placement (ms): p50 {quantiles[49]:.1f}  p95 {quantiles[94]:.1f}  "
          f"p99 {quantiles[98]:.1f}  max {max(latencies or [0]):.1f}")
    print(f"CPU of the worker processes: {worker_cpu:.1f} s = {worker_cpu * 1000 / max(len(latencies), 1):.2f} ms "
          f"per order placed (PostgreSQL's own CPU not included)")
    print(f"units sold {sum(sold.values())} of {total_stock}; oversell check: "
          + ("OK (no batch below zero, available + reserved = quantity, sold = what buyers got, audit chain intact)"
             if not problems else "FAILED"))
    for problem in problems:
        print("  " + problem)
    if not args.keep:
        _admin(args.database_url, f'DROP DATABASE IF EXISTS "{urlsplit(args.database_url).path.lstrip("/")}" WITH (FORCE)')
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
