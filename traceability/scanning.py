"""The public scan: resolve an authentic code, count the scan, gather what the page shows.

Part of the service layer, in its own module because it is the hottest path of the service
and is built differently from the rest (measured in docs/benchmarks.md, "Scan page"):

* **What rarely changes is cached per worker** as a ``ScanEntry`` (product, cooperative,
  village and its target, certificate, compliance-certificate fields, event history, village
  sales) for ``ENTRY_TTL_SECONDS``. Pages and JSON built from an entry are cached on it too.
* **The certificate is re-read at most every ``SCAN_RECHECK_SECONDS``** per entry and worker
  (and at once in the worker that handled the change, through ``products_changed``), so a
  revoked or expired product warns within a second — without a database read on every scan.
* **Scans are counted write-behind** (``ScanBuffer``): exact, atomic increments in the
  database within ``SCAN_FLUSH_INTERVAL_MS``, batched with the scan log rows.

A typical scan of a batch label therefore costs no database round trip at all; a bare
synchronous design (one statement per scan) reached only ~38% of a hello endpoint.
"""
import atexit
import logging
import os
import queue
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from certification import gate
from certification.models import Certification, CertificationStatus, Product, ProductImage
from core.extensions import db
from core.models import Cooperative, Village, VillageSalesTarget
from core.signals import products_changed
from core.timeutil import UTCDateTime, shanghai_today, utcnow
from traceability import codes
from traceability.codes import TraceCode
from traceability.models import (BIZ_STEP_LABELS, COMMITMENT_STATEMENTS, Batch, BatchScanCounter, ScanEvent, ScanFlush,
                                 Serial, TraceEvent)

DEFAULT_SCAN_WARNING_THRESHOLD = 20
# How stale the cached parts of a scan page may be (events, village sales, product text).
# The certificate is checked on every scan, so revocations do not wait for this.
ENTRY_TTL_SECONDS = 30
MAX_ENTRIES = 5000
MAX_KNOWN_COUNTS = 200_000
PG_POOL_SIZE = 8
PG_CONNECT_TIMEOUT_SECONDS = 3
DEFAULT_FLUSH_INTERVAL_MS = 100
DEFAULT_RECHECK_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 5.0
# While the database cannot be read, a cached page checked this recently is still answered
# (an entry lives ENTRY_TTL_SECONDS at most anyway).
STALE_GRACE_SECONDS = 30.0
# Scan-log rows a worker keeps while the database is unreachable (~200 bytes each).
MAX_UNWRITTEN_ROWS = 100_000
# Flush tokens must outlive any retry (a worker cut off for days); each write prunes old ones
# with this chance.
FLUSH_TOKEN_KEEP = timedelta(days=30)
FLUSH_TOKEN_PRUNE_ONE_IN = 1000

log = logging.getLogger(__name__)

_batches, _products, _cooperatives, _villages = (Batch.__table__, Product.__table__, Cooperative.__table__,
                                                 Village.__table__)
_targets, _certificates, _images = VillageSalesTarget.__table__, Certification.__table__, ProductImage.__table__
_serials, _counters, _scan_events, _events = (Serial.__table__, BatchScanCounter.__table__, ScanEvent.__table__,
                                              TraceEvent.__table__)
_flushes = ScanFlush.__table__


# --------------------------------------------------------------------------- configuration and clients

# Settings may come from the app config (tests) or the environment, read once per process.
_ENV = {name: os.environ.get(name) for name in
        ("SCAN_WARNING_THRESHOLD", "SCAN_FLUSH_INTERVAL_MS", "SCAN_RECHECK_SECONDS")}


def _setting(name: str, default):
    value = current_app.config.get(name)
    if value is None:
        value = _ENV[name]
    return default if value is None or value == "" else value


def scan_warning_threshold() -> int:
    """Scans of one item serial above which the page warns of a copied label (``SCAN_WARNING_THRESHOLD``)."""
    return int(_setting("SCAN_WARNING_THRESHOLD", DEFAULT_SCAN_WARNING_THRESHOLD))


_BOT_MARKERS = ("bot", "spider", "crawl", "slurp", "facebookexternalhit", "preview", "headlesschrome")
_CLIENT_MARKERS = (
    ("micromessenger", "wechat"), ("alipayclient", "alipay"), ("dingtalk", "dingtalk"), (" qq/", "qq"),
    ("weibo", "weibo"), ("edg/", "edge"), ("firefox/", "firefox"), ("chrome/", "chrome"), ("safari/", "safari"),
)


