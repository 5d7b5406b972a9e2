"""Certification hot paths on a realistic catalogue, PostgreSQL (or SQLite with a sqlite:/// URL).

    .venv/bin/python bench/certification_bench.py
    .venv/bin/python bench/certification_bench.py --products 20000 --certified 10000 --runs 30 \
        --database-url postgresql://postgres@127.0.0.1:5432/xiangban_bench_certification [--keep]

What it does, in one run (about a minute on 2 cores):
1. drops and creates its own scratch database (the name must contain "bench"), migrates it to
   head and loads the registry's 1,110 villages;
2. bulk-inserts 300 cooperatives and ``--products`` products over the 14 categories, each from
   one or two villages of its cooperative's county, ``--certified`` of them with a valid
   certificate, the rest drafts, expired, revoked or awaiting review (the brand gate must skip
   them), then ANALYZE;
3. times, ``--runs`` times each after one warm-up, through the Flask app with its test client
   (routing, auth, JSON/HTML encoding included): the public product list (first page, a deep
   page, county filter, category + county, village filter), one product, the catalogue page,
   the full catalogue CSV; prints p50/p95/max in milliseconds;
4. times the workflow through the services: submit → county approval → prefecture approval
   for ``--workflow`` products (each transition takes the audit chain's lock), per transition;
5. times photo validation + re-encoding of a 12-megapixel JPEG and of a 4000×3000 PNG;
6. verifies the audit chain and drops the scratch database (unless ``--keep``).

Numbers go to docs/benchmarks.md ("Certification") by hand.
"""
import argparse
import io
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/xiangban_bench_certification"


