"""Scan counts stay exact when many phones scan the same codes at once (PostgreSQL)."""
from concurrent.futures import ThreadPoolExecutor
from urllib.request import Request, urlopen

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from tests.certification.factories import certified_product
from tests.traceability import factories
from tests.traceability.helpers import make_gtin14, path_of
from traceability import services
from traceability.models import BatchScanCounter, ScanEvent, Serial

pytestmark = pytest.mark.postgres

THREADS, SCANS_PER_THREAD = 8, 25


@pytest.fixture(autouse=True)
def _postgres_only():
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrency is tested on PostgreSQL (SQLite serialises every writer)")


def _scan(url: str) -> int:
    with urlopen(Request(url, headers={"Accept": "application/json"}), timeout=30) as response:
        assert response.status == 200
        return response.status


def test_concurrent_scans_over_http_are_all_counted_exactly(live_server, make):
    coop = make.user(Role.COOPERATIVE)
    batch = factories.batch(certified_product(make, cooperative=coop.cooperative, gtin=make_gtin14()))
    (serial,) = factories.serials(batch, 1)
    targets = [services.batch_trace_url(batch), services.serial_trace_url(batch, serial.serial)]
    urls = [live_server.url + path_of(target) for target in targets] * (THREADS * SCANS_PER_THREAD)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        statuses = list(pool.map(_scan, urls))
    assert statuses == [200] * len(urls)
    db.session.rollback()
    expected = THREADS * SCANS_PER_THREAD
    assert db.session.scalar(sa.select(BatchScanCounter.count).where(BatchScanCounter.batch_id == batch.id)) == expected
    assert db.session.scalar(sa.select(Serial.scan_count).where(Serial.id == serial.id)) == expected
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ScanEvent)) == 2 * expected


def test_concurrent_scans_through_the_service_with_separate_sessions(app, make):
    coop = make.user(Role.COOPERATIVE)
    batch = factories.batch(certified_product(make, cooperative=coop.cooperative))
    (serial,) = factories.serials(batch, 1)
    code = services.codes.parse_short(str(batch.id), serial.serial)

    def scan_many(_):
        counts = []
        with app.app_context():
            for _ in range(SCANS_PER_THREAD):
                counts.append(services.resolve_scan(code, user_agent="Mozilla/5.0 (iPhone)").scans["count"])
            db.session.remove()
        return counts

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        seen = [count for counts in pool.map(scan_many, range(THREADS)) for count in counts]
    # Every scan got its own number: no two concurrent scans read the same count.
    assert sorted(seen) == list(range(1, THREADS * SCANS_PER_THREAD + 1))