@lru_cache(maxsize=2048)
def classify_client(user_agent: str) -> tuple[str, str]:
    """Reduce a user-agent to ``(device_class, client family)``; nothing else is kept."""
    ua = user_agent.lower()
    if any(marker in ua for marker in _BOT_MARKERS):
        return "bot", "bot"
    client = next((name for marker, name in _CLIENT_MARKERS if marker in ua), "other")
    if "ipad" in ua or ("android" in ua and "mobile" not in ua) or "tablet" in ua:
        device = "tablet"
    elif "mobi" in ua or "iphone" in ua or "android" in ua:
        device = "mobile"
    elif "windows" in ua or "macintosh" in ua or "x11" in ua or "cros" in ua:
        device = "desktop"
    else:
        device = "other"
    return device, client


# --------------------------------------------------------------------------- cached entries (slow path)

@dataclass
class ScanEntry:
    """What a batch's scan page shows apart from the scan itself, valid for one day and a TTL."""

    key: str
    batch_id: int
    fingerprint: tuple
    day: date
    expires_at: float
    batch: dict
    product: dict
    cooperative: dict
    village: dict
    certification: dict
    compliance: dict
    sellable: bool
    village_sales: dict
    events: list
    warnings: list  # [(code, message)] that do not depend on the scan count
    # When this worker last compared the certificate with the database (time.monotonic()).
    checked_at: float = 0.0
    # Renderings of this entry made by the view layer (HTML parts, static JSON), built once.
    renderings: dict = field(default_factory=dict)


@dataclass
class ScanResult:
    """One answered scan: the cached entry plus this scan's count and warnings."""

    entry: ScanEntry
    code: TraceCode
    scans: dict
    warnings: list
    warning_codes: list

    @property
    def batch(self) -> dict:
        return {**self.entry.batch, "serial": self.code.serial}

    @property
    def product(self) -> dict:
        return self.entry.product

    @property
    def village(self) -> dict:
        return self.entry.village

    @property
    def cooperative(self) -> dict:
        return self.entry.cooperative

    @property
    def certification(self) -> dict:
        return self.entry.certification

    @property
    def compliance(self) -> dict:
        return self.entry.compliance

    @property
    def village_sales(self) -> dict:
        return self.entry.village_sales

    @property
    def events(self) -> list:
        return self.entry.events

    @property
    def sellable(self) -> bool:
        return self.entry.sellable


def _fingerprint(batch_created_at, status, certificate_no, valid_from, valid_until, revoked_reason) -> tuple:
    """What must be unchanged for a cached entry to stay true: the batch row and its certificate."""
    if batch_created_at is not None and batch_created_at.tzinfo is not None:
        batch_created_at = batch_created_at.astimezone(timezone.utc).replace(tzinfo=None)
    return batch_created_at, status, certificate_no, valid_from, valid_until, revoked_reason


def _entry_select(by_batch_id: bool) -> sa.Select:
    """The slow-path read: batch, product, cooperative, village with this year's target,
    certificate and first photo, in one query."""
    query = (
        sa.select(
            _batches.c.id, _batches.c.lot, _batches.c.produced_on, _batches.c.expires_on, _batches.c.quantity,
            _batches.c.unit, _batches.c.commitment_basis, _batches.c.committer, _batches.c.contact_phone,
            _batches.c.created_at,
            _products.c.id.label("product_id"), _products.c.name.label("product_name"),
            _products.c.unit.label("product_unit"), _products.c.specification, _products.c.gtin,
            _products.c.category,
            _cooperatives.c.id.label("cooperative_id"), _cooperatives.c.name.label("cooperative_name"),
            _cooperatives.c.contact_phone.label("cooperative_phone"),
            _villages.c.id.label("village_id"), _villages.c.name.label("village_name"), _villages.c.township,
            _villages.c.county, _villages.c.zone,
            sa.func.coalesce(
                sa.select(_targets.c.target_fen)
                .where(_targets.c.village_id == _villages.c.id, _targets.c.year == sa.bindparam("year"))
                .scalar_subquery(),
                _villages.c.sales_target_fen,
            ).label("target_fen"),
            _certificates.c.status.label("cert_status"), _certificates.c.certificate_no,
            _certificates.c.valid_from, _certificates.c.valid_until, _certificates.c.revoked_reason,
            sa.select(_images.c.filename).where(_images.c.product_id == _products.c.id)
            .order_by(_images.c.position, _images.c.id).limit(1).scalar_subquery().label("photo"),
        )
        .select_from(_batches)
        .join(_products, _products.c.id == _batches.c.product_id)
        .join(_cooperatives, _cooperatives.c.id == _products.c.cooperative_id)
        .join(_villages, _villages.c.id == _batches.c.village_id)
        .outerjoin(_certificates, _certificates.c.id == _products.c.certificate_id)
    )
    if by_batch_id:
        return query.where(_batches.c.id == sa.bindparam("batch_id"))
    return query.where(_products.c.gtin.in_(sa.bindparam("gtins", expanding=True)),
                       _batches.c.lot == sa.bindparam("lot"))


_ENTRY_QUERIES = {by_id: _entry_select(by_id) for by_id in (True, False)}


