"""JSON shapes of batches, serials, events and scans (the contract's fields plus extras).

Plain functions rather than marshmallow dump schemas: the scan JSON is on the hot path, and
the others share its pieces.
"""
from flask import url_for
from werkzeug.routing import BuildError

from core.timeutil import isoformat
from core.village_registry import ZONE_LABELS
from traceability import services
from traceability.models import COMMITMENT_BASIS_LABELS, COMMITMENT_STATEMENTS, TraceEvent


def _date(value) -> str | None:
    return value.isoformat() if value else None


def village_json(village) -> dict:
    """A village as the scan page and batches show it."""
    return {"id": village.id, "name": village.name, "township": village.township, "county": village.county,
            "zone": village.zone, "zone_label": ZONE_LABELS.get(village.zone)}


def compliance_json(batch) -> dict:
    """The batch as an electronic 承诺达标合格证 (its eight fields)."""
    village = batch.village
    return {
        "title": "承诺达标合格证",
        "product_name": batch.product.name,
        "quantity": batch.quantity,
        "unit": batch.unit_label,
        "origin": f"{village.county}{village.township}{village.name}",
        "issued_at": isoformat(batch.created_at),
        "committer": batch.committer_name,
        "contact": batch.contact,
        "commitments": list(COMMITMENT_STATEMENTS),
        "basis": batch.commitment_basis,
        "basis_label": COMMITMENT_BASIS_LABELS.get(batch.commitment_basis, batch.commitment_basis),
    }


def event_json(event: TraceEvent) -> dict:
    """One EPCIS-like event."""
    return {"id": event.id, "batch_id": event.batch_id, "type": event.biz_step, "label": event.biz_step_label,
            "occurred_at": isoformat(event.event_time), "recorded_at": isoformat(event.recorded_at),
            "location": event.location, "partner": event.partner, "quantity": event.quantity, "note": event.note}


def batch_json(batch, *, detail: bool = False, scans: dict | None = None) -> dict:
    """A batch: the contract's fields, the certificate fields, links; counts and history if ``detail``."""
    body = {
        "id": batch.id,
        "product_id": batch.product_id,
        "product_name": batch.product.name,
        "lot": batch.lot,
        "village_id": batch.village_id,
        "village": village_json(batch.village),
        "produced_on": _date(batch.produced_on),
        "expires_on": _date(batch.expires_on),
        "quantity": batch.quantity,
        "available_quantity": batch.available_quantity,
        "unit": batch.unit_label,
        "commitment_basis": batch.commitment_basis,
        "compliance_certificate": compliance_json(batch),
        "trace_url": services.batch_trace_url(batch),
        "qr_png_url": url_for("traceability_api.batch_qr", batch_id=batch.id, _external=True),
        "labels_url": url_for("traceability.labels", batch_id=batch.id, _external=True),
        "created_at": isoformat(batch.created_at),
    }
    if scans is not None or detail:
        body["scans"] = scans_total_json(scans or services.scan_counts([batch.id])[batch.id])
    if detail:
        body["serials_count"] = services.count_serials(batch.id)
        body["events"] = [event_json(event) for event in services.events_of(batch.id)]
    return body


def batches_json(batches) -> list[dict]:
    """Batches with their scan totals (one query for all of them)."""
    counts = services.scan_counts([batch.id for batch in batches])
    return [batch_json(batch, scans=counts[batch.id]) for batch in batches]


def scans_total_json(totals: dict) -> dict:
    return {"batch_code": totals["batch_code"], "items": totals["items"],
            "total": totals["batch_code"] + totals["items"],
            "first_at": isoformat(totals["first_at"]), "last_at": isoformat(totals["last_at"])}


def serials_json(batch, serials) -> list[dict]:
    """Serials with their URLs and scan counts."""
    return [{"serial": item.serial, "trace_url": services.serial_trace_url(batch, item.serial),
             "scan_count": item.scan_count, "first_scanned_at": isoformat(item.first_scanned_at),
             "last_scanned_at": isoformat(item.last_scanned_at), "created_at": isoformat(item.created_at)}
            for item in serials]


