"""The public scan: resolve an authentic code, count the scan, gather what the page shows.

Part of the service layer, in its own module because it is the hottest path of the service
and is built differently from the rest:

* **What rarely changes is cached per worker** as a ``ScanEntry`` (product, cooperative,
  village and its target, certificate, compliance-certificate fields, event history, village
  sales) for ``ENTRY_TTL_SECONDS``. Pages and JSON built from an entry are cached on it too.
* **Every scan still reaches the database**, in one statement that counts it atomically
  (``count = count + 1``, the first time kept), appends it to the scan log and reads back the
  certificate's current state. If that state differs from the entry's (a revocation, a
  renewal), the entry is rebuilt before answering: a revoked product warns on the next scan.
* On PostgreSQL that statement runs on a small pool of autocommit connections of our own with
  prepared statements: one round trip per scan, no BEGIN/COMMIT or pool ping. On SQLite (the
  development database) it is several ordinary statements in the session, then a commit.
"""
import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import sqlite

from certification import gate
from certification.models import Certification, CertificationStatus, Product, ProductImage
from core.extensions import db
from core.models import Cooperative, Village, VillageSalesTarget
from core.timeutil import shanghai_today, utcnow
from traceability import codes
from traceability.codes import TraceCode
from traceability.models import (BIZ_STEP_LABELS, COMMITMENT_STATEMENTS, Batch, BatchScanCounter, ScanEvent, Serial,
                                 TraceEvent)

DEFAULT_SCAN_WARNING_THRESHOLD = 20
# How stale the cached parts of a scan page may be (events, village sales, product text).
# The certificate is checked on every scan, so revocations do not wait for this.
ENTRY_TTL_SECONDS = 30
MAX_ENTRIES = 5000
PG_POOL_SIZE = 8

_batches, _products, _cooperatives, _villages = (Batch.__table__, Product.__table__, Cooperative.__table__,
                                                 Village.__table__)
_targets, _certificates, _images = VillageSalesTarget.__table__, Certification.__table__, ProductImage.__table__
_serials, _counters, _scan_events, _events = (Serial.__table__, BatchScanCounter.__table__, ScanEvent.__table__,
                                              TraceEvent.__table__)


# --------------------------------------------------------------------------- configuration and clients

def scan_warning_threshold() -> int:
    """Scans of one item serial above which the page warns of a copied label (``SCAN_WARNING_THRESHOLD``)."""
    value = current_app.config.get("SCAN_WARNING_THRESHOLD") or os.environ.get("SCAN_WARNING_THRESHOLD")
    return int(value) if value else DEFAULT_SCAN_WARNING_THRESHOLD


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

    def forget(self, batch_id: int | None = None) -> None:
        with self.lock:
            if batch_id is None:
                self.entries.clear()
            else:
                for key in [key for key, entry in self.entries.items() if entry.batch_id == batch_id]:
                    del self.entries[key]


_entries = _EntryCache()


def clear_scan_caches() -> None:
    """Forget every cached scan entry (tests, bulk loads)."""
    _entries.forget()


def forget_batch(batch_id: int) -> None:
    """Forget a batch's cached entry in this worker (after recording an event on it)."""
    _entries.forget(batch_id)


# --------------------------------------------------------------------------- counting (every scan)

@dataclass(frozen=True)
class _Counted:
    count: int
    first_at: datetime | None
    fingerprint: tuple