def _certificate_status(status: str | None, valid_until: date | None, today: date) -> str | None:
    """The certificate status as people should read it today (``expired`` is derived)."""
    if status == CertificationStatus.CERTIFIED.value and valid_until is not None and valid_until < today:
        return CertificationStatus.EXPIRED.value
    return status


def _static_warnings(status: str | None, sellable: bool, row, today: date) -> list[tuple[str, str]]:
    """Warnings that depend on the certificate and the batch, not on the scan count."""
    warnings = []
    if status == CertificationStatus.REVOKED.value:
        reason = f"（原因：{row.revoked_reason}）" if row.revoked_reason else ""
        warnings.append(("certificate_revoked",
                         f"该产品的湘西香伴认定已被撤销{reason}，不得再以湘西香伴品牌销售，请谨慎购买。"))
    elif status == CertificationStatus.EXPIRED.value:
        warnings.append(("certificate_expired",
                         f"该产品的湘西香伴认定已于 {row.valid_until.isoformat()} 到期，目前不在认定有效期内。"))
    elif not sellable:
        warnings.append(("not_certified", "该产品目前没有有效的湘西香伴认定，不得以湘西香伴品牌销售。"))
    if row.expires_on is not None and row.expires_on < today:
        warnings.append(("batch_expired", f"本批次已超过保质期（{row.expires_on.isoformat()}），请勿食用或购买。"))
    return warnings


def _village_sales_fen(village_id: int, year: int) -> int:
    """This year's sales of the village, from the shop."""
    # Imported here: the shop builds on traceability (batches are its stock), not the reverse.
    from shop.sales import village_sales_fen

    return int(village_sales_fen(village_id, year))


def _public_events(batch_id: int) -> list[dict]:
    """A batch's event history as the scan page shows it."""
    rows = db.session.execute(
        sa.select(_events.c.biz_step, _events.c.event_time, _events.c.location, _events.c.partner,
                  _events.c.quantity)
        .where(_events.c.batch_id == batch_id).order_by(_events.c.event_time, _events.c.id))
    return [{"type": step, "label": BIZ_STEP_LABELS.get(step, step), "at": at, "location": location,
             "partner": partner, "quantity": quantity}
            for step, at, location, partner, quantity in rows]


def _load_entry(key: str, code: TraceCode, today: date) -> ScanEntry | None:
    """Read a batch's scan page data from the database (one query, plus events and sales)."""
    params = {"year": today.year}
    if code.batch_id is not None:
        params["batch_id"] = code.batch_id
    else:
        params.update(gtins=codes.stored_gtin_forms(code.gtin14), lot=code.lot)
    row = db.session.execute(_ENTRY_QUERIES[code.batch_id is not None], params).first()
    if row is None:
        return None
    status = _certificate_status(row.cert_status, row.valid_until, today)
    certificate = SimpleNamespace(status=row.cert_status, valid_from=row.valid_from, valid_until=row.valid_until)
    sellable = gate.is_sellable(SimpleNamespace(certificate=certificate if row.cert_status else None), today)
    unit = row.unit or row.product_unit
    year = today.year
    entry = ScanEntry(
        key=key, batch_id=row.id, day=today, expires_at=time.monotonic() + ENTRY_TTL_SECONDS,
        fingerprint=_fingerprint(row.created_at, row.cert_status, row.certificate_no, row.valid_from,
                                 row.valid_until, row.revoked_reason),
        batch={"id": row.id, "lot": row.lot, "produced_on": row.produced_on, "expires_on": row.expires_on,
               "quantity": row.quantity, "unit": unit, "created_at": row.created_at},
        product={"id": row.product_id, "name": row.product_name, "unit": row.product_unit,
                 "specification": row.specification, "gtin": codes.gtin14_of(row.gtin), "category": row.category,
                 "photo": row.photo},
        cooperative={"id": row.cooperative_id, "name": row.cooperative_name},
        village={"id": row.village_id, "name": row.village_name, "township": row.township, "county": row.county,
                 "zone": row.zone},
        certification={"status": status, "certificate_no": row.certificate_no, "valid_until": row.valid_until},
        compliance={"title": "承诺达标合格证", "product_name": row.product_name, "quantity": row.quantity,
                    "unit": unit, "origin": f"{row.county}{row.township}{row.village_name}",
                    "issued_at": row.created_at, "committer": row.committer or row.cooperative_name,
                    "contact": row.contact_phone or row.cooperative_phone,
                    "commitments": COMMITMENT_STATEMENTS, "basis": row.commitment_basis},
        sellable=sellable,
        village_sales={"year": year, "sales_fen": _village_sales_fen(row.village_id, year),
                       "target_fen": int(row.target_fen)},
        events=_public_events(row.id),
        warnings=_static_warnings(status, sellable, row, today),
    )
    # End the read transaction now: the scan is counted on its own connection (PostgreSQL).
    db.session.rollback()
    return entry


