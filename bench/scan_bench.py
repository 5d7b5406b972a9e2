"""Scan page throughput vs a bare Flask "hello" endpoint, side by side, under gunicorn on loopback.

    .venv/bin/python bench/scan_bench.py            # PostgreSQL (its own database, recreated), as in production
    .venv/bin/python bench/scan_bench.py --sqlite   # the development SQLite file instead

What it does, in one run:
1. builds a database with demo-like data (the registry's 1,110 villages, 7 cooperatives,
   certified products with and without GTIN, 200 batches with serials and shipping events,
   and 50,000 earlier scans so the scan log's index is not empty);
2. starts two gunicorn servers with the same settings: the bare hello app and the real app;
3. drives each with ``wrk`` (bounded duration, loopback only), hello first, then the scan
   page, for ``--rounds`` rounds, and prints requests/s, p50 and p99 and the ratio;
4. checks the scan counter moved by exactly the number of answered scan requests.

Needs ``wrk`` (``apt-get install -y wrk``). Numbers go to docs/benchmarks.md by hand.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN")
SECRET = "bench-secret-key-not-for-production"
PUBLIC_BASE_URL = "http://127.0.0.1"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/xiangban_bench"


def hello_app():
    """The bare Flask baseline: one route, no database, no templates."""
    from flask import Flask

    app = Flask("hello")

    @app.get("/")
    def hello():
        return "Hello, World!"

    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prepare_postgres(url: str) -> None:
    """Create the bench database if needed and empty it (it is the bench's own)."""
    import sqlalchemy as sa

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = url.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0] + "/postgres"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def build_data(database_url: str) -> dict:
    """Migrate, load villages and demo-like records; return the URLs to hammer."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["SECRET_KEY"] = SECRET
    os.environ["PUBLIC_BASE_URL"] = PUBLIC_BASE_URL
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from certification.models import Certification, Product
    from core.app import create_app
    from core.demo import DEMO_COOPERATIVES, demo_credit_code
    from core.extensions import db
    from core.identifiers import gtin_check_digit
    from core.models import Cooperative, Village
    from core.timeutil import shanghai_today, utcnow
    from core.villages import load_registry
    from traceability import codes
    from traceability.models import Batch, BatchScanCounter, ScanEvent, Serial, TraceEvent

    app = create_app()
    with app.app_context():
        upgrade()
        load_registry()
        today = shanghai_today()
        products = []
        for index, (name, county, township, village_name, contact) in enumerate(DEMO_COOPERATIVES, start=1):
            village = db.session.scalar(sa.select(Village).filter_by(county=county, township=township,
                                                                     name=village_name))
            cooperative = Cooperative(name=name, credit_code=demo_credit_code(900 + index), village=village,
                                      contact_name=contact, contact_phone=f"0743-88{index:05d}")
            db.session.add(cooperative)
            for number in range(4):
                body = f"6901234{index:02d}{number:03d}"
                # Half the products have a GTIN (Digital Link codes), half use the short path.
                gtin = "0" + body + str(gtin_check_digit(body)) if number % 2 == 0 else None
                product = Product(cooperative=cooperative, name=f"{village_name}特产{number + 1}号", category="tea",
                                  description="", unit="盒", specification="250克", price_fen=9_800, gtin=gtin,
                                  status="certified")
                product.villages = [village]
                db.session.add(product)
                db.session.flush()
                certificate = Certification(product=product, status="certified",
                                            certificate_no=f"XXXB-BENCH-{product.id:05d}",
                                            valid_from=today - timedelta(days=100),
                                            valid_until=today + timedelta(days=900))
                db.session.add(certificate)
                db.session.flush()
                product.certificate = certificate
                products.append(product)
        db.session.flush()
        batches = []
        for number in range(200):
            product = products[number % len(products)]
            batch = Batch(product=product, village=product.villages[0], lot=f"B2026-{number:04d}",
                          produced_on=today - timedelta(days=number % 90), quantity=500, available_quantity=500,
                          unit="盒", committer=product.cooperative.name,
                          contact_phone=product.cooperative.contact_phone)
            db.session.add(batch)
            batches.append(batch)
        db.session.flush()
        now = utcnow()
        for batch in batches:
            db.session.add(BatchScanCounter(batch_id=batch.id, count=0))
            db.session.add(TraceEvent(batch_id=batch.id, biz_step="commissioning", event_time=now,
                                      location=batch.village.name, partner=batch.product.cooperative.name,
                                      quantity=500))
            db.session.add(TraceEvent(batch_id=batch.id, biz_step="shipping", event_time=now,
                                      location="吉首市经开区冷链仓", partner="湘西州机关事务服务中心职工食堂",
                                      quantity=200))
        db.session.execute(sa.insert(Serial), [
            {"batch_id": batch.id, "serial": codes.new_serial(), "created_at": now, "scan_count": 0}
            for batch in batches for _ in range(10)])
        db.session.execute(sa.insert(ScanEvent), [
            {"at": now, "batch_id": batches[i % len(batches)].id, "serial_id": None, "device_class": "mobile",
             "client": "wechat", "as_json": False} for i in range(50_000)])
        db.session.commit()
        target = batches[0]
        serial = db.session.scalar(sa.select(Serial.serial).where(Serial.batch_id == target.id).limit(1))
        with app.test_request_context():
            urls = {
                "batch": codes.trace_url(target.id, target.lot, target.product.gtin),
                "item": codes.trace_url(target.id, target.lot, target.product.gtin, serial),
            }
        urls["batch_id"] = target.id
        db.session.remove()
        db.engine.dispose()
    return urls


def batch_scan_count(database_url: str, batch_id: int) -> int:
    """The batch code's counter, read from the database after a run."""
    import sqlalchemy as sa

    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(sa.text("SELECT count FROM batch_scan_counters WHERE batch_id = :id"),
                                   {"id": batch_id}).scalar()
    engine.dispose()
    return int(value or 0)


