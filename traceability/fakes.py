"""Reports of suspected counterfeits: a consumer flags a scanned code; the prefecture sees which
batches and item serials are flagged, how often, and how often they were scanned.

A report names the code as the consumer's page had it (path and signature). If the signature
verifies, the report is tied to the batch and item serial (the usual fake is a copied genuine
label: the serial to watch); if not, it is kept as the unverifiable text reported, which is
itself evidence of a forged label in circulation.
"""
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa

from core.errors import ValidationFailed
from core.extensions import db
from core.models import Role, User
from core.errors import Forbidden
from traceability import codes, services
from traceability.gs1 import MalformedDigitalLink
from traceability.models import FAKE_REASON_LABELS, FAKE_REASONS, Batch, FakeReport, Serial

MAX_CODE = 600


def identify(code_text: str) -> tuple[codes.TraceCode | None, bool, int | None]:
    """What a reported code is: (parsed code or None, authentic, batch id when authentic)."""
    parts = urlsplit(code_text or "")
    path, signature = parts.path, (parse_qs(parts.query).get("s") or [None])[0]
    code = None
    try:
        if path.startswith("/01/"):
            code = codes.parse_digital_link(path)
        elif path.startswith("/t/"):
            pieces = path[3:].split("/")
            if 1 <= len(pieces) <= 2:
                code = codes.parse_short(pieces[0], pieces[1] if len(pieces) == 2 else None)
    except MalformedDigitalLink:
        code = None
    if code is None or not codes.is_authentic(code, signature):
        return code, False, None
    result = services.resolve_scan(code, record=False)
    return code, result is not None, result.entry.batch_id if result else None


def report_fake(data: dict) -> FakeReport:
    """Store a consumer's report.

    :param data: ``{"code", "reason", "note", "contact"}`` from the report form.
    :raise ValidationFailed: no code, an unknown reason, or text too long (422).
    """
    errors = {}
    code_text = (data.get("code") or "").strip()
    if not code_text or len(code_text) > MAX_CODE or not code_text.startswith("/"):
        errors["code"] = ["缺少要举报的码（请从扫码页面进入）"]
    if data.get("reason") not in FAKE_REASONS:
        errors["reason"] = ["请选择举报原因"]
    note = (data.get("note") or "").strip()
    if len(note) > 500:
        errors["note"] = ["说明最多 500 字"]
    contact = (data.get("contact") or "").strip() or None
    if contact and len(contact) > 60:
        errors["contact"] = ["联系方式最多 60 字"]
    if errors:
        raise ValidationFailed("举报信息不完整", code="invalid_report", fields=errors)
    code, authentic, batch_id = identify(code_text)
    report = FakeReport(code=code_text, authentic=authentic, batch_id=batch_id,
                        serial=code.serial if authentic and code else None,
                        reason=data["reason"], note=note, contact=contact)
    db.session.add(report)
    db.session.commit()
    return report


def may_review(user: User | None) -> bool:
    return user is not None and user.has_role(Role.PREFECTURE_REVIEWER, Role.ADMIN)


def flagged(user: User, limit: int = 200) -> dict:
    """The prefecture's view: flagged batches/serials with report counts, reasons and scan counts,
    most reported first; and the latest reports of codes that did not verify.

    :raise Forbidden: not a prefecture reviewer or administrator.
    """
    if not may_review(user):
        raise Forbidden("只有州级认定员和管理员可以查看假冒举报")
    rows = db.session.execute(
        sa.select(FakeReport.batch_id, FakeReport.serial, sa.func.count().label("reports"),
                  sa.func.max(FakeReport.created_at).label("latest"))
        .where(FakeReport.authentic.is_(True))
        .group_by(FakeReport.batch_id, FakeReport.serial)
        .order_by(sa.func.count().desc(), sa.func.max(FakeReport.created_at).desc()).limit(limit)).all()
    batches = {b.id: b for b in db.session.scalars(sa.select(Batch).where(Batch.id.in_({r.batch_id for r in rows})))}
    serial_counts = dict(db.session.execute(
        sa.select(Serial.serial, Serial.scan_count).where(Serial.serial.in_({r.serial for r in rows if r.serial}))).all())
    reasons: dict[tuple, dict[str, int]] = {}
    for batch_id, serial, reason, count in db.session.execute(
            sa.select(FakeReport.batch_id, FakeReport.serial, FakeReport.reason, sa.func.count())
            .where(FakeReport.authentic.is_(True)).group_by(FakeReport.batch_id, FakeReport.serial, FakeReport.reason)):
        reasons.setdefault((batch_id, serial), {})[FAKE_REASON_LABELS[reason]] = count
    items = [{"batch": batches.get(r.batch_id), "batch_id": r.batch_id, "serial": r.serial, "reports": r.reports,
              "latest": r.latest, "reasons": reasons.get((r.batch_id, r.serial), {}),
              "serial_scans": serial_counts.get(r.serial)} for r in rows]
    unverified = list(db.session.scalars(sa.select(FakeReport).where(FakeReport.authentic.is_(False))
                                         .order_by(FakeReport.id.desc()).limit(50)))
    return {"items": items, "unverified": unverified}