class _EntryCache:
    """Per-worker entries by batch key, with expiry; cleared wholesale when full."""

    def __init__(self):
        self.entries: dict[str, ScanEntry] = {}
        self.lock = threading.Lock()

    def get(self, key: str, today: date) -> ScanEntry | None:
        entry = self.entries.get(key)
        if entry is None or entry.day != today or entry.expires_at < time.monotonic():
            return None
        return entry

    def put(self, entry: ScanEntry) -> ScanEntry:
        with self.lock:
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
            self.entries[entry.key] = entry
        return entry

    def forget_products(self, product_ids: set) -> None:
        with self.lock:
            for key in [key for key, entry in self.entries.items() if entry.product["id"] in product_ids]:
                del self.entries[key]

    def forget(self, batch_id: int | None = None) -> None:
        with self.lock:
            if batch_id is None:
                self.entries.clear()
            else:
                for key in [key for key, entry in self.entries.items() if entry.batch_id == batch_id]:
                    del self.entries[key]


_entries = _EntryCache()


def clear_scan_caches() -> None:
    """Forget cached entries and counts and drop unwritten scans (tests; call flush_scans first
    to keep them)."""
    _entries.forget()
    _buffer().discard()


def forget_batch(batch_id: int) -> None:
    """Forget a batch's cached entry in this worker (after recording an event on it)."""
    _entries.forget(batch_id)


# --------------------------------------------------------------------------- reading the current state

@dataclass(frozen=True)
class _State:
    """What the database says now about a code: its count, first scan, the certificate."""

    count: int
    first_at: datetime | None
    serial_id: int | None
    fingerprint: tuple


_PG_CERT_JOIN = """
JOIN batches b ON b.id = %(batch_id)s
JOIN products p ON p.id = b.product_id
LEFT JOIN certifications cert ON cert.id = p.certificate_id"""
_PG_CERT_COLUMNS = "b.created_at, cert.status, cert.certificate_no, cert.valid_from, cert.valid_until, cert.revoked_reason"
_PG_READ = {
    "batch": f"""
SELECT COALESCE(c.count, 0), c.first_at, NULL::integer, {_PG_CERT_COLUMNS}
FROM (SELECT 1) AS one {_PG_CERT_JOIN}
LEFT JOIN batch_scan_counters c ON c.batch_id = b.id""",
    "item": f"""
SELECT s.scan_count, s.first_scanned_at, s.id, {_PG_CERT_COLUMNS}
FROM batch_serials s {_PG_CERT_JOIN}
WHERE s.serial = %(serial)s AND s.batch_id = b.id""",
}


class _PgConnections:
    """A few autocommit psycopg connections per worker process, reused LIFO, for the reads
    a scan sometimes needs (an item's first scan, the periodic certificate check).

    Not SQLAlchemy's pool: its pre-ping and transaction handling cost three extra round trips.
    Made lazily per process (gunicorn forks), dropped on error, prepared statements.
    """

    def __init__(self, conninfo: str, connect_args: dict):
        self.conninfo, self.idle = conninfo, queue.LifoQueue()
        # The app's own connection settings (SSL, options) apply here too; a database that
        # cannot be reached fails the scan's read in seconds, not at the worker's timeout.
        self.connect_args = {**connect_args, "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS}

    @contextmanager
    def connection(self):
        import psycopg

        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=0, **self.connect_args)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        if self.idle.qsize() < PG_POOL_SIZE:
            self.idle.put(conn)
        else:
            conn.close()


_pg_pools: dict[tuple[int, int], _PgConnections] = {}


def _pg_pool() -> _PgConnections:
    """This process's read connections to the app's database (made on first use)."""
    engine = db.engine
    key = (os.getpid(), id(engine))
    pool = _pg_pools.get(key)
    if pool is None:
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connect_args = current_app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}).get("connect_args", {})
        pool = _pg_pools[key] = _PgConnections(conninfo, dict(connect_args))
    return pool


def _read_state(batch_id: int, code: TraceCode) -> _State | None:
    """The code's stored count and its batch's certificate, in one statement; None if unknown."""
    kind = "item" if code.is_item else "batch"
    if db.engine.dialect.name == "postgresql":
        import psycopg

        params = {"batch_id": batch_id, "serial": code.serial}
        for attempt in (1, 2):
            try:
                with _pg_pool().connection() as conn:
                    row = conn.execute(_PG_READ[kind], params).fetchone()
                break
            except psycopg.OperationalError:
                # A connection the server dropped (restart, idle timeout): retry once on a new one.
                if attempt == 2:
                    raise
        if row is None:
            return None
        first_at = row[1].replace(tzinfo=timezone.utc) if row[1] is not None else None
        return _State(row[0], first_at, row[2], _fingerprint(*row[3:]))
    return _read_state_generic(batch_id, code)


