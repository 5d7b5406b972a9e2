"""Traceability use cases: batches, serials, trace events, scans. The only place that commits.

Other packages read stock through ``available_quantities``.
"""
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from certification import gate
from certification.models import Product
from core.audit import record_event
from core.auth import ensure_cooperative_member
from core.db import unique_or_conflict
from core.errors import Conflict, NotFound, ValidationFailed
from core.extensions import db
from core.http import Page
from core.models import Role, User, Village
from core.signals import notify_products_changed
from core.timeutil import shanghai_today, utcnow
from traceability import codes
from traceability.models import Batch, BatchScanCounter, ScanEvent, Serial, TraceEvent
from traceability.schemas import BatchCreateSchema, SerialRequestSchema, TraceEventCreateSchema
# The public scan (the hot path) lives in its own module; these names are its API.
from traceability.scanning import (ScanResult, classify_client, clear_scan_caches, flush_scans,  # noqa: F401
                                   forget_batch, resolve_scan, scan_warning_threshold)

# Clock skew tolerated on an event time sent by a cooperative's device.
EVENT_CLOCK_SKEW = timedelta(minutes=10)


# --------------------------------------------------------------------------- stock

def available_quantities(product_ids) -> dict[int, int]:
    """Return sellable units per product: available units of its batches not past their expiry."""
    ids = list(product_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(Batch.product_id, sa.func.coalesce(sa.func.sum(Batch.available_quantity), 0))
        .where(Batch.product_id.in_(ids),
               sa.or_(Batch.expires_on.is_(None), Batch.expires_on >= shanghai_today()))
        .group_by(Batch.product_id)
    )
    totals = {product_id: 0 for product_id in ids}
    totals.update({product_id: int(total) for product_id, total in rows})
    return totals


# --------------------------------------------------------------------------- batches

def _product_for_member(actor: User, product_id: int) -> Product:
    """Return the product if ``actor`` may manage it.

    :raise NotFound: no such product.
    :raise Forbidden: not a member of its cooperative (admins may act for any).
    """
    product = db.session.get(Product, product_id)
    if product is None:
        raise NotFound("产品不存在")
    ensure_cooperative_member(actor, product.cooperative_id)
    return product


def create_batch(actor: User, product_id: int, data: dict) -> Batch:
    """Create a batch of a certified product: stock, a commissioning event and an audit entry.

    :raise NotFound: no such product.
    :raise Forbidden: the actor is not of the product's cooperative.
    :raise ValidationFailed: bad input, or a village that is not one of the product's (422).
    :raise Conflict: the product may not be sold now (``product_not_sellable``) or the lot
        is already used for this product (``duplicate_lot``).
    """
    product = _product_for_member(actor, product_id)
    fields = BatchCreateSchema().load(data)
    if not gate.is_sellable(product):
        raise Conflict("该产品未获认定或认定已失效，不能登记批次", code="product_not_sellable")
    if fields["village_id"] not in {village.id for village in product.villages}:
        raise ValidationFailed(fields={"village_id": ["产地须为该产品登记的产地村之一"]})
    if _lot_taken(product.id, fields["lot"]):
        raise Conflict(f"批号 {fields['lot']} 已被该产品使用", code="duplicate_lot")
    # A concurrent request may take the same lot between the check above and the insert.
    with unique_or_conflict(f"批号 {fields['lot']} 已被该产品使用", "duplicate_lot"):
        cooperative = product.cooperative
        batch = Batch(
            product=product, village_id=fields["village_id"], lot=fields["lot"],
            produced_on=fields["produced_on"], expires_on=fields["expires_on"],
            quantity=fields["quantity"], available_quantity=fields["quantity"],
            unit=fields["unit"] or product.unit, commitment_basis=fields["commitment_basis"],
            committer=fields["committer"] or cooperative.name,
            contact_phone=fields["contact_phone"] or cooperative.contact_phone,
            created_by_id=actor.id,
        )
        db.session.add(batch)
        db.session.flush()
        db.session.add(BatchScanCounter(batch_id=batch.id, count=0))
        village = db.session.get(Village, fields["village_id"])
        db.session.add(TraceEvent(
            batch_id=batch.id, biz_step="commissioning", event_time=batch.created_at or utcnow(), actor_id=actor.id,
            location=f"{village.county}{village.township}{village.name}", partner=cooperative.name,
            quantity=batch.quantity, note=f"生产日期 {batch.produced_on.isoformat()}",
        ))
        record_event(subject_type="batch", subject_id=batch.id, action="commission", actor=actor,
                     to_state="commissioned",
                     data={"product_id": product.id, "lot": batch.lot, "village_id": batch.village_id,
                           "quantity": batch.quantity, "produced_on": batch.produced_on.isoformat()})
    notify_products_changed(product.id)
    return batch


def _lot_taken(product_id: int, lot: str) -> bool:
    return db.session.scalar(
        sa.select(Batch.id).where(Batch.product_id == product_id, Batch.lot == lot)
    ) is not None


