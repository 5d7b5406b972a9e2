"""Traceability JSON API under ``/api/v1``: batches, QR images, serials, trace events, scans."""
import hashlib

from flask import Blueprint, Response, jsonify, request

from core.auth import current_user, require_roles
from core.http import json_body, list_envelope, page_params
from core.models import Role
from core.openapi import api_doc, api_tag, envelope
from core.timeutil import isoformat
from traceability import fakes, presenters, qr, services
from traceability.schemas import (BatchCreateSchema, BatchOutSchema, FakeReportsSchema, IssuedSerialsSchema,
                                  ScanOutSchema, SerialOutSchema, SerialRequestSchema, TraceEventCreateSchema,
                                  TraceEventOutSchema)

bp = Blueprint("traceability_api", __name__, url_prefix="/api/v1")

# The QR image carries a signed URL meant to be printed by the cooperative that owns the
# batch; handing signed codes to anyone would let a forger print genuine-looking labels
# for batches they never held, so only the batch's cooperative and admins may fetch it.
MANAGERS = (Role.COOPERATIVE, Role.ADMIN)

api_tag(bp, "批次与溯源", "生产批次与库存、二维码、单品序列号、流通事件、扫码记录、疑似假冒举报")

EVENTS = {"type": "object", "properties": {"items": {"type": "array", "items": TraceEventOutSchema},
                                           "total": {"type": "integer"}}}
SCANS = {"allOf": [envelope(ScanOutSchema), {"type": "object", "properties": {
    "batch_id": {"type": "integer"}, "summary": {"type": "object", "description": "扫码合计、按设备与客户端、阈值、扫码最多的序列号"}}}]}


@bp.post("/products/<int:product_id>/batches")
@api_doc(request=BatchCreateSchema, response=BatchOutSchema, status=201, errors=(409,))
@require_roles(*MANAGERS)
def create_batch(product_id: int):
    """Create a batch of a certified product; its quantity becomes sellable stock."""
    batch = services.create_batch(current_user(), product_id, json_body())
    return jsonify(presenters.batch_json(batch)), 201


@bp.get("/products/<int:product_id>/batches")
@api_doc(paged=True, response=BatchOutSchema, many=True)
@require_roles(*MANAGERS)
def list_product_batches(product_id: int):
    """A product's batches, newest first (its cooperative, admins)."""
    page = page_params()
    rows, total = services.list_batches(current_user(), page, product_id=product_id)
    return jsonify(list_envelope(presenters.batches_json(rows), total, page))


@bp.get("/batches")
@api_doc(paged=True, response=BatchOutSchema, many=True)
@require_roles(*MANAGERS)
def list_batches():
    """The caller's cooperative's batches (every batch for an admin), with scan totals."""
    page = page_params()
    rows, total = services.list_batches(current_user(), page)
    return jsonify(list_envelope(presenters.batches_json(rows), total, page))


@bp.get("/batches/<int:batch_id>")
@api_doc(response=BatchOutSchema)
@require_roles(*MANAGERS)
def get_batch(batch_id: int):
    """One batch with its compliance-certificate fields, scan totals and event history."""
    batch = services.batch_for_member(current_user(), batch_id)
    return jsonify(presenters.batch_json(batch, detail=True))


@bp.get("/batches/<int:batch_id>/qr.png")
@api_doc(files=("png",))
@require_roles(*MANAGERS)
def batch_qr(batch_id: int):
    """A PNG QR code whose text is exactly the batch's ``trace_url``."""
    batch = services.batch_for_member(current_user(), batch_id)
    text = services.batch_trace_url(batch)
    response = Response(qr.qr_png(text), mimetype="image/png")
    # The image changes only when the URL does (key rotation, base URL); private: it is a credential.
    response.set_etag(hashlib.sha256(text.encode("utf-8")).hexdigest()[:32])
    response.cache_control.private = True
    response.cache_control.max_age = 86400
    response.headers["Content-Disposition"] = f'inline; filename="batch-{batch.id}-qr.png"'
    return response.make_conditional(request)


@bp.post("/batches/<int:batch_id>/serials")
@api_doc(request=SerialRequestSchema, response=IssuedSerialsSchema, status=201, errors=(409,))
@require_roles(*MANAGERS)
def issue_serials(batch_id: int):
    """Issue item serials: one unique, unguessable code per item label."""
    issued = services.issue_serials(current_user(), batch_id, json_body())
    return jsonify({"batch_id": batch_id, "count": len(issued),
                    "items": [{"serial": serial, "trace_url": url} for serial, url in issued]}), 201


@bp.get("/batches/<int:batch_id>/serials")
@api_doc(paged=True, response=SerialOutSchema, many=True)
@require_roles(*MANAGERS)
def list_serials(batch_id: int):
    """A batch's serials with their scan counts, most scanned first."""
    page = page_params()
    batch, rows, total = services.list_serials(current_user(), batch_id, page)
    return jsonify(list_envelope(presenters.serials_json(batch, rows), total, page))


@bp.post("/batches/<int:batch_id>/events")
@api_doc(request=TraceEventCreateSchema, response=TraceEventOutSchema, status=201, errors=(409,))
@require_roles(*MANAGERS)
def create_event(batch_id: int):
    """Record a shipping, receiving or retail-selling event of a batch."""
    event = services.record_trace_event(current_user(), batch_id, json_body())
    return jsonify(presenters.event_json(event)), 201


@bp.get("/batches/<int:batch_id>/events")
@api_doc(response=EVENTS)
@require_roles(*MANAGERS)
def list_events(batch_id: int):
    """A batch's event history, commissioning first."""
    batch = services.batch_for_member(current_user(), batch_id)
    events = services.events_of(batch.id)
    return jsonify({"items": [presenters.event_json(event) for event in events], "total": len(events)})


@bp.get("/batches/<int:batch_id>/scans")
@api_doc(paged=True, response=SCANS)
@require_roles(*MANAGERS)
def list_scans(batch_id: int):
    """Scan totals of a batch (batch code and items) and its scan log, newest first."""
    page = page_params()
    batch, summary, rows, total = services.scan_log(current_user(), batch_id, page)
    return jsonify(list_envelope(presenters.scans_json(rows), total, page,
                                 batch_id=batch.id, summary=presenters.scan_summary_json(summary)))



@bp.get("/fake-reports")
@api_doc(response=FakeReportsSchema)
@require_roles(Role.PREFECTURE_REVIEWER, Role.ADMIN)
def fake_reports():
    """Flagged batches and item serials, most reported first, and reports of codes that did not verify."""
    view = fakes.flagged(current_user())
    return jsonify({
        "items": [{"batch_id": item["batch_id"], "serial": item["serial"], "reports": item["reports"],
                   "latest_at": isoformat(item["latest"]), "reasons": item["reasons"],
                   "serial_scans": item["serial_scans"],
                   "product": item["batch"].product.name if item["batch"] else None,
                   "lot": item["batch"].lot if item["batch"] else None} for item in view["items"]],
        "unverified": [{"code": r.code, "reason": r.reason, "note": r.note, "created_at": isoformat(r.created_at)}
                       for r in view["unverified"]],
    })
