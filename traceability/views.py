"""Traceability pages: the public scan resolver (Digital Link and short codes), and the
cooperative's batch pages (create, detail with events, serials and scans, printable labels)."""
import csv
import io
import json
from functools import lru_cache
from urllib.parse import quote, urlsplit

from flask import (Blueprint, Response, current_app, flash, jsonify, make_response, redirect, render_template, request,
                   url_for)
from markupsafe import Markup
from marshmallow import ValidationError

from core.auth import current_user, require_roles
from core.errors import AppError, NotFound, wants_json
from core.http import Page, page_params
from core.identifiers import whole_number
from core.models import Role
from core.navigation import register_nav
from core.timeutil import shanghai_today, to_shanghai
from core.ratelimit import rate_limited
from traceability import codes, fakes, presenters, qr, services
from traceability.gs1 import MalformedDigitalLink
from traceability.models import (BIZ_STEP_LABELS, CLIENT_LABELS, FAKE_REASON_LABELS, COMMITMENT_BASIS_LABELS, COMMITMENT_STATEMENTS,
                                 DEVICE_LABELS, MANUAL_BIZ_STEPS)

bp = Blueprint("traceability", __name__)

MANAGERS = (Role.COOPERATIVE, Role.ADMIN)
LABELS_PER_PAGE = 8  # A4 portrait, 2 × 4 labels of 105 × 74 mm
MAX_LABEL_PAGES = 10  # one sheet document: at most 80 labels (~1 s of QR encoding when cold)

register_nav("traceability.batch_index", "批次溯源", roles=MANAGERS, order=40)
register_nav("traceability.fake_reports", "假冒举报", roles=(Role.PREFECTURE_REVIEWER, Role.ADMIN), order=45)


# --------------------------------------------------------------------------- public resolver