def _read_state_generic(batch_id: int, code: TraceCode) -> _State | None:
    """The same read for SQLite (and any other database), through the session."""
    certificate_columns = (_batches.c.created_at, _certificates.c.status, _certificates.c.certificate_no,
                           _certificates.c.valid_from, _certificates.c.valid_until, _certificates.c.revoked_reason)
    query = (sa.select(*certificate_columns).select_from(_batches)
             .join(_products, _products.c.id == _batches.c.product_id)
             .outerjoin(_certificates, _certificates.c.id == _products.c.certificate_id)
             .where(_batches.c.id == batch_id))
    if code.is_item:
        query = query.add_columns(_serials.c.scan_count, _serials.c.first_scanned_at, _serials.c.id).join(
            _serials, (_serials.c.batch_id == _batches.c.id) & (_serials.c.serial == code.serial))
    else:
        query = query.add_columns(sa.func.coalesce(_counters.c.count, 0), _counters.c.first_at,
                                  sa.null().label("serial_id")).outerjoin(
            _counters, _counters.c.batch_id == _batches.c.id)
    row = db.session.execute(query).first()
    db.session.rollback()
    if row is None:
        return None
    return _State(row[6], row[7], row[8], _fingerprint(*row[:6]))


# --------------------------------------------------------------------------- counting: write-behind

@dataclass
class _Tally:
    """Scans of one code not yet in the database."""

    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def merge(self, other: "_Tally") -> None:
        self.count += other.count
        self.first_at = min(filter(None, (self.first_at, other.first_at)), default=None)
        self.last_at = max(filter(None, (self.last_at, other.last_at)), default=None)


@dataclass
class _Write:
    """One unit of work for the database: tallies and log rows under one idempotency token.

    A write that failed keeps its token, so retrying it after a COMMIT whose answer was lost
    adds nothing twice (``ScanFlush``); it is therefore retried as it was, never merged with
    newer scans.
    """

    tallies: dict[tuple, _Tally]
    rows: list[dict]
    token: str = field(default_factory=lambda: secrets.token_hex(16))