class Server:
    """A gunicorn process on a loopback port, stopped on exit."""

    def __init__(self, app_spec: str, args, env: dict):
        self.port = _free_port()
        command = [str(ROOT / ".venv/bin/gunicorn"), "-b", f"127.0.0.1:{self.port}", "-w", str(args.workers),
                   "-k", args.worker_class, "--threads", str(args.threads), "--log-level", "warning",
                   "--chdir", str(ROOT), app_spec]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, path: str, headers: dict | None = None) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urlopen(Request(self.url(path), headers=headers or {}), timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server on {self.port} never answered {path}: "
                           f"{self.process.stderr.read1(4000).decode(errors='replace') if self.process.stderr else ''}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def run_wrk(url: str, args, headers: dict) -> dict:
    """One bounded wrk run; returns rps, p50/p99 in ms, requests, non-2xx and socket errors."""
    command = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": latency("50"), "p99": latency("99"), "requests": requests,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG),
                        help=f"PostgreSQL URL; its database is dropped and recreated (default {DEFAULT_PG})")
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead of PostgreSQL")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (both servers)")
    parser.add_argument("--worker-class", default="sync")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="ask the scan page for JSON instead of HTML")
    parser.add_argument("--item", action="store_true", help="scan an item serial instead of the batch code")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")

    tmp = tempfile.mkdtemp(prefix="scan_bench_")
    database_url = f"sqlite:///{tmp}/bench.sqlite3" if args.sqlite else args.database_url
    if database_url.startswith("postgresql"):
        _prepare_postgres(database_url)
    print(f"building data in {database_url.split('@')[-1]} ...", flush=True)
    urls = build_data(database_url)
    scan_url = urls["item" if args.item else "batch"]
    scan_path = scan_url[len(PUBLIC_BASE_URL):]
    headers = {"User-Agent": PHONE_UA}
    if args.json:
        headers["Accept"] = "application/json"

    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": SECRET, "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
           "SCAN_WARNING_THRESHOLD": "1000000000"}
    hello = Server("bench.scan_bench:hello_app()", args, env)
    scan = Server("wsgi:app", args, env)
    try:
        hello.wait_ready("/")
        scan.wait_ready(scan_path, headers)
        time.sleep(1)  # the readiness probe's scan is written behind; let it land before the baseline
        before = batch_scan_count(database_url, urls["batch_id"])
        # Warm both (imports, template compilation, connection pools) before measuring.
        run_wrk(hello.url("/"), argparse.Namespace(**{**vars(args), "duration": 2}), headers)
        warm = run_wrk(scan.url(scan_path), argparse.Namespace(**{**vars(args), "duration": 2}), headers)
        results = {"hello": [], "scan": []}
        for _ in range(args.rounds):
            results["hello"].append(run_wrk(hello.url("/"), args, headers))
            results["scan"].append(run_wrk(scan.url(scan_path), args, headers))
    finally:
        hello.stop()
        scan.stop()
    # Read after the workers stopped: they write their last buffered scans on the way out.
    after = batch_scan_count(database_url, urls["batch_id"])
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\ngunicorn -w {args.workers} -k {args.worker_class} --threads {args.threads}; "
          f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s; {os.cpu_count()} CPUs; "
          f"database {'PostgreSQL' if database_url.startswith('postgresql') else 'SQLite file'}; "
          f"scan of {'an item serial' if args.item else 'the batch code'} as {'JSON' if args.json else 'HTML'}")
    print(f"scan URL: {scan_url}")
    print(f"{'':8}{'round':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}")
    for name in ("hello", "scan"):
        for number, result in enumerate(results[name], start=1):
            print(f"{name:8}{number:>6}{result['rps']:>10.0f}{result['p50']:>9.2f}{result['p99']:>9.2f}"
                  f"{result['non_2xx']:>9}{result['socket_errors']:>8}")
    best = {name: max(r["rps"] for r in rows) for name, rows in results.items()}
    ratios = [s["rps"] / h["rps"] for h, s in zip(results["hello"], results["scan"])]
    print(f"ratio scan/hello per round: {', '.join(f'{r:.0%}' for r in ratios)}; "
          f"best vs best: {best['scan'] / best['hello']:.0%} (target ≥ 50%)")
    if not args.item:
        answered = sum(r["requests"] - r["non_2xx"] for r in results["scan"] + [warm])
        counted = after - before
        # wrk does not count requests still in flight when a run stops (warm-up included); the
        # server did serve them, so the counter may exceed wrk's total by up to that many.
        slack = args.connections * (args.rounds + 1)
        verdict = "consistent" if answered <= counted <= answered + slack else "MISMATCH"
        print(f"scan counter: +{counted} for {answered} requests wrk saw answered "
              f"(+ up to {slack} cut off at the ends of runs): {verdict}")


if __name__ == "__main__":
    main()