def _driver_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _recreate_database(url: str) -> None:
    """Drop and create the scratch database (refuses names without "bench")."""
    import sqlalchemy as sa

    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if "bench" not in path.name:
            raise SystemExit("refusing: the scratch database file name must contain 'bench'")
        path.unlink(missing_ok=True)
        return
    base, name = url.rsplit("/", 1)
    if "bench" not in name:
        raise SystemExit("refusing: the scratch database name must contain 'bench'")
    engine = sa.create_engine(_driver_url(base + "/postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def _drop_database(url: str) -> None:
    import sqlalchemy as sa

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).unlink(missing_ok=True)
        return
    base, name = url.rsplit("/", 1)
    engine = sa.create_engine(_driver_url(base + "/postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _timed(call, runs: int) -> tuple[float, float, float]:
    """Return p50, p95 and max of ``call`` in milliseconds after one warm-up."""
    call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(int(len(samples) * 0.95) - 1, 0)], samples[-1]


def _load(products: int, certified: int) -> None:
    """Bulk-insert cooperatives, products, villages links and certificates."""
    import sqlalchemy as sa

    from certification.models import CATEGORY_LABELS, Certification, Product, product_villages
    from core.demo import demo_credit_code
    from core.extensions import db
    from core.models import Cooperative, Village
    from core.timeutil import shanghai_today, utcnow

    rng = random.Random(7)
    villages = db.session.execute(sa.select(Village.id, Village.county)).all()
    by_county: dict[str, list[int]] = {}
    for village_id, county in villages:
        by_county.setdefault(county, []).append(village_id)
    now = utcnow()
    cooperative_rows = []
    for n in range(300):
        village_id, _ = villages[rng.randrange(len(villages))]
        cooperative_rows.append({"id": n + 1, "name": f"压测合作社{n}", "credit_code": demo_credit_code(500000 + n),
                                 "village_id": village_id, "contact_name": "联系人", "contact_phone": "0743-1",
                                 "created_at": now})
    db.session.execute(sa.insert(Cooperative), cooperative_rows)
    county_of = {v: c for v, c in villages}
    categories = list(CATEGORY_LABELS)
    today = shanghai_today()
    product_rows, link_rows, certificate_rows = [], [], []
    for n in range(products):
        cooperative = cooperative_rows[n % 300]
        county = county_of[cooperative["village_id"]]
        product_id = n + 1
        kind = "certified" if n < certified else ("draft", "expired", "revoked", "submitted")[n % 4]
        product_rows.append({"id": product_id, "cooperative_id": cooperative["id"],
                             "name": f"{CATEGORY_LABELS[categories[n % 14]]}产品{n}", "category": categories[n % 14],
                             "description": "压测产品", "unit": "盒", "specification": "500克", "price_fen": 1000 + n,
                             "status": "certified" if kind in ("certified", "expired") else kind,
                             "certificate_id": None, "created_at": now, "updated_at": now})
        origin = {cooperative["village_id"], rng.choice(by_county[county])}
        link_rows.extend({"product_id": product_id, "village_id": v} for v in origin)
        if kind in ("certified", "expired", "revoked"):
            valid_until = today + timedelta(days=900) if kind != "expired" else today - timedelta(days=3)
            certificate_rows.append({"id": product_id, "product_id": product_id,
                                     "status": "revoked" if kind == "revoked" else "certified",
                                     "certificate_no": f"XXXB-2026-{product_id:06d}",
                                     "valid_from": valid_until - timedelta(days=1000), "valid_until": valid_until,
                                     "submitted_at": now, "decided_at": now})
        elif kind == "submitted":
            certificate_rows.append({"id": product_id, "product_id": product_id, "status": "submitted",
                                     "certificate_no": None, "valid_from": None, "valid_until": None,
                                     "submitted_at": now, "decided_at": None})
    db.session.execute(sa.insert(Product), product_rows)
    db.session.execute(sa.insert(product_villages), link_rows)
    db.session.execute(sa.insert(Certification), certificate_rows)
    db.session.execute(sa.update(Product).where(Product.id.in_(
        sa.select(Certification.product_id).where(Certification.certificate_no.isnot(None))))
        .values(certificate_id=Product.id).execution_options(synchronize_session=False))
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        for table in ("products", "product_villages", "certifications", "cooperatives"):
            db.session.execute(sa.text(f"ANALYZE {table}"))
        db.session.execute(sa.text("SELECT setval('products_id_seq', (SELECT max(id) FROM products))"))
        db.session.execute(sa.text("SELECT setval('certifications_id_seq', (SELECT max(id) FROM certifications))"))
        db.session.execute(sa.text("SELECT setval('cooperatives_id_seq', (SELECT max(id) FROM cooperatives))"))
        db.session.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--certified", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workflow", type=int, default=100)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    _recreate_database(args.database_url)
    upload_dir = tempfile.mkdtemp(prefix="xiangban-bench-uploads-")
    from flask_migrate import upgrade

    from core.app import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": _driver_url(args.database_url),
                      "UPLOAD_DIR": upload_dir, "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
                      "SEARCH_INDEX_DIR": os.path.join(upload_dir, "search"),
                      # The environment's default (SQLite) engine options do not fit PostgreSQL.
                      "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True} if "postgresql" in args.database_url
                      else {"connect_args": {"timeout": 30}}})
    try:
        with app.app_context():
            import sqlalchemy as sa

            from certification import services, uploads
            from core.audit import verify_chain
            from core.extensions import db
            from core.models import Cooperative, Role, User, Village
            from core.villages import load_registry

            upgrade()
            load_registry()
            start = time.perf_counter()
            _load(args.products, args.certified)
            print(f"loaded {args.products} products ({args.certified} sellable) in {time.perf_counter() - start:.1f} s "
                  f"on {db.engine.dialect.name}, Python {platform.python_version()}, {os.cpu_count()} cores")
            client = app.test_client()
            village_id = db.session.scalar(sa.select(Village.id).where(Village.county == "花垣县").limit(1))
            product_id = args.certified // 2
            pages = args.certified // 50
            checks = [
                ("GET /api/v1/products (page 1 of 50)", "/api/v1/products"),
                (f"GET /api/v1/products?page={pages} (last page)", f"/api/v1/products?page={pages}"),
                ("GET /api/v1/products?county=花垣县", "/api/v1/products?county=花垣县"),
                ("GET /api/v1/products?category=tea&county=古丈县", "/api/v1/products?category=tea&county=古丈县"),
                ("GET /api/v1/products?village_id=…", f"/api/v1/products?village_id={village_id}"),
                ("GET /api/v1/products?per_page=500", "/api/v1/products?per_page=500"),
                ("GET /api/v1/products/{id}", f"/api/v1/products/{product_id}"),
                ("GET /catalogue (24 per page)", "/catalogue"),
                ("GET /catalogue?county=花垣县&category=tea", "/catalogue?county=花垣县&category=tea"),
            ]
            print(f"{'request':48} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for label, url in checks:
                assert client.get(url).status_code == 200, url
                p50, p95, worst = _timed(lambda u=url: client.get(u), args.runs)
                print(f"{label:48} {p50:8.1f} {p95:8.1f} {worst:8.1f}")
            csv_runs = max(args.runs // 6, 3)
            p50, p95, worst = _timed(lambda: client.get("/catalogue.csv"), csv_runs)
            size = len(client.get("/catalogue.csv").data)
            print(f"{'GET /catalogue.csv (all sellable, ' + str(size // 1024) + ' KiB)':48} {p50:8.1f} {p95:8.1f} {worst:8.1f}")

            # Workflow transitions through the services, each appending to the audit chain.
            member = User(email="bench-coop@test.cn", role=Role.COOPERATIVE.value, cooperative_id=1, display_name="c")
            home = db.session.get(Cooperative, 1).village
            county, village = home.county, home.id
            reviewer = User(email="bench-county@test.cn", role=Role.COUNTY_REVIEWER.value, county=county, display_name="r")
            chief = User(email="bench-pref@test.cn", role=Role.PREFECTURE_REVIEWER.value, display_name="p")
            for user in (member, reviewer, chief):
                user.set_password("password123")
                db.session.add(user)
            db.session.commit()
            evidence = {"evidence": [{"type": "green_food", "number": "LB-15-1711196965A", "issuer": "中心",
                                      "valid_until": "2030-01-01"}]}
            timings = {"create": [], "submit": [], "county approve": [], "prefecture approve": []}
            for n in range(args.workflow):
                t0 = time.perf_counter()
                item = services.create_product(member, {"name": f"流程压测{n}", "category": "tea", "unit": "盒",
                                                        "price_fen": 100, "village_ids": [village]})
                t1 = time.perf_counter()
                application = services.submit_application(member, item.id, evidence)
                t2 = time.perf_counter()
                services.decide_application(reviewer, application.id, {"decision": "approve", "comment": "同意"})
                t3 = time.perf_counter()
                services.decide_application(chief, application.id, {"decision": "approve", "comment": "准予"})
                t4 = time.perf_counter()
                for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    timings[key].append(value * 1000)
            for key, samples in timings.items():
                samples.sort()
                print(f"{'service: ' + key:48} {statistics.median(samples):8.1f} "
                      f"{samples[int(len(samples) * 0.95) - 1]:8.1f} {samples[-1]:8.1f}")

            from PIL import Image

            rng = random.Random(3)
            noise = bytes(rng.getrandbits(8) for _ in range(4000 * 3000 * 3 // 16))
            photo = Image.frombytes("RGB", (1000, 750), noise[:1000 * 750 * 3]).resize((4000, 3000))
            jpeg, png = io.BytesIO(), io.BytesIO()
            photo.save(jpeg, format="JPEG", quality=90)
            photo.save(png, format="PNG")
            for label, payload in (("12 MP JPEG", jpeg.getvalue()), ("12 MP PNG", png.getvalue())):
                p50, p95, worst = _timed(lambda p=payload: uploads.process_image(p), 5)
                print(f"{'photo validate + re-encode, ' + label + f' ({len(payload) // 1024} KiB)':48} "
                      f"{p50:8.1f} {p95:8.1f} {worst:8.1f}")
            report = verify_chain()
            print(f"audit chain: {'intact' if report.ok else 'BROKEN'} ({report.checked} events)")
            db.session.remove()
            db.engine.dispose()
    finally:
        if not args.keep:
            _drop_database(args.database_url)


if __name__ == "__main__":
    main()
