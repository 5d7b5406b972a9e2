"""Scan counts stay exact when many phones scan the same codes at once (PostgreSQL): threads of
one worker, and several worker processes writing their buffered scans concurrently."""
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from urllib.request import Request, urlopen

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from tests.certification.factories import certified_product
from tests.traceability import factories
from tests.traceability.helpers import make_gtin14, path_of
from traceability import codes, services
from traceability.models import BatchScanCounter, ScanEvent, Serial

pytestmark = pytest.mark.postgres

THREADS, SCANS_PER_THREAD = 8, 25
PROCESSES, SCANS_PER_PROCESS = 4, 150


@pytest.fixture(autouse=True)
def _postgres_only():
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrency is tested on PostgreSQL (SQLite serialises every writer)")


def _scan(url: str) -> int:
    with urlopen(Request(url, headers={"Accept": "application/json"}), timeout=30) as response:
        return response.status


def _stored(batch, serial) -> tuple[int, int, int]:
    db.session.rollback()
    return (db.session.scalar(sa.select(BatchScanCounter.count).where(BatchScanCounter.batch_id == batch.id)),
            db.session.scalar(sa.select(Serial.scan_count).where(Serial.id == serial.id)),
            db.session.scalar(sa.select(sa.func.count()).select_from(ScanEvent)))


def test_concurrent_scans_over_http_are_all_counted_exactly(live_server, make):
    coop = make.user(Role.COOPERATIVE)
    batch = factories.batch(certified_product(make, cooperative=coop.cooperative, gtin=make_gtin14()))
    (serial,) = factories.serials(batch, 1)
    targets = [services.batch_trace_url(batch), services.serial_trace_url(batch, serial.serial)]
    urls = [live_server.url + path_of(target) for target in targets] * (THREADS * SCANS_PER_THREAD)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        statuses = list(pool.map(_scan, urls))
    assert statuses == [200] * len(urls)
    services.flush_scans()
    expected = THREADS * SCANS_PER_THREAD
    assert _stored(batch, serial) == (expected, expected, 2 * expected)


def test_concurrent_scans_in_one_worker_each_see_their_own_number(app, make):
    coop = make.user(Role.COOPERATIVE)
    batch = factories.batch(certified_product(make, cooperative=coop.cooperative))
    (serial,) = factories.serials(batch, 1)
    code = codes.parse_short(str(batch.id), serial.serial)

    def scan_many(_):
        counts = []
        with app.app_context():
            for _ in range(SCANS_PER_THREAD):
                counts.append(services.resolve_scan(code, user_agent="Mozilla/5.0 (iPhone)").scans["count"])
            db.session.remove()
        return counts

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        seen = [count for counts in pool.map(scan_many, range(THREADS)) for count in counts]
    assert sorted(seen) == list(range(1, THREADS * SCANS_PER_THREAD + 1))
    services.flush_scans()
    assert _stored(batch, serial)[1] == THREADS * SCANS_PER_THREAD


def _worker_process(database_uri: str, batch_id: int, serial: str, scans: int, start) -> None:
    """A separate worker: its own app, buffer and connections, writing while the others do."""
    from core.app import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret", "SQLALCHEMY_DATABASE_URI": database_uri,
                      "PUBLIC_BASE_URL": "https://trace.example.cn", "SCAN_FLUSH_INTERVAL_MS": 5})
    with app.app_context():
        start.wait(30)
        for number in range(scans):
            services.resolve_scan(codes.parse_short(str(batch_id), None), user_agent="iPhone")
            services.resolve_scan(codes.parse_short(str(batch_id), serial), user_agent="iPhone")
        services.flush_scans()


def test_workers_writing_buffered_scans_at_the_same_time_lose_none(app, make):
    coop = make.user(Role.COOPERATIVE)
    batch = factories.batch(certified_product(make, cooperative=coop.cooperative))
    (serial,) = factories.serials(batch, 1)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    workers = [context.Process(target=_worker_process, args=(uri, batch.id, serial.serial, SCANS_PER_PROCESS, start))
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    expected = PROCESSES * SCANS_PER_PROCESS
    assert _stored(batch, serial) == (expected, expected, 2 * expected)