# PostgreSQL: count, log and read back the certificate in one autocommit statement.
_PG_CERT_JOIN = """
JOIN batches b ON b.id = %(batch_id)s
JOIN products p ON p.id = b.product_id
LEFT JOIN certifications cert ON cert.id = p.certificate_id"""
_PG_CERT_COLUMNS = "b.created_at, cert.status, cert.certificate_no, cert.valid_from, cert.valid_until, cert.revoked_reason"
_PG_SQL = {
    # The counter row normally exists (made with the batch): a plain UPDATE, no speculative insert.
    ("batch", True): f"""
WITH counted AS (
    UPDATE batch_scan_counters SET count = count + 1, last_at = %(now)s, first_at = COALESCE(first_at, %(now)s)
    WHERE batch_id = %(batch_id)s
    RETURNING count, first_at),
logged AS (
    INSERT INTO scan_events (at, batch_id, serial_id, device_class, client, as_json)
    SELECT %(now)s, %(batch_id)s, NULL, %(device)s, %(client)s, %(as_json)s FROM counted)
SELECT counted.count, counted.first_at, {_PG_CERT_COLUMNS}
FROM counted {_PG_CERT_JOIN}""",
    # First scan of a batch made without a counter row: create it (if the batch still exists).
    ("batch-first", True): f"""
WITH counted AS (
    INSERT INTO batch_scan_counters AS c (batch_id, count, first_at, last_at)
    SELECT id, 1, %(now)s, %(now)s FROM batches WHERE id = %(batch_id)s
    ON CONFLICT (batch_id) DO UPDATE
    SET count = c.count + 1, last_at = EXCLUDED.last_at, first_at = COALESCE(c.first_at, EXCLUDED.first_at)
    RETURNING c.count, c.first_at),
logged AS (
    INSERT INTO scan_events (at, batch_id, serial_id, device_class, client, as_json)
    SELECT %(now)s, %(batch_id)s, NULL, %(device)s, %(client)s, %(as_json)s FROM counted)
SELECT counted.count, counted.first_at, {_PG_CERT_COLUMNS}
FROM counted {_PG_CERT_JOIN}""",
    ("item", True): f"""
WITH counted AS (
    UPDATE batch_serials SET scan_count = scan_count + 1,
        first_scanned_at = COALESCE(first_scanned_at, %(now)s), last_scanned_at = %(now)s
    WHERE serial = %(serial)s AND batch_id = %(batch_id)s
    RETURNING id, scan_count, first_scanned_at),
logged AS (
    INSERT INTO scan_events (at, batch_id, serial_id, device_class, client, as_json)
    SELECT %(now)s, %(batch_id)s, counted.id, %(device)s, %(client)s, %(as_json)s FROM counted)
SELECT counted.scan_count, counted.first_scanned_at, {_PG_CERT_COLUMNS}
FROM counted {_PG_CERT_JOIN}""",
    ("batch", False): f"""
SELECT COALESCE(c.count, 0), c.first_at, {_PG_CERT_COLUMNS}
FROM (SELECT 1) AS one {_PG_CERT_JOIN}
LEFT JOIN batch_scan_counters c ON c.batch_id = b.id""",
    ("item", False): f"""
SELECT s.scan_count, s.first_scanned_at, {_PG_CERT_COLUMNS}
FROM batch_serials s {_PG_CERT_JOIN}
WHERE s.serial = %(serial)s AND s.batch_id = b.id""",
}


class _PgConnections:
    """A few autocommit psycopg connections per worker process, reused LIFO.

    Not SQLAlchemy's pool: its pre-ping and transaction handling cost three extra round trips
    per scan. Connections are made lazily, per process (gunicorn forks), and dropped on error.

    They run with ``synchronous_commit = off``: a scan's commit returns before the WAL reaches
    disk (measured here: 0.6 ms instead of 6 ms per scan), so a consumer never waits on an fsync
    and a hot counter row stays locked for microseconds. Increments are still atomic and exact,
    and the database stays consistent; what a crash of the database server could lose is the
    last fraction of a second of scans, counter and log together. Orders, certificates and
    everything else keep the default, fully durable commits.
    """

    def __init__(self, conninfo: str):
        self.conninfo, self.pid, self.idle = conninfo, os.getpid(), queue.LifoQueue()

    @contextmanager
    def connection(self):
        import psycopg

        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=0,
                                   options="-c synchronous_commit=off")
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
    """This process's scan connections to the app's database (made on first use)."""
    engine = db.engine
    key = (os.getpid(), id(engine))
    pool = _pg_pools.get(key)
    if pool is None:
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        pool = _pg_pools[key] = _PgConnections(conninfo)
    return pool


def _count_postgresql(entry: ScanEntry, code: TraceCode, params: dict, record: bool) -> _Counted | None:
    """Count (or read) on PostgreSQL: one statement on one of our autocommit connections."""
    import psycopg

    kind = "item" if code.is_item else "batch"
    pool = _pg_pool()
    for attempt in (1, 2):
        try:
            with pool.connection() as conn:
                row = conn.execute(_PG_SQL[(kind, record)], params).fetchone()
                if row is None and kind == "batch" and record:
                    row = conn.execute(_PG_SQL[("batch-first", True)], params).fetchone()
            break
        except psycopg.OperationalError:
            # A connection the server dropped (restart, idle timeout): retry once on a new one.
            if attempt == 2:
                raise
    if row is None:
        return None
    first_at = row[1].replace(tzinfo=timezone.utc) if row[1] is not None else None
    return _Counted(row[0], first_at, _fingerprint(*row[2:]))