def get_batch(batch_id: int) -> Batch:
    """Return a batch by id.

    :raise NotFound: no such batch.
    """
    batch = db.session.get(Batch, batch_id)
    if batch is None:
        raise NotFound("批次不存在")
    return batch


def batch_for_member(actor: User, batch_id: int) -> Batch:
    """Return a batch its cooperative (or an admin) may manage.

    :raise NotFound: no such batch.
    :raise Forbidden: another cooperative's member or a role without cooperative rights.
    """
    batch = get_batch(batch_id)
    ensure_cooperative_member(actor, batch.product.cooperative_id)
    return batch


def list_batches(actor: User, page: Page, *, product_id: int | None = None) -> tuple[list[Batch], int]:
    """Batches the actor manages (its cooperative's; every batch for an admin), newest first.

    :raise NotFound: ``product_id`` names no product.
    :raise Forbidden: ``product_id`` is another cooperative's product.
    """
    query = sa.select(Batch).join(Product, Product.id == Batch.product_id)
    if product_id is not None:
        _product_for_member(actor, product_id)
        query = query.where(Batch.product_id == product_id)
    elif not actor.has_role(Role.ADMIN):
        ensure_cooperative_member(actor, actor.cooperative_id or -1)
        query = query.where(Product.cooperative_id == actor.cooperative_id)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(Batch.created_at.desc(), Batch.id.desc())
                              .offset(page.offset).limit(page.size)).all()
    return list(rows), total


def products_for_new_batch(actor: User) -> list[Product]:
    """The actor's cooperative's products that may get a batch now (sellable), by name."""
    query = sa.select(Product).where(gate.sellable_clause()).order_by(Product.name, Product.id)
    if not actor.has_role(Role.ADMIN):
        query = query.where(Product.cooperative_id == actor.cooperative_id)
    return list(db.session.scalars(query))


def batch_trace_url(batch: Batch) -> str:
    """The signed public URL of the batch-level code."""
    return codes.trace_url(batch.id, batch.lot, batch.product.gtin)


def scan_counts(batch_ids) -> dict[int, dict]:
    """Scan totals per batch: ``{"batch_code", "items", "first_at", "last_at"}`` (batch code + items)."""
    flush_scans()  # this worker's own recent scans first: a cooperative sees what it just scanned
    ids = list(batch_ids)
    result = {bid: {"batch_code": 0, "items": 0, "first_at": None, "last_at": None} for bid in ids}
    if not ids:
        return result
    for bid, count, first_at, last_at in db.session.execute(
            sa.select(BatchScanCounter.batch_id, BatchScanCounter.count, BatchScanCounter.first_at,
                      BatchScanCounter.last_at).where(BatchScanCounter.batch_id.in_(ids))):
        result[bid].update(batch_code=count, first_at=first_at, last_at=last_at)
    for bid, count, first_at, last_at in db.session.execute(
            sa.select(Serial.batch_id, sa.func.sum(Serial.scan_count), sa.func.min(Serial.first_scanned_at),
                      sa.func.max(Serial.last_scanned_at))
            .where(Serial.batch_id.in_(ids)).group_by(Serial.batch_id)):
        entry = result[bid]
        entry["items"] = int(count or 0)
        entry["first_at"] = min(filter(None, (entry["first_at"], first_at)), default=None)
        entry["last_at"] = max(filter(None, (entry["last_at"], last_at)), default=None)
    return result


# --------------------------------------------------------------------------- serials

def issue_serials(actor: User, batch_id: int, data: dict) -> list[tuple[str, str]]:
    """Issue ``count`` new item serials for a batch; return ``[(serial, trace_url)]``.

    Serials come from ``secrets`` (60 bits each) and are inserted in one multi-row
    statement; the unique index settles the (astronomically rare) collision by a retry.

    :raise NotFound: no such batch.
    :raise Forbidden: not the batch's cooperative.
    :raise ValidationFailed: count outside 1..10000.
    """
    batch = batch_for_member(actor, batch_id)
    count = SerialRequestSchema().load(data)["count"]
    gtin, lot = batch.product.gtin, batch.lot
    for attempt in range(3):
        serials = set()
        while len(serials) < count:
            serials.add(codes.new_serial())
        ordered = sorted(serials)
        now = utcnow()
        try:
            db.session.execute(sa.insert(Serial), [
                {"batch_id": batch.id, "serial": serial, "created_at": now, "scan_count": 0} for serial in ordered
            ])
            record_event(subject_type="batch", subject_id=batch.id, action="issue_serials", actor=actor,
                         data={"count": count, "first": ordered[0], "last": ordered[-1]})
            db.session.commit()
            break
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise
            batch = batch_for_member(actor, batch_id)
    return [(serial, codes.trace_url(batch_id, lot, gtin, serial)) for serial in ordered]