class ScanBuffer:
    """This worker's scans on their way to the database.

    A scan is counted here at once and written by a background thread within
    ``SCAN_FLUSH_INTERVAL_MS``, together with every other scan of that moment: one transaction
    of atomic increments (``count = count + k``, first time kept), one multi-row insert into
    the scan log and one flush token. The stored counts are therefore exact whatever the
    concurrency, across workers and servers, and through database outages: a write that did
    not land is retried as it was, with its token, before anything newer is written. What a
    page shows is the stored count last seen by this worker plus its own scans not yet stored,
    so scans by *other* workers in the last instant may not show yet. Measured on the hot
    path, this is the difference between ~38% and over half of a bare Flask endpoint's
    throughput (see docs/benchmarks.md). A worker stopped normally writes its remaining scans
    at exit; one killed outright loses at most the last interval's scans. During a long outage
    the counts are kept in full; only the oldest scan-log rows beyond ``MAX_UNWRITTEN_ROWS``
    are dropped (and the drop is logged).
    """

    def __init__(self):
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self.known: dict[tuple, tuple[int, datetime | None]] = {}
        self.serial_ids: dict[tuple[int, str], int] = {}
        self.pending: dict[tuple, _Tally] = {}
        self.rows: list[dict] = []
        # Writes taken from ``pending`` that have not landed yet (being written, or failed),
        # oldest first; their counts are still shown from here. Rarely more than one.
        self.unwritten: list[_Write] = []
        self.sending: _Write | None = None  # the write on its way to the database now
        self.engine = None
        self.interval = DEFAULT_FLUSH_INTERVAL_MS / 1000
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.dropped_rows = 0
        self.failures = 0  # failed write attempts in a row

    def knows(self, key: tuple) -> bool:
        return key in self.known

    def _learn(self, key: tuple, count: int, first_at: datetime | None) -> None:
        """Record a stored count (call with the lock held); stored counts only grow, so an
        older read never lowers what is known."""
        old_count, old_first = self.known.get(key, (0, None))
        if count >= old_count:
            self.known[key] = (count, first_at or old_first)

    def remember(self, key: tuple, count: int, first_at: datetime | None) -> None:
        """Take a count read from the database.

        Not while a write of this code is on its way: the read may or may not include it, and
        the write's landing brings the stored count anyway.
        """
        with self.lock:
            if any(key in write.tallies for write in self.unwritten):
                return
            if len(self.known) > MAX_KNOWN_COUNTS:
                # Forget what can be read again, never a code waiting to be written.
                self.known = {key: value for key, value in self.known.items() if key in self.pending}
            self._learn(key, count, first_at)

    def remember_serial(self, batch_id: int, serial: str, serial_id: int) -> None:
        with self.lock:
            if len(self.serial_ids) > MAX_KNOWN_COUNTS:
                self.serial_ids.clear()
            self.serial_ids[(batch_id, serial)] = serial_id

    def _shown(self, key: tuple) -> tuple[int, datetime | None]:
        count, first_at = self.known.get(key, (0, None))
        for tally in [write.tallies.get(key) for write in self.unwritten] + [self.pending.get(key)]:
            if tally is not None:
                count += tally.count
                first_at = first_at or tally.first_at
        return count, first_at

    def shown(self, key: tuple) -> tuple[int, datetime | None]:
        """The count and first scan to show for a code, without counting a scan."""
        with self.lock:
            return self._shown(key)

    def add(self, key: tuple, row: dict, now: datetime, engine, interval: float) -> tuple[int, datetime | None]:
        """Count one scan of ``key`` and queue its log row; return what to show (this scan included)."""
        with self.lock:
            tally = self.pending.get(key)
            if tally is None:
                tally = self.pending[key] = _Tally()
            tally.merge(_Tally(1, now, now))
            self.rows.append(row)
            if len(self.rows) + sum(len(write.rows) for write in self.unwritten) > MAX_UNWRITTEN_ROWS:
                self._drop_oldest_rows()
            self.engine = engine
            shown = self._shown(key)
            if interval != self.interval:
                self.interval = interval
                self.wake.set()  # a writer asleep on the old interval starts the new one now
        if interval <= 0:
            self.flush()
        elif self.thread is None or not self.thread.is_alive():
            self._start()
        return shown

    def _drop_oldest_rows(self) -> None:
        """Keep the scan log's backlog bounded while the database is away (call with the lock
        held; counts stay exact, only log detail is lost)."""
        excess = len(self.rows) + sum(len(write.rows) for write in self.unwritten) - MAX_UNWRITTEN_ROWS
        # Never the write being sent right now: its rows are already on their way.
        for write in self.unwritten:
            if write is self.sending:
                continue
            cut = min(excess, len(write.rows))
            write.rows = write.rows[cut:]
            excess -= cut
            self.dropped_rows += cut
        cut = min(max(excess, 0), len(self.rows))
        self.rows = self.rows[cut:]
        self.dropped_rows += cut
        if self.dropped_rows % 10_000 < 2:
            log.warning("scan log backlog over %d rows (database slow or away): %d rows dropped so far, "
                        "counts kept", MAX_UNWRITTEN_ROWS, self.dropped_rows)

    def _start(self) -> None:
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return
            self.thread = threading.Thread(target=self._run, name="scan-writer", daemon=True)
            self.thread.start()
        atexit.register(self.flush)

    def next_wait(self) -> float:
        """Seconds until the next write: the interval, or longer while the database is away
        (doubling per failed attempt, at most ``MAX_BACKOFF_SECONDS``)."""
        if not self.failures:
            return self.interval
        return min(self.interval * 2 ** min(self.failures, 10), max(MAX_BACKOFF_SECONDS, self.interval))

    def _run(self) -> None:
        while True:
            interval = self.interval
            wait = self.next_wait()
            if self.wake.wait(wait if interval > 0 else None):
                self.wake.clear()
                continue  # the interval changed: sleep the new one first
            # Only on the interval it slept for: a scan queued under a new one waits its turn.
            self.flush(interval)

    def flush(self, only_at_interval: float | None = None) -> int:
        """Write what did not land before (oldest first), then the pending scans; return how
        many log rows were written now. Stops at the first write that fails: it stays queued,
        as it was, and newer scans keep gathering in ``pending`` until it lands.

        :param only_at_interval: the background writer's interval; if it has changed meanwhile
            the writer does nothing this time.
        """
        if self.pid != os.getpid():
            return 0  # a forked child's copy of its parent's buffer: the parent writes those
        written = 0
        with self.flush_lock:
            with self.lock:
                if only_at_interval is not None and only_at_interval != self.interval:
                    return 0
                retries, engine = len(self.unwritten), self.engine
            for attempt in range(retries + 1):
                with self.lock:
                    if attempt == retries and self.pending:
                        self.unwritten.append(_Write(self.pending, self.rows))
                        self.pending, self.rows = {}, []
                    if not self.unwritten:
                        break
                    write = self.sending = self.unwritten[0]
                try:
                    stored = _write_with_retries(engine, write)
                except BaseException as exc:  # SystemExit from a worker timeout included: keep the write
                    with self.lock:
                        self.sending = None
                    if not isinstance(exc, Exception):
                        raise
                    self.failures += 1
                    if self.failures == 1 or self.failures % 100 == 0:
                        log.exception("scan counts not written (%d failed attempts in a row); retrying with "
                                      "backoff, nothing is lost", self.failures)
                    return written
                with self.lock:
                    self.sending = None
                    if self.failures:
                        log.warning("scan counts written again after %d failed attempts", self.failures)
                        self.failures = 0
                    self.unwritten.remove(write)
                    if stored is None:
                        # It had landed already (its COMMIT's answer was lost): the stored count is
                        # at least what was known plus this write; the next re-read refines it.
                        for key, tally in write.tallies.items():
                            count, first_at = self.known.get(key, (0, None))
                            self._learn(key, count + tally.count, first_at or tally.first_at)
                    else:
                        for key, (count, first_at) in stored.items():
                            self._learn(key, count, first_at)
                written += len(write.rows)
        return written

    def discard(self) -> None:
        """Forget everything, unwritten scans included (tests)."""
        with self.lock:
            self.known.clear()
            self.serial_ids.clear()
            self.pending.clear()
            self.rows.clear()
            self.unwritten.clear()