def _raw_path() -> str:
    """The request path still percent-encoded, relative to the app root.

    Why: Werkzeug decodes ``%2F`` to ``/`` in ``request.path``, which would split a lot that
    contains a slash; gunicorn and Werkzeug both pass the raw request line as ``RAW_URI``.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    path = urlsplit(raw).path if raw else request.path
    root = request.script_root
    if root and path.startswith(root):
        path = path[len(root):]
    return path


# Scan answers are never cached (every scan must reach us to be counted) nor indexed.
NO_STORE = {"Cache-Control": "no-store", "Vary": "Accept", "X-Robots-Tag": "noindex, nofollow"}


def _no_store(response):
    """Mark a scan answer as not cacheable and not for search engines."""
    response.headers.update(NO_STORE)
    return response


def _unverifiable(status: int = 404, reason: str | None = None):
    """The answer for an unknown, forged or altered code (404) or a malformed URI (400)."""
    if wants_json():
        if status == 400:
            body = {"authentic": False,
                    "error": {"code": "malformed_digital_link", "message": reason or "二维码链接格式错误", "fields": {}}}
        else:
            body = {"authentic": False,
                    "error": {"code": "unknown_code", "message": "无法验证此码：它不是本平台签发的，或已被篡改", "fields": {}}}
        return _no_store(make_response(jsonify(body), status))
    query = request.query_string.decode("latin-1")
    reported = (_raw_path() + (f"?{query}" if query else ""))[:fakes.MAX_CODE]
    html = render_template("traceability/scan_invalid.html", status=status, reason=reason,
                           report_url="/report-fake?code=" + quote(reported, safe=""))
    return _no_store(make_response(html, status))


# Marks the per-scan parts in the cached page; user text is escaped, so it cannot contain it.
SLOT = "<!--scan-slot-->"


def _scan_parts():
    """The macros that render the per-scan parts of the page (loaded once per app)."""
    module = current_app.extensions.get("traceability.scan_parts")
    if module is None:
        module = current_app.jinja_env.get_template("traceability/_scan_parts.html").module
        current_app.extensions["traceability.scan_parts"] = module
    return module


def _scan_html(result) -> str:
    """The scan page: the entry's cached rendering with this scan's parts filled in."""
    entry = result.entry
    parts = entry.renderings.get("html")
    if parts is None:
        html = render_template("traceability/scan.html", r=entry, slot=Markup(SLOT),
                               photo_url=presenters.photo_url(entry.product["photo"], entry.sellable),
                               buy_url=presenters.product_page_path(entry.product["id"]),
                               basis_label=COMMITMENT_BASIS_LABELS.get(entry.compliance["basis"], ""))
        parts = entry.renderings["html"] = html.split(SLOT)
    macros = _scan_parts()
    # The verdict changes only with the warnings: render each distinct list once per entry.
    verdicts = entry.renderings.setdefault("verdicts", {})
    key = tuple(result.warnings)
    verdict = verdicts.get(key)
    if verdict is None:
        verdict = verdicts[key] = str(macros.verdict(result.warnings))
    head, after_verdict, after_serial, tail = parts
    return "".join((
        head, verdict, after_verdict, macros.serial_line(result.code.serial) if result.code.serial else "",
        after_serial, _scan_count_html(entry, macros, result), tail,
    ))


_COUNT = "\x00count\x00"  # stands for the number in a cached rendering of the scan-count part


def _scan_count_html(entry, macros, result) -> str:
    """The "scanned N times, first at T" part; rendered once per first-scan time, then the number
    is filled in (T never changes for a code once set)."""
    counts = entry.renderings.setdefault("counts", {})
    first_at_text = _local_time(result.scans["first_at"])
    threshold = services.scan_warning_threshold()
    key = (first_at_text, result.code.serial is not None, threshold)
    template = counts.get(key)
    if template is None:
        if len(counts) > 1000:  # one per item serial at most; keep an entry small
            counts.clear()
        template = counts[key] = str(macros.scan_count(_COUNT, first_at_text, result.code.serial, threshold))
    return template.replace(_COUNT, str(result.scans["count"]), 1) + _report_link()


def _report_link() -> str:
    """The per-scan "report a suspected fake" link: it carries this very code (path and signature)."""
    code = _raw_path() + (f"?s={request.args['s']}" if request.args.get("s") else "")
    return f'<p class="report-fake"><a href="/report-fake?code={quote(code, safe="")}" rel="nofollow">举报疑似假冒</a></p>'



@lru_cache(maxsize=4096)
def _local_time(moment) -> str:
    """A first-scan time in Beijing time for the page (a code's first scan never changes)."""
    return to_shanghai(moment).strftime("%Y-%m-%d %H:%M") if moment else ""


#: GS1 link types this resolver answers (GS1 Web Vocabulary, https://gs1.org/voc/).
GS1_VOC = "https://gs1.org/voc/"
LINKSET_TYPE = "application/linkset+json"
REDIRECT_LINK_TYPES = ("gs1:pip", "gs1:certificationInfo")


def _machine_answer(code: codes.TraceCode, link_type: str | None):
    """A resolver client's request (a linkset, or a redirect to one link type): answered like a
    scan but not counted as one, since no consumer looked at the goods."""
    result = services.resolve_scan(code, user_agent=request.headers.get("User-Agent", ""), as_json=True,
                                   record=False)
    if result is None:
        return _unverifiable()
    links = _links(result)
    if link_type in REDIRECT_LINK_TYPES:
        return _no_store(redirect(links[link_type.split(":", 1)[1]]["href"], code=307))
    body = {"linkset": [{"anchor": _code_url(), **{GS1_VOC + name: [link] for name, link in links.items()}}]}
    response = current_app.response_class(json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                                          mimetype=LINKSET_TYPE, headers=NO_STORE)
    return response


def _code_url() -> str:
    """This code's own URL, as issued: still percent-encoded (a lot may hold a "/"), with its signature."""
    url = request.host_url.rstrip("/") + request.script_root + _raw_path()
    return url + (f"?s={request.args['s']}" if request.args.get("s") else "")


def _links(result) -> dict[str, dict]:
    """The code's links by GS1 link type: product page, certificate, traceability (the scan page)."""
    root = request.host_url.rstrip("/")
    product_id = result.entry.product["id"]
    scan_page = _code_url()
    page = {"type": "text/html", "hreflang": ["zh-CN"]}
    return {
        "pip": {"href": root + presenters.product_page_path(product_id), "title": "产品信息与购买", **page},
        "certificationInfo": {"href": root + url_for("certification.product_page", product_id=product_id),
                              "title": "湘西香伴品牌认定信息", **page},
        "traceability": {"href": scan_page, "title": "产地溯源：村、合作社、批次与流通记录", **page},
        "defaultLink": {"href": scan_page, "title": "扫码验真与溯源", **page},
    }


def _resolve(code: codes.TraceCode | None):
    """Verify the signature, look the code up, count the scan, answer HTML or JSON (or, for a
    GS1 resolver client, a linkset or a redirect to one link, uncounted)."""
    if code is None or not codes.is_authentic(code, request.args.get("s")):
        return _unverifiable()
    link_type = request.args.get("linkType")
    if link_type == "linkset" or link_type in REDIRECT_LINK_TYPES \
            or LINKSET_TYPE in request.headers.get("Accept", ""):
        return _machine_answer(code, link_type)
    # Only a client that mentions JSON can prefer it; skip parsing Accept for every phone.
    as_json = "json" in request.headers.get("Accept", "") and wants_json()
    result = services.resolve_scan(code, user_agent=request.headers.get("User-Agent", ""), as_json=as_json,
                                   record=request.method == "GET")
    if result is None:
        return _unverifiable()
    if as_json:
        # Plain json.dumps: Flask's provider would sort the keys, a cost with no reader.
        body = json.dumps(presenters.scan_json(result), ensure_ascii=False, separators=(",", ":"))
        return current_app.response_class(body, mimetype="application/json", headers=NO_STORE)
    return current_app.response_class(_scan_html(result), mimetype="text/html", headers=NO_STORE)


@bp.get("/01/<path:rest>")
def resolve_digital_link(rest: str):
    """GS1 Digital Link resolver: ``/01/{gtin}/10/{lot}[/21/{serial}]?s=…``."""
    try:
        code = codes.parse_digital_link(_raw_path())
    except MalformedDigitalLink as exc:
        return _unverifiable(400, str(exc))
    return _resolve(code)


@bp.get("/t/<batch_id>")
@bp.get("/t/<batch_id>/<serial>")
def resolve_short(batch_id: str, serial: str | None = None):
    """The platform's own trace codes for products without a GTIN: ``/t/{batch_id}[/{serial}]?s=…``."""
    return _resolve(codes.parse_short(batch_id, serial))


@bp.get("/.well-known/gs1resolver")
def gs1_resolver_description():
    """What this resolver is (GS1 Digital Link resolver description): its root, keys, link types."""
    root = request.host_url.rstrip("/")
    return jsonify({
        "name": "湘西香伴 溯源解析服务",
        "resolverRoot": root,
        "supportedPrimaryKeys": ["gtin"],
        "supportedLinkType": [{"namespace": GS1_VOC, "prefix": "gs1:",
                               "types": ["gs1:pip", "gs1:certificationInfo", "gs1:traceability", "gs1:defaultLink"]}],
        "linkTypeDefaultCanBeLinkset": False,
        "linksetMediaType": LINKSET_TYPE,
        "note": "每个码都带签名参数 s；无 GTIN 的合作社产品使用本平台短码 /t/{批次}/{单品序列号}。",
    })


@bp.route("/report-fake", methods=["GET", "POST"])
def report_fake():
    """The public "report a suspected fake" form, reached from a scan page (no sign-in)."""
    code = (request.values.get("code") or "")[:fakes.MAX_CODE]
    errors, form = {}, {"reason": "", "note": "", "contact": ""}
    if request.method == "POST":
        return _submit_fake_report(code)
    return render_template("traceability/report_fake.html", code=code, authentic=fakes.identify(code)[1],
                           reasons=FAKE_REASON_LABELS, errors=errors, form=form)


@rate_limited("fake_report", 5, window_seconds=3600)
def _submit_fake_report(code: str):
    form = {name: request.form.get(name, "") for name in ("reason", "note", "contact")}
    try:
        fakes.report_fake({"code": code, **form})
    except AppError as exc:
        return render_template("traceability/report_fake.html", code=code, authentic=fakes.identify(code)[1],
                               reasons=FAKE_REASON_LABELS, errors=exc.fields, form=form), 422
    return render_template("traceability/report_fake_done.html")


@bp.get("/traceability/fake-reports")
@require_roles(Role.PREFECTURE_REVIEWER, Role.ADMIN)
def fake_reports():
    """The prefecture's view of flagged batches and serials."""
    return render_template("traceability/fake_reports.html", **fakes.flagged(current_user()))


# --------------------------------------------------------------------------- cooperative pages

def _form_int(value):
    """Form fields arrive as text; hand integers to the schema, anything else as is (→ 422)."""
    value = (value or "").strip()
    number = whole_number(value)
    return value or None if number is None else number


@bp.get("/traceability/batches")
@require_roles(*MANAGERS)
def batch_index():
    """The cooperative's batches with stock and scan totals."""
    page = page_params(max_per_page=200)
    rows, total = services.list_batches(current_user(), page)
    counts = services.scan_counts([batch.id for batch in rows])
    return render_template("traceability/batches.html", batches=rows, counts=counts, total=total, page=page,
                           today=shanghai_today())


@bp.route("/traceability/batches/new", methods=["GET", "POST"])
@require_roles(*MANAGERS)
def batch_new():
    """Register a production batch (and so issue its 承诺达标合格证 and QR code)."""
    user = current_user()
    products = services.products_for_new_batch(user)
    chosen_id = whole_number(request.values.get("product_id"))
    if chosen_id is None and len(products) == 1:
        chosen_id = products[0].id
    chosen = next((product for product in products if product.id == chosen_id), None)
    errors, form = {}, request.form
    if request.method == "POST":
        data = {
            "lot": form.get("lot", "").strip(), "village_id": _form_int(form.get("village_id")),
            "produced_on": form.get("produced_on") or None, "expires_on": form.get("expires_on") or None,
            "quantity": _form_int(form.get("quantity")), "unit": form.get("unit", "").strip() or None,
            "commitment_basis": form.get("commitment_basis") or "quality_control",
            "committer": form.get("committer", "").strip() or None,
            "contact_phone": form.get("contact_phone", "").strip() or None,
        }
        try:
            batch = services.create_batch(user, chosen_id if chosen_id is not None else -1, data)
        except ValidationError as exc:
            errors = exc.messages
        except AppError as exc:
            if exc.status in (403, 404) and chosen is None:
                errors = {"product_id": ["请选择本合作社已获认定的产品"]}
            else:
                errors = exc.fields or {"_": [exc.message]}
        else:
            flash(f"批次 {batch.lot} 已登记，承诺达标合格证与溯源二维码已生成。")
            return redirect(url_for("traceability.batch_detail", batch_id=batch.id))
    return render_template("traceability/batch_form.html", products=products, chosen=chosen, form=form,
                           errors=errors, basis_labels=COMMITMENT_BASIS_LABELS, today=shanghai_today()), \
        (422 if errors else 200)


@bp.get("/traceability/batches/<int:batch_id>")
@require_roles(*MANAGERS)
def batch_detail(batch_id: int):
    """A batch: certificate, QR code, events (with a form), serials and scans."""
    return _batch_page(batch_id)


def _batch_page(batch_id: int, event_errors: list[str] | None = None, event_form=None):
    """Render a batch's page; with ``event_errors`` the event form comes back filled in, its
    errors next to it (status 422)."""
    user = current_user()
    scan_page = page_params(max_per_page=200, default_per_page=20)
    batch, summary, scans, scans_total = services.scan_log(user, batch_id, scan_page)
    serials_count = services.count_serials(batch.id)
    return render_template(
        "traceability/batch.html", batch=batch, summary=summary, scans=scans, scans_total=scans_total,
        scan_page=scan_page, events=services.events_of(batch.id), trace_url=services.batch_trace_url(batch),
        qr_src=qr.qr_data_uri(services.batch_trace_url(batch), box_size=5),
        compliance=presenters.compliance_json(batch), step_labels=BIZ_STEP_LABELS, manual_steps=MANUAL_BIZ_STEPS,
        device_labels=DEVICE_LABELS, client_labels=CLIENT_LABELS, serials_count=serials_count,
        # One label per unit is the usual need: offer what is not labelled yet (at least 1).
        serials_default=min(max(batch.quantity - serials_count, 1), 10_000),
        event_errors=event_errors or [], event_form=event_form or {},
    ), (422 if event_errors else 200)


@bp.post("/traceability/batches/<int:batch_id>/events")
@require_roles(*MANAGERS)
def batch_event_new(batch_id: int):
    """Record shipping, receiving or retail selling from the batch page."""
    form = request.form
    occurred = form.get("occurred_at", "").strip()
    data = {"type": form.get("type", ""), "location": form.get("location", "").strip(),
            "partner": form.get("partner", "").strip(), "quantity": _form_int(form.get("quantity")),
            "note": form.get("note", "").strip(),
            # <input type=datetime-local> has no zone: the cooperative means Beijing time.
            "occurred_at": f"{occurred}:00+08:00" if len(occurred) == 16 else (occurred or None)}
    try:
        event = services.record_trace_event(current_user(), batch_id, data)
    except ValidationError as exc:
        return _batch_page(batch_id, [", ".join(v) if isinstance(v, list) else str(v) for v in exc.messages.values()],
                           form)
    except AppError as exc:
        if exc.status in (403, 404):
            raise
        return _batch_page(batch_id, ["，".join(v) for v in exc.fields.values()] or [exc.message], form)
    flash(f"已记录{event.biz_step_label}事件。")
    return redirect(url_for("traceability.batch_detail", batch_id=batch_id) + "#events")


@bp.post("/traceability/batches/<int:batch_id>/serials")
@require_roles(*MANAGERS)
def batch_serials_new(batch_id: int):
    """Issue item serials from the batch page, then show their label sheet."""
    try:
        issued = services.issue_serials(current_user(), batch_id, {"count": _form_int(request.form.get("count"))})
    except ValidationError as exc:
        flash("单品码未生成：" + "；".join("，".join(v) for v in exc.messages.values()))
        return redirect(url_for("traceability.batch_detail", batch_id=batch_id))
    flash(f"已生成 {len(issued)} 个单品码。")
    return redirect(url_for("traceability.batch_detail", batch_id=batch_id) + "#serials")


@bp.get("/traceability/batches/<int:batch_id>/serials.csv")
@require_roles(*MANAGERS)
def batch_serials_csv(batch_id: int):
    """Every serial and its URL as CSV, for label printers that take a data file."""
    batch, serials, _ = services.list_serials(current_user(), batch_id, Page(1, 1_000_000), most_scanned_first=False)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["serial", "trace_url", "scan_count"])
    for item in serials:
        writer.writerow([item.serial, services.serial_trace_url(batch, item.serial), item.scan_count])
    response = Response("\ufeff" + buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="batch-{batch.id}-serials.csv"'
    return response


@bp.get("/traceability/batches/<int:batch_id>/labels")
@require_roles(*MANAGERS)
def labels(batch_id: int):
    """Print-ready A4 label sheet: batch labels (``kind=batch&copies=N``) or item labels (``kind=items``)."""
    user = current_user()
    kind = request.args.get("kind", "batch")
    if kind not in ("batch", "items"):
        raise NotFound("未知的标签类型")
    page = page_params(max_per_page=LABELS_PER_PAGE * MAX_LABEL_PAGES, default_per_page=LABELS_PER_PAGE * 5)
    batch = services.batch_for_member(user, batch_id)
    if kind == "batch":
        url = services.batch_trace_url(batch)
        entries = [{"serial": None, "url": url, "qr": qr.qr_data_uri(url)}] * page.size
        total = page.size
    else:
        _, serials, total = services.list_serials(user, batch_id, page, most_scanned_first=False)
        entries = []
        for item in serials:
            url = services.serial_trace_url(batch, item.serial)
            entries.append({"serial": item.serial, "url": url, "qr": qr.qr_data_uri(url)})
    sheets = [entries[index:index + LABELS_PER_PAGE] for index in range(0, len(entries), LABELS_PER_PAGE)]
    return render_template("traceability/labels.html", batch=batch, sheets=sheets, kind=kind, page=page,
                           total=total, shown=len(entries), compliance=presenters.compliance_json(batch),
                           commitments=COMMITMENT_STATEMENTS)
