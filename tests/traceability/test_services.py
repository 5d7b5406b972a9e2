"""Service-level rules: sellable stock, client classes, scan totals."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from tests.certification.factories import certified_product
from tests.traceability import factories
from traceability import codes, services


def test_available_quantities_sum_unexpired_batches_and_zero_for_none(make):
    item = certified_product(make)
    empty = certified_product(make, name="另一产品")
    today = shanghai_today()
    factories.batch(item, quantity=50, available_quantity=20)
    factories.batch(item, quantity=30, expires_on=today)
    factories.batch(item, quantity=70, produced_on=today - timedelta(days=90), expires_on=today - timedelta(days=1))
    assert services.available_quantities([item.id, empty.id]) == {item.id: 50, empty.id: 0}
    assert services.available_quantities([]) == {}


@pytest.mark.parametrize("user_agent,expected", [
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 MicroMessenger/8.0.47", ("mobile", "wechat")),
    ("Mozilla/5.0 (Linux; Android 14; 23127PN0CC) Chrome/120.0 Mobile Safari/537.36 AlipayClient/10.5",
     ("mobile", "alipay")),
    ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", ("tablet", "chrome")),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36 Edg/120.0", ("desktop", "edge")),
    ("Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", ("bot", "bot")),
    ("", ("other", "other")),
])
def test_client_is_reduced_to_a_device_class_and_family(user_agent, expected):
    assert services.classify_client(user_agent) == expected


def test_scan_totals_add_batch_code_and_item_scans(make):
    batch = factories.batch(certified_product(make))
    serials = factories.serials(batch, 2)
    for _ in range(2):
        services.resolve_scan(codes.parse_short(str(batch.id), None), user_agent="iPhone")
    services.resolve_scan(codes.parse_short(str(batch.id), serials[0].serial), user_agent="iPhone")
    totals = services.scan_counts([batch.id])[batch.id]
    assert (totals["batch_code"], totals["items"]) == (2, 1)
    assert totals["first_at"] <= totals["last_at"]


def test_resolving_an_unknown_code_records_nothing(make):
    batch = factories.batch(certified_product(make))
    assert services.resolve_scan(codes.parse_short(str(batch.id + 1), None)) is None
    assert services.resolve_scan(codes.parse_short(str(batch.id), "0000000000AA")) is None
    assert services.scan_counts([batch.id])[batch.id]["batch_code"] == 0


def test_list_batches_is_scoped_to_the_cooperative(make):
    coop = make.user(Role.COOPERATIVE)
    mine = factories.batch(certified_product(make, cooperative=coop.cooperative))
    factories.batch(certified_product(make, name="别人的产品"))
    rows, total = services.list_batches(coop, services.Page(1, 50))
    assert total == 1 and rows == [mine]
    rows, total = services.list_batches(make.user(Role.ADMIN), services.Page(1, 50))
    assert total == 2


def _stored_count(batch) -> int:
    from traceability.models import BatchScanCounter

    db.session.rollback()
    return db.session.scalar(sa.select(BatchScanCounter.count).where(BatchScanCounter.batch_id == batch.id)) or 0


@pytest.fixture
def flush_interval(app):
    """Set SCAN_FLUSH_INTERVAL_MS for one test (tests otherwise write each scan at once)."""
    def use(milliseconds):
        app.config["SCAN_FLUSH_INTERVAL_MS"] = milliseconds
    yield use
    app.config.pop("SCAN_FLUSH_INTERVAL_MS", None)


def test_scans_are_shown_at_once_and_stored_exactly_when_written(make, flush_interval):
    flush_interval(3_600_000)  # the background writer stays asleep for this whole test
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    shown = [services.resolve_scan(code, user_agent="iPhone").scans["count"] for _ in range(5)]
    assert shown == [1, 2, 3, 4, 5]
    assert _stored_count(batch) == 0  # still in this worker's buffer
    assert services.flush_scans() == 5
    assert _stored_count(batch) == 5
    assert services.resolve_scan(code, user_agent="iPhone").scans["count"] == 6
    assert services.flush_scans() == 1 and _stored_count(batch) == 6


def test_interval_zero_stores_each_scan_before_answering(make, flush_interval):
    flush_interval(0)
    batch = factories.batch(certified_product(make))
    services.resolve_scan(codes.parse_short(str(batch.id), None), user_agent="iPhone")
    assert _stored_count(batch) == 1


def test_the_background_writer_stores_scans_without_being_asked(make, flush_interval):
    import time

    flush_interval(20)
    batch = factories.batch(certified_product(make))
    services.resolve_scan(codes.parse_short(str(batch.id), None), user_agent="iPhone")
    deadline = time.monotonic() + 10  # bounds a hang; the writer runs every 20 ms here
    while _stored_count(batch) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _stored_count(batch) == 1