def _write_with_retries(engine, write: _Write, attempts: int = 3) -> dict[tuple, tuple] | None:
    """``_write_scans``, tried again at once if the database aborts it (a deadlock victim, a
    dropped connection). Safe even when the COMMIT itself was lost: the token makes a second
    landing impossible.

    :return: the stored counts, or None if the write had already landed.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _write_scans(engine, write)
        except sa.exc.IntegrityError:
            if _landed(engine, write.token):
                return None
            raise
        except sa.exc.DBAPIError:
            if attempt == attempts:
                raise
            time.sleep(0.01 * attempt)


def _landed(engine, token: str) -> bool:
    """Whether a write with this token committed."""
    with engine.connect() as conn:
        return conn.scalar(sa.select(sa.literal(1)).where(_flushes.c.token == token)) is not None


def _write_scans(engine, write: _Write) -> dict[tuple, tuple]:
    """Add the tallies to the stored counters and append the log rows, in one transaction.

    The flush token goes in first: a write that already landed fails there, before adding
    anything. Rows are locked in one global order (batch counters, then serials, each by id)
    so that workers writing at the same moment queue behind each other instead of deadlocking.
    On PostgreSQL, lock and statement timeouts keep a stuck write from holding the writer (it
    fails and is retried).

    :return: the stored count and first scan time of every code written, after the write.
    """
    stored = {}
    now = utcnow()
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            conn.execute(sa.text("SET LOCAL statement_timeout = '15s'"))
            # A write whose connection died before its COMMIT arrived must not keep the counters
            # locked until TCP notices (hours): the server ends it.
            conn.execute(sa.text("SET LOCAL idle_in_transaction_session_timeout = '30s'"))
        conn.execute(sa.insert(_flushes), {"token": write.token, "written_at": now})
        if secrets.randbelow(FLUSH_TOKEN_PRUNE_ONE_IN) == 0:
            conn.execute(sa.delete(_flushes).where(_flushes.c.written_at < now - FLUSH_TOKEN_KEEP))
        insert = (postgresql.insert if postgres else sqlite.insert)(_counters)
        for (kind, ident), tally in sorted(write.tallies.items(), key=lambda item: (item[0][0] != "batch", item[0][1])):
            first_at = sa.literal(tally.first_at, UTCDateTime())
            last_at = sa.literal(tally.last_at, UTCDateTime())
            if kind == "batch":
                # INSERT ... SELECT from batches: a batch made without a counter row gets one,
                # and a batch that no longer exists gets nothing (never a failed transaction).
                statement = insert.from_select(
                    ["batch_id", "count", "first_at", "last_at"],
                    sa.select(_batches.c.id, sa.literal(tally.count), first_at, last_at).where(_batches.c.id == ident),
                ).on_conflict_do_update(
                    index_elements=[_counters.c.batch_id],
                    set_={"count": _counters.c.count + insert.excluded.count,
                          "first_at": sa.func.coalesce(_counters.c.first_at, insert.excluded.first_at),
                          "last_at": insert.excluded.last_at},
                ).returning(_counters.c.count, _counters.c.first_at)
            else:
                statement = (sa.update(_serials).where(_serials.c.id == ident)
                             .values(scan_count=_serials.c.scan_count + tally.count,
                                     first_scanned_at=sa.func.coalesce(_serials.c.first_scanned_at, first_at),
                                     last_scanned_at=last_at)
                             .returning(_serials.c.scan_count, _serials.c.first_scanned_at))
            row = conn.execute(statement).first()
            if row is not None:
                stored[(kind, ident)] = (row[0], row[1])
        if write.rows:
            conn.execute(sa.insert(_scan_events), write.rows)
    return stored


_buffers: dict[int, ScanBuffer] = {}


def _drop_parent_buffers() -> None:
    """A forked worker starts with no scans of its parent's (the parent writes its own)."""
    _buffers.clear()


os.register_at_fork(after_in_child=_drop_parent_buffers)


def _buffer() -> ScanBuffer:
    """This process's scan buffer (a forked worker gets its own)."""
    buffer = _buffers.get(os.getpid())
    if buffer is None:
        buffer = _buffers[os.getpid()] = ScanBuffer()
    return buffer