def _count_generic(entry: ScanEntry, code: TraceCode, params: dict, record: bool) -> _Counted | None:
    """SQLite (and any other database): the same effects in several statements and a commit."""
    session = db.session
    state = session.execute(
        sa.select(_batches.c.created_at, _certificates.c.status, _certificates.c.certificate_no,
                  _certificates.c.valid_from, _certificates.c.valid_until, _certificates.c.revoked_reason)
        .select_from(_batches).join(_products, _products.c.id == _batches.c.product_id)
        .outerjoin(_certificates, _certificates.c.id == _products.c.certificate_id)
        .where(_batches.c.id == entry.batch_id)).first()
    if state is None:
        return None
    now, serial_id = params["now"], None
    if code.is_item:
        match = (_serials.c.serial == code.serial) & (_serials.c.batch_id == entry.batch_id)
        if record:
            counted = session.execute(
                sa.update(_serials).where(match)
                .values(scan_count=_serials.c.scan_count + 1,
                        first_scanned_at=sa.func.coalesce(_serials.c.first_scanned_at, now), last_scanned_at=now)
                .returning(_serials.c.id, _serials.c.scan_count, _serials.c.first_scanned_at)).first()
        else:
            counted = session.execute(sa.select(_serials.c.id, _serials.c.scan_count, _serials.c.first_scanned_at)
                                      .where(match)).first()
        if counted is None:
            session.rollback()
            return None
        serial_id, count, first_at = counted
    elif record:
        insert = sqlite.insert(_counters)
        count, first_at = session.execute(
            insert.values(batch_id=entry.batch_id, count=1, first_at=now, last_at=now).on_conflict_do_update(
                index_elements=[_counters.c.batch_id],
                set_={"count": _counters.c.count + 1, "last_at": insert.excluded.last_at,
                      "first_at": sa.func.coalesce(_counters.c.first_at, insert.excluded.first_at)},
            ).returning(_counters.c.count, _counters.c.first_at)).one()
    else:
        counter = session.execute(sa.select(_counters.c.count, _counters.c.first_at)
                                  .where(_counters.c.batch_id == entry.batch_id)).first()
        count, first_at = tuple(counter) if counter else (0, None)
    if record:
        session.execute(sa.insert(_scan_events).values(
            at=now, batch_id=entry.batch_id, serial_id=serial_id, device_class=params["device"],
            client=params["client"], as_json=params["as_json"]))
        session.commit()
    else:
        session.rollback()
    return _Counted(count, first_at, _fingerprint(*state))


def _count(entry: ScanEntry, code: TraceCode, device: str, client: str, as_json: bool,
           record: bool) -> _Counted | None:
    """Count one scan (or, if not ``record``, read the count) and read the certificate state."""
    params = {"batch_id": entry.batch_id, "serial": code.serial, "device": device, "client": client,
              "as_json": as_json, "now": utcnow().replace(tzinfo=None)}
    if db.engine.dialect.name == "postgresql":
        return _count_postgresql(entry, code, params, record)
    params["now"] = utcnow()
    return _count_generic(entry, code, params, record)


# --------------------------------------------------------------------------- the use case

def resolve_scan(code: TraceCode, *, user_agent: str = "", as_json: bool = False,
                 record: bool = True) -> ScanResult | None:
    """Answer a scan of an authentic (signature-verified) code and count it.

    Bots and HEAD requests (``record=False``) are answered but not counted.

    :return: None when the code names nothing we issued (the caller answers 404).
    """
    if code.batch_id is None and code.lot is None:
        return None
    today = shanghai_today()
    key = code.batch_key()
    entry = _entries.get(key, today)
    if entry is None:
        entry = _load_entry(key, code, today)
        if entry is None:
            return None
        _entries.put(entry)
    device, client = classify_client(user_agent or "")
    counted = _count(entry, code, device, client, as_json, record and device != "bot")
    if counted is None:
        # An unknown serial of a real batch, or a batch gone since it was cached.
        return None
    if counted.fingerprint != entry.fingerprint:
        # The certificate changed (revoked, renewed, expired) since the entry was cached.
        entry = _load_entry(key, code, today)
        if entry is None:
            _entries.forget()
            return None
        _entries.put(entry)
    warnings = list(entry.warnings)
    threshold = scan_warning_threshold()
    if code.is_item and counted.count > threshold:
        warnings.append(("serial_scanned_often",
                         f"此单品码已被扫描 {counted.count} 次，超过 {threshold} 次的正常范围，"
                         "标签可能被复制，请核对包装并谨慎购买。"))
    return ScanResult(entry=entry, code=code, scans={"count": counted.count, "first_at": counted.first_at},
                      warnings=[message for _, message in warnings],
                      warning_codes=[warning_code for warning_code, _ in warnings])
