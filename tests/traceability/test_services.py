"""Service-level rules: sellable stock, client classes, scan totals."""
import os
from datetime import timedelta

import pytest
import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today, utcnow
from tests.certification.factories import certified_product
from tests.traceability import factories
from traceability import codes, scanning, services
from traceability.models import ScanEvent, ScanFlush


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


# --------------------------------------------------------------------------- write-behind under failure

def _database_down():
    return sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))


def _lose_the_first_commit_answer(monkeypatch) -> None:
    """The next scan write commits on the server, then the connection drops before the worker
    hears back; later writes behave normally."""
    real_write = scanning._write_scans
    calls = []

    def commits_then_connection_drops(*args, **kwargs):
        result = real_write(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise _database_down()
        return result

    monkeypatch.setattr(scanning, "_write_scans", commits_then_connection_drops)


def _stored_log_rows() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(ScanEvent))


def test_scans_answered_during_a_long_outage_are_all_stored_when_the_database_returns(make, flush_interval,
                                                                                       monkeypatch):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    real_write = scanning._write_scans

    def unreachable(*args, **kwargs):
        raise _database_down()

    monkeypatch.setattr(scanning, "_write_scans", unreachable)
    monkeypatch.setattr(scanning.time, "sleep", lambda seconds: None)
    shown = []
    for _ in range(10):  # ten writer cycles while the database is away
        shown.append(services.resolve_scan(code, user_agent="iPhone").scans["count"])
        assert services.flush_scans() == 0
    assert shown == list(range(1, 11)), "the worker keeps counting what it answered"
    monkeypatch.setattr(scanning, "_write_scans", real_write)
    assert services.flush_scans() == 10
    assert _stored_count(batch) == 10 and _stored_log_rows() == 10


def test_a_write_whose_commit_answer_was_lost_is_not_counted_twice(make, flush_interval, monkeypatch):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    _lose_the_first_commit_answer(monkeypatch)
    for _ in range(3):
        services.resolve_scan(code, user_agent="iPhone")
    services.flush_scans()
    assert _stored_count(batch) == 3 and _stored_log_rows() == 3
    assert services.resolve_scan(code, user_agent="iPhone").scans["count"] == 4
    services.flush_scans()
    assert _stored_count(batch) == 4


def test_a_count_read_before_this_workers_write_landed_never_lowers_the_count_shown(make, flush_interval):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    for _ in range(3):
        services.resolve_scan(code, user_agent="iPhone")
    stale = scanning._read_state(batch.id, code)  # a request reads 0 ...
    services.flush_scans()                          # ... the writer stores 3 ...
    scanning._buffer().remember(("batch", batch.id), stale.count, stale.first_at)  # ... the request goes on
    assert scanning._buffer().shown(("batch", batch.id))[0] == 3


def test_an_outage_longer_than_the_log_backlog_drops_oldest_log_rows_but_keeps_counts(make, flush_interval,
                                                                                        monkeypatch):
    flush_interval(3_600_000)
    monkeypatch.setattr(scanning, "MAX_UNWRITTEN_ROWS", 4)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    real_write = scanning._write_scans
    monkeypatch.setattr(scanning, "_write_scans", lambda *args, **kwargs: (_ for _ in ()).throw(_database_down()))
    monkeypatch.setattr(scanning.time, "sleep", lambda seconds: None)
    for _ in range(7):
        services.resolve_scan(code, user_agent="iPhone")
        services.flush_scans()
    monkeypatch.setattr(scanning, "_write_scans", real_write)
    services.flush_scans()
    assert _stored_count(batch) == 7
    assert _stored_log_rows() == 4


def test_a_forked_childs_copy_of_the_buffer_never_writes_the_parents_scans(make, flush_interval):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    services.resolve_scan(codes.parse_short(str(batch.id), None), user_agent="iPhone")
    buffer = scanning._buffer()
    buffer.pid = -1  # as if this process were a child forked after the scan
    try:
        assert buffer.flush() == 0
        assert _stored_count(batch) == 0
    finally:
        buffer.pid = os.getpid()
    assert services.flush_scans() == 1 and _stored_count(batch) == 1


def test_old_flush_tokens_are_pruned(make, flush_interval, monkeypatch):
    flush_interval(3_600_000)
    db.session.execute(sa.insert(ScanFlush), [{"token": "a" * 32, "written_at": utcnow() - timedelta(days=31)}])
    db.session.commit()
    monkeypatch.setattr(scanning, "FLUSH_TOKEN_PRUNE_ONE_IN", 1)
    batch = factories.batch(certified_product(make))
    services.resolve_scan(codes.parse_short(str(batch.id), None), user_agent="iPhone")
    services.flush_scans()
    db.session.rollback()
    assert db.session.scalars(sa.select(ScanFlush.token)).all() != ["a" * 32]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ScanFlush)) == 1