def scans_json(rows) -> list[dict]:
    """Scan-log rows (no personal data is kept, so none is shown)."""
    return [{"id": row["id"], "at": isoformat(row["at"]), "serial": row["serial"],
             "device_class": row["device_class"], "client": row["client"], "as_json": row["as_json"]}
            for row in rows]


def scan_summary_json(summary: dict) -> dict:
    return {
        **scans_total_json(summary),
        "by_device": summary["by_device"],
        "by_client": summary["by_client"],
        "threshold": summary["threshold"],
        "top_serials": [{**item, "first_at": isoformat(item["first_at"]), "last_at": isoformat(item["last_at"])}
                        for item in summary["top_serials"]],
    }


def product_page_path(product_id: int) -> str:
    """Where "buy this product" leads: the shop's product page."""
    return f"/products/{product_id}"


def photo_url(filename: str | None, sellable: bool = True) -> str | None:
    """Public URL of a product photo, if the catalogue serves it: only while the product may be
    sold (certification.services.image_visible), so a revoked product's scan shows no broken image."""
    if not filename or not sellable:
        return None
    try:
        return url_for("certification.product_image", name=filename)
    except BuildError:
        return None


def _static_scan_json(entry) -> dict:
    """The parts of the scan JSON that do not change from scan to scan (cached on the entry)."""
    batch, product, village, compliance = entry.batch, entry.product, entry.village, entry.compliance
    sales = entry.village_sales
    return {
        "authentic": True,
        "product": {"id": product["id"], "name": product["name"], "specification": product["specification"],
                    "unit": product["unit"], "gtin": product["gtin"], "category": product["category"],
                    "photo_url": photo_url(product["photo"], entry.sellable), "url": product_page_path(product["id"]),
                    "sellable": entry.sellable},
        "batch": {"id": batch["id"], "lot": batch["lot"], "produced_on": _date(batch["produced_on"]),
                  "expires_on": _date(batch["expires_on"]), "quantity": batch["quantity"], "unit": batch["unit"]},
        "village": {"id": village["id"], "name": village["name"], "township": village["township"],
                    "county": village["county"], "zone": village["zone"], "zone_label": ZONE_LABELS.get(village["zone"])},
        "cooperative": entry.cooperative,
        "certification": {"status": entry.certification["status"],
                          "certificate_no": entry.certification["certificate_no"],
                          "valid_until": _date(entry.certification["valid_until"])},
        "compliance_certificate": {**compliance, "issued_at": isoformat(compliance["issued_at"]),
                                   "commitments": list(compliance["commitments"]),
                                   "basis_label": COMMITMENT_BASIS_LABELS.get(compliance["basis"])},
        "village_sales": {**sales, "progress": sales["sales_fen"] / sales["target_fen"] if sales["target_fen"] else None},
        "events": [{"type": event["type"], "label": event["label"], "occurred_at": isoformat(event["at"]),
                    "location": event["location"], "partner": event["partner"], "quantity": event["quantity"]}
                   for event in entry.events],
    }


def scan_json(result) -> dict:
    """The resolver's JSON: the contract's keys (authentic, product, batch, village, cooperative,
    certification, village_sales, scans, warnings) plus extras."""
    static = result.entry.renderings.get("json")
    if static is None:
        static = result.entry.renderings["json"] = _static_scan_json(result.entry)
    serial = result.code.serial
    return {
        **static,
        "code": {"type": "item" if serial else "batch", "serial": serial},
        "batch": {**static["batch"], "serial": serial},
        "scans": {"count": result.scans["count"], "first_at": isoformat(result.scans["first_at"])},
        "warnings": result.warnings,
        "warning_codes": result.warning_codes,
    }