def list_serials(actor: User, batch_id: int, page: Page, *, most_scanned_first: bool = True
                 ) -> tuple[Batch, list[Serial], int]:
    """A batch's serials with their scan counts: most scanned first, or in issue order (printing).

    :raise NotFound: no such batch.
    :raise Forbidden: not the batch's cooperative.
    """
    batch = batch_for_member(actor, batch_id)
    flush_scans()
    order = (Serial.scan_count.desc(), Serial.id) if most_scanned_first else (Serial.id,)
    rows = db.session.scalars(sa.select(Serial).where(Serial.batch_id == batch.id).order_by(*order)
                              .offset(page.offset).limit(page.size)).all()
    return batch, list(rows), count_serials(batch.id)


def count_serials(batch_id: int) -> int:
    """How many item serials a batch has."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(Serial).where(Serial.batch_id == batch_id))


def serial_trace_url(batch: Batch, serial: str) -> str:
    """The signed public URL of one item label."""
    return codes.trace_url(batch.id, batch.lot, batch.product.gtin, serial)


# --------------------------------------------------------------------------- events

def record_trace_event(actor: User, batch_id: int, data: dict) -> TraceEvent:
    """Record a shipping, receiving or retail-selling event of a batch.

    :raise NotFound: no such batch.
    :raise Forbidden: not the batch's cooperative.
    :raise ValidationFailed: bad input; a time in the future or before production.
    """
    batch = batch_for_member(actor, batch_id)
    fields = TraceEventCreateSchema().load(data)
    now = utcnow()
    event_time = fields["event_time"] or now
    if event_time > now + EVENT_CLOCK_SKEW:
        raise ValidationFailed(fields={"occurred_at": ["时间不能晚于现在"]})
    if event_time.date() < batch.produced_on - timedelta(days=1):
        raise ValidationFailed(fields={"occurred_at": ["时间不能早于生产日期"]})
    if fields["quantity"] is not None and fields["quantity"] > batch.quantity:
        raise ValidationFailed(fields={"quantity": [f"不能超过批次数量 {batch.quantity}"]})
    event = TraceEvent(batch_id=batch.id, biz_step=fields["biz_step"], event_time=event_time, recorded_at=now,
                       actor_id=actor.id, location=fields["location"].strip(), partner=fields["partner"].strip(),
                       quantity=fields["quantity"], note=fields["note"].strip())
    db.session.add(event)
    db.session.flush()
    record_event(subject_type="batch", subject_id=batch.id, action=f"event_{event.biz_step}", actor=actor,
                 data={"trace_event_id": event.id, "location": event.location, "partner": event.partner,
                       "quantity": event.quantity})
    db.session.commit()
    forget_batch(batch.id)
    return event


def events_of(batch_id: int) -> list[TraceEvent]:
    """A batch's event history in time order (commissioning first)."""
    return list(db.session.scalars(
        sa.select(TraceEvent).where(TraceEvent.batch_id == batch_id)
        .order_by(TraceEvent.event_time, TraceEvent.id)
    ))


# --------------------------------------------------------------------------- scans

# --------------------------------------------------------------------------- scans: what a cooperative sees

def scan_log(actor: User, batch_id: int, page: Page) -> tuple[Batch, dict, list[dict], int]:
    """A batch's scan totals, by client class, the most-scanned serials and the log, newest first.

    :raise NotFound: no such batch.
    :raise Forbidden: not the batch's cooperative.
    """
    batch = batch_for_member(actor, batch_id)
    totals = scan_counts([batch.id])[batch.id]
    by_device = dict(db.session.execute(
        sa.select(ScanEvent.device_class, sa.func.count()).where(ScanEvent.batch_id == batch.id)
        .group_by(ScanEvent.device_class)).all())
    by_client = dict(db.session.execute(
        sa.select(ScanEvent.client, sa.func.count()).where(ScanEvent.batch_id == batch.id)
        .group_by(ScanEvent.client)).all())
    threshold = scan_warning_threshold()
    top_serials = [
        {"serial": serial, "count": count, "first_at": first_at, "last_at": last_at,
         "suspicious": count > threshold}
        for serial, count, first_at, last_at in db.session.execute(
            sa.select(Serial.serial, Serial.scan_count, Serial.first_scanned_at, Serial.last_scanned_at)
            .where(Serial.batch_id == batch.id, Serial.scan_count > 0)
            .order_by(Serial.scan_count.desc(), Serial.id).limit(20))
    ]
    summary = {**totals, "total": totals["batch_code"] + totals["items"], "by_device": by_device,
               "by_client": by_client, "top_serials": top_serials, "threshold": threshold}
    query = (sa.select(ScanEvent.id, ScanEvent.at, ScanEvent.device_class, ScanEvent.client, ScanEvent.as_json,
                       Serial.serial)
             .outerjoin(Serial, Serial.id == ScanEvent.serial_id).where(ScanEvent.batch_id == batch.id))
    total = db.session.scalar(sa.select(sa.func.count()).where(ScanEvent.batch_id == batch.id))
    rows = [
        {"id": scan_id, "at": at, "device_class": device, "client": client, "as_json": as_json, "serial": serial}
        for scan_id, at, device, client, as_json, serial in db.session.execute(
            query.order_by(ScanEvent.id.desc()).offset(page.offset).limit(page.size))
    ]
    return batch, summary, rows, total