def flush_scans() -> int:
    """Write this worker's pending scans now (before reading counts or the log)."""
    return _buffer().flush()


def _flush_interval() -> float:
    """Seconds between writes of pending scans (``SCAN_FLUSH_INTERVAL_MS``); 0 writes each scan
    before answering, which is the default under TESTING so that tests are deterministic (the
    write-behind tests set an interval explicitly)."""
    default = 0 if current_app.testing else DEFAULT_FLUSH_INTERVAL_MS
    return float(_setting("SCAN_FLUSH_INTERVAL_MS", default)) / 1000


def _recheck_seconds() -> float:
    """How long a worker trusts its cached certificate state before reading it again
    (``SCAN_RECHECK_SECONDS``)."""
    return float(_setting("SCAN_RECHECK_SECONDS", DEFAULT_RECHECK_SECONDS))


def _forget_changed_products(sender, product_ids, **kwargs) -> None:
    """A product's certificate, fields or stock changed (this worker): drop its cached pages."""
    ids = set(product_ids)
    _entries.forget_products(ids)


products_changed.connect(_forget_changed_products)


# --------------------------------------------------------------------------- the use case

_UNCHANGED = object()  # the database could not be read; keep what this worker knows
_last_outage_warning = 0.0


def _database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached (not a bug in the query)."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return True
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def resolve_scan(code: TraceCode, *, user_agent: str = "", as_json: bool = False,
                 record: bool = True) -> ScanResult | None:
    """Answer a scan of an authentic (signature-verified) code and count it.

    Usually without touching the database: the page comes from the worker's cached entry
    and the scan goes to the write-behind buffer. The database is read when the entry is
    new, when an item serial is first seen by this worker, and at most every
    ``SCAN_RECHECK_SECONDS`` per entry to catch a revoked, renewed or expired certificate
    (a revocation made through this worker takes effect at once). Bots and HEAD requests
    (``record=False``) are answered but not counted.

    :return: None when the code names nothing we issued (the caller answers 404).
    """
    if code.batch_id is None and code.lot is None:
        return None
    today = shanghai_today()
    key = code.batch_key
    entry = _entries.get(key, today)
    if entry is None:
        entry = _load_entry(key, code, today)
        if entry is None:
            return None
        _entries.put(entry)
    buffer = _buffer()
    if code.is_item:
        serial_id = buffer.serial_ids.get((entry.batch_id, code.serial))
        count_key = ("item", serial_id) if serial_id is not None else None
    else:
        count_key = ("batch", entry.batch_id)
    checked = time.monotonic()
    if count_key is None or not buffer.knows(count_key) or checked - entry.checked_at > _recheck_seconds():
        try:
            state = _read_state(entry.batch_id, code)
        except Exception as exc:
            if not _database_unreachable(exc) or count_key is None or not buffer.knows(count_key) \
                    or checked - entry.checked_at > STALE_GRACE_SECONDS:
                raise
            # The database is away for a moment: answer from what this worker checked within the
            # last minute (the scan is buffered and stored when it returns), rather than an error.
            global _last_outage_warning
            if checked - _last_outage_warning > 10:
                _last_outage_warning = checked
                log.warning("scans answered from checks up to %.0f s old: database unreachable", STALE_GRACE_SECONDS)
            state = _UNCHANGED
        if state is _UNCHANGED:
            pass
        elif state is None:
            # An unknown serial of a real batch, or a batch gone since it was cached.
            return None
        elif state.fingerprint != entry.fingerprint:
            # The certificate changed (revoked, renewed, expired) since the entry was cached.
            batch_id = entry.batch_id
            entry = _load_entry(key, code, today)
            if entry is None:
                _entries.forget(batch_id)
                return None
            _entries.put(entry)
        else:
            entry.checked_at = checked
            if code.is_item:
                buffer.remember_serial(entry.batch_id, code.serial, state.serial_id)
                count_key = ("item", state.serial_id)
            buffer.remember(count_key, state.count, state.first_at)
    device, client = classify_client(user_agent or "")
    if record and device != "bot":
        now = utcnow()
        row = {"at": now, "batch_id": entry.batch_id, "serial_id": count_key[1] if code.is_item else None,
               "device_class": device, "client": client, "as_json": as_json}
        count, first_at = buffer.add(count_key, row, now, db.engine, _flush_interval())
    else:
        count, first_at = buffer.shown(count_key)
    warnings = list(entry.warnings)
    threshold = scan_warning_threshold()
    if code.is_item and count > threshold:
        warnings.append(("serial_scanned_often",
                         f"此单品码已被扫描 {count} 次，超过 {threshold} 次的正常范围，"
                         "标签可能被复制，请核对包装并谨慎购买。"))
    return ScanResult(entry=entry, code=code, scans={"count": count, "first_at": first_at},
                      warnings=[message for _, message in warnings],
                      warning_codes=[warning_code for warning_code, _ in warnings])