def test_a_count_read_just_after_this_workers_write_landed_is_not_added_twice(make, flush_interval, app,
                                                                               monkeypatch):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    for _ in range(3):
        services.resolve_scan(code, user_agent="iPhone")
    real_write = scanning._write_scans
    shown = []

    def landed_then_a_request_rechecks(engine, write):
        stored = real_write(engine, write)  # committed: 3 stored, the write not yet taken off the queue
        app.config["SCAN_RECHECK_SECONDS"] = 0
        shown.append(services.resolve_scan(code, user_agent="iPhone").scans["count"])
        app.config.pop("SCAN_RECHECK_SECONDS")
        return stored

    monkeypatch.setattr(scanning, "_write_scans", landed_then_a_request_rechecks)
    services.flush_scans()
    monkeypatch.setattr(scanning, "_write_scans", real_write)
    shown.append(services.resolve_scan(code, user_agent="iPhone").scans["count"])
    assert shown == [4, 5]
    services.flush_scans()
    assert _stored_count(batch) == 5


def test_after_a_lost_commit_answer_the_count_shown_never_starts_again_from_zero(make, flush_interval,
                                                                                  monkeypatch):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    for _ in range(50):
        services.resolve_scan(code, user_agent="iPhone")
    services.flush_scans()
    services.resolve_scan(code, user_agent="iPhone")  # the 51st, pending
    _lose_the_first_commit_answer(monkeypatch)
    services.flush_scans()
    assert services.resolve_scan(code, user_agent="iPhone").scans["count"] == 52
    services.flush_scans()
    assert _stored_count(batch) == 52


def test_scans_arriving_while_a_write_is_sent_never_cut_that_write(make, flush_interval, monkeypatch):
    flush_interval(3_600_000)
    monkeypatch.setattr(scanning, "MAX_UNWRITTEN_ROWS", 5)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    for _ in range(5):
        services.resolve_scan(code, user_agent="iPhone")
    real_write = scanning._write_scans

    def others_scan_meanwhile(engine, write):
        for _ in range(3):
            services.resolve_scan(code, user_agent="iPhone")
        return real_write(engine, write)

    monkeypatch.setattr(scanning, "_write_scans", others_scan_meanwhile)
    assert services.flush_scans() == 5, "the write being sent keeps all its rows"
    assert _stored_log_rows() == 5
    monkeypatch.setattr(scanning, "_write_scans", real_write)
    services.flush_scans()
    assert _stored_count(batch) == 8, "counts are never dropped"


def test_the_writer_backs_off_and_logs_once_while_the_database_is_away(make, flush_interval, monkeypatch, caplog):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    monkeypatch.setattr(scanning, "_write_scans", lambda *args, **kwargs: (_ for _ in ()).throw(_database_down()))
    monkeypatch.setattr(scanning.time, "sleep", lambda seconds: None)
    buffer = scanning._buffer()
    services.resolve_scan(code, user_agent="iPhone")
    buffer.interval = 0.1  # the production default, as the background writer would use it
    waits = []
    for _ in range(8):
        services.flush_scans()
        waits.append(buffer.next_wait())
    assert waits == sorted(waits) and waits[0] == 0.2 and waits[-1] == scanning.MAX_BACKOFF_SECONDS
    tracebacks = [r for r in caplog.records if r.name == "traceability.scanning" and r.exc_info]
    assert len(tracebacks) == 1, [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    monkeypatch.undo()
    services.flush_scans()
    assert buffer.failures == 0 and buffer.next_wait() == buffer.interval
    assert _stored_count(batch) == 1


def test_a_scan_is_answered_from_a_recent_check_while_the_database_cannot_be_read(make, flush_interval, app,
                                                                                   monkeypatch):
    flush_interval(3_600_000)
    batch = factories.batch(certified_product(make))
    code = codes.parse_short(str(batch.id), None)
    assert services.resolve_scan(code, user_agent="iPhone").scans["count"] == 1
    app.config["SCAN_RECHECK_SECONDS"] = 0  # every scan wants a fresh check ...
    try:
        monkeypatch.setattr(scanning, "_read_state",
                            lambda *args: (_ for _ in ()).throw(sa.exc.OperationalError("SELECT", {}, Exception("down"))))
        assert services.resolve_scan(code, user_agent="iPhone").scans["count"] == 2  # ... but gets the last one
        _, entry = next(iter(scanning._entries.entries.items()))
        entry.checked_at -= scanning.STALE_GRACE_SECONDS + 1
        with pytest.raises(sa.exc.OperationalError):
            services.resolve_scan(code, user_agent="iPhone")  # too old to vouch for the certificate
        monkeypatch.setattr(scanning, "_read_state",
                            lambda *args: (_ for _ in ()).throw(ValueError("a bug, not an outage")))
        with pytest.raises(ValueError):
            services.resolve_scan(code, user_agent="iPhone")
    finally:
        app.config.pop("SCAN_RECHECK_SECONDS", None)
    monkeypatch.undo()
    services.flush_scans()
    assert _stored_count(batch) == 2
