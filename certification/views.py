"""Certification pages: the public catalogue, cooperatives' products, reviewers' queues and decisions."""
import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from certification import forms, services, uploads
from certification.models import CATEGORY_LABELS, EVIDENCE_TYPE_LABELS, IN_PROGRESS, Evidence, Product
from certification.schemas import ProductQuerySchema
from certification.status import (
    certificate_status,
    evidence_flags,
    expires_in_days,
    product_status,
    renewal_reminder_days,
)
from core.auth import current_user, require_login, require_roles
from core.errors import AppError, Conflict, NotFound
from core.extensions import db
from core.identifiers import whole_number
from core.models import ROLE_LABELS, ROLE_VALUES, Role, Village
from core.navigation import register_nav
from core.timeutil import shanghai_today, utcnow
from core.village_registry import COUNTIES

bp = Blueprint("certification", __name__)

CATALOGUE_PAGE_SIZE = 24

register_nav("certification.catalogue", "产品目录", order=20)
register_nav("certification.my_products", "我的产品", roles=(Role.COOPERATIVE,), order=30)
register_nav("certification.queue", "审核队列", roles=(Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.ADMIN),
             order=30)
register_nav("certification.certificates", "证书管理",
             roles=(Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.ADMIN), order=35)


@bp.app_template_filter("waited")
def format_waited(delta) -> str:
    """Format a waiting time for people: 3 天 4 小时, 5 小时 12 分, 8 分钟."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} 天 {hours} 小时"
    if hours:
        return f"{hours} 小时 {minutes} 分"
    return f"{minutes} 分钟"


@bp.context_processor
def certification_labels():
    """Labels and helpers every certification template uses (this blueprint's pages only)."""
    return {"status_labels": services.STATUS_LABELS, "category_labels": CATEGORY_LABELS,
            "action_labels": services.ACTION_LABELS, "evidence_type_labels": EVIDENCE_TYPE_LABELS,
            "product_status": product_status, "certificate_status": certificate_status,
            "expires_in_days": expires_in_days, "pdf_page_count": uploads.pdf_page_count,
            "role_label": lambda role: ROLE_LABELS.get(Role(role), role) if role in ROLE_VALUES else role}


def _catalogue_filters() -> dict:
    """Read county/category filters from the query string, dropping values that are not ours."""
    raw = {key: request.args.get(key) for key in ("county", "category") if request.args.get(key)}
    try:
        return ProductQuerySchema().load(raw)
    except ValidationError as error:
        return {key: value for key, value in raw.items() if key not in error.messages}


# ---- public ------------------------------------------------------------------------------


@bp.get("/catalogue")
def catalogue():
    """产品目录: certified products with producer, villages, certificate and validity."""
    filters = _catalogue_filters()
    page = whole_number(request.args.get("page")) or 1
    products, total = services.list_sellable_products(filters, (page - 1) * CATALOGUE_PAGE_SIZE, CATALOGUE_PAGE_SIZE)
    pages = max((total + CATALOGUE_PAGE_SIZE - 1) // CATALOGUE_PAGE_SIZE, 1)
    return render_template("certification/catalogue.html", products=products, total=total, page=page, pages=pages,
                           filters=filters, counties=COUNTIES, categories=CATEGORY_LABELS)


@bp.get("/catalogue.csv")
def catalogue_csv():
    """The catalogue (same filters) as a CSV file, UTF-8 with BOM for Excel."""
    filters = _catalogue_filters()
    filename = f"xiangban-catalogue-{shanghai_today().isoformat()}.csv"
    return Response(services.catalogue_csv(filters), mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/catalogue/<int:product_id>")
def product_page(product_id: int):
    """A product's page: public while sellable; its cooperative and reviewers always."""
    product = services.get_product(current_user(), product_id)
    return render_template("certification/product.html", product=product,
                           sellable=services.is_sellable(product),
                           overseer=services.can_oversee(current_user(), product))


@bp.get("/media/products/<name>")
def product_image(name: str):
    """Serve a stored product photo (or thumbnail) of a product the caller may see."""
    path = uploads.stored_path("products", name)
    if path is None or not services.image_visible(current_user(), name):
        abort(404)
    response = send_file(path, mimetype="image/jpeg", max_age=86400)
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response


@bp.get("/certifications/<int:certification_id>/evidence/<int:evidence_id>/file")
@require_login
def evidence_file(certification_id: int, evidence_id: int):
    """Serve an evidence scan (JPEG or re-written PDF) to those who may read the application."""
    application = services.get_application(current_user(), certification_id)
    evidence = db.session.get(Evidence, evidence_id)
    if evidence is None or evidence.certification_id != application.id or not evidence.filename:
        abort(404)
    path = uploads.stored_path("evidence", evidence.filename)
    if path is None:
        abort(404)
    if uploads.is_pdf(evidence.filename):
        # Inline so reviewers read it in the browser's viewer; the sandbox gives the document an
        # opaque origin (no cookies, no same-origin access) should anything in it ever run.
        # Chromium's viewer renders under this policy (checked with Chromium 156).
        response = send_file(path, mimetype="application/pdf", max_age=0,
                             download_name=f"evidence-{evidence.id}.pdf", as_attachment=False)
        response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    else:
        response = send_file(path, mimetype="image/jpeg", max_age=0)
        response.headers["Content-Security-Policy"] = "default-src 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


# ---- cooperatives -------------------------------------------------------------------------


def _own_product(product_id: int) -> Product:
    """Return a product of the signed-in member's cooperative (404 otherwise)."""
    user = current_user()
    product = db.session.get(Product, product_id)
    if product is None or product.cooperative_id != user.cooperative_id:
        raise NotFound("产品不存在")
    return product


def _village_choices(product: Product | None = None) -> dict[str, list[Village]]:
    """Villages a member may pick, by township: their cooperative's county (plus any already chosen)."""
    home = current_user().cooperative.village
    county = home.county
    villages = list(db.session.scalars(sa.select(Village).where(Village.county == county).order_by(Village.id)))
    chosen = [v for v in (product.villages if product else []) if v.county != county]
    # The cooperative's own township first: most products come from the home village's neighbours.
    villages.sort(key=lambda v: v.township != home.township)
    grouped: dict[str, list[Village]] = {}
    for village in chosen + villages:
        grouped.setdefault(f"{village.county}{village.township}", []).append(village)
    return grouped


@bp.get("/my/products")
@require_roles(Role.COOPERATIVE)
def my_products():
    """The member's products: status, reviewers' words, renewals due."""
    user = current_user()
    products = services.cooperative_products(user, user.cooperative_id)
    latest = {p.id: p.applications[-1] for p in products if p.applications}
    events = services.decisions_of([a.id for a in latest.values()])
    said = {}
    for product_id, application in latest.items():
        spoken = [e for e in events[application.id] if e.action in ("approve", "reject", "revoke") and e.comment]
        said[product_id] = spoken[-1] if spoken else None
    return render_template("certification/my_products.html", products=products, latest=latest, said=said,
                           reminders=services.renewal_reminders(products), reminder_days=renewal_reminder_days())


def _product_form(product: Product | None):
    """Create (product None) or edit a product from the page; shared validation with the API."""
    errors: dict = {}
    message = None
    status = 200
    locked = product is not None and services.holds_or_seeks_brand(product)
    if request.method == "POST":
        try:
            data = forms.product_form_data(request.form)
            if product is None:
                product = services.create_product(current_user(), data)
                flash("产品已登记为草稿，可上传图片并申请认定")
            else:
                services.update_product(current_user(), product.id, data)
                flash("产品信息已保存")
            return redirect(url_for("certification.manage_product", product_id=product.id))
        except forms.FormErrors as exc:
            errors, status = exc.fields, 422
        except ValidationError as exc:
            errors, status = exc.messages, 422
        except AppError as exc:
            if exc.status in (403, 404):
                raise
            errors, message, status = exc.fields, exc.message, exc.status
        db.session.rollback()
    return render_template("certification/product_form.html", product=product, errors=errors, message=message,
                           form=request.form if request.method == "POST" else None, locked=locked,
                           village_groups=_village_choices(product), categories=CATEGORY_LABELS,
                           tier_rows=forms.TIER_ROWS), status


@bp.route("/my/products/new", methods=["GET", "POST"])
@require_roles(Role.COOPERATIVE)
def new_product():
    """Register a new product."""
    return _product_form(None)


@bp.route("/my/products/<int:product_id>/edit", methods=["GET", "POST"])
@require_roles(Role.COOPERATIVE)
def edit_product(product_id: int):
    """Change a product (brand-defining fields locked while certified or under review)."""
    return _product_form(_own_product(product_id))


@bp.get("/my/products/<int:product_id>")
@require_roles(Role.COOPERATIVE)
def manage_product(product_id: int):
    """A member's view of one product: photos, certificate, applications and what reviewers said."""
    product = _own_product(product_id)
    applications = list(reversed(product.applications))
    history = services.decisions_of([a.id for a in applications])
    return render_template("certification/manage_product.html", product=product, applications=applications,
                           history=history, actors=services.actor_names(e for es in history.values() for e in es),
                           pending=next((a for a in applications if a.status in IN_PROGRESS), None),
                           reminder_days=renewal_reminder_days(),
                           max_images=services._max_images())


@bp.post("/my/products/<int:product_id>/images")
@require_roles(Role.COOPERATIVE)
def upload_image(product_id: int):
    """Upload a product photo from the page."""
    product = _own_product(product_id)
    try:
        upload = request.files.get("file")
        services.add_product_image(current_user(), product.id, upload.stream if upload and upload.filename else None)
        flash("图片已上传")
    except RequestEntityTooLarge:
        flash("图片上传失败：文件过大")
    except AppError as exc:
        if exc.status in (403, 404):
            raise
        details = "；".join(m for messages in exc.fields.values() for m in messages) if exc.fields else ""
        flash(f"图片上传失败：{details or exc.message}")
    return redirect(url_for("certification.manage_product", product_id=product.id))


@bp.post("/my/products/<int:product_id>/images/<int:image_id>/delete")
@require_roles(Role.COOPERATIVE)
def delete_image(product_id: int, image_id: int):
    """Remove a product photo from the page."""
    product = _own_product(product_id)
    services.delete_product_image(current_user(), product.id, image_id)
    flash("图片已删除")
    return redirect(url_for("certification.manage_product", product_id=product.id))


@bp.route("/my/products/<int:product_id>/apply", methods=["GET", "POST"])
@require_roles(Role.COOPERATIVE)
def apply(product_id: int):
    """Apply for the brand, or renew it, with evidence and optional scans."""
    product = _own_product(product_id)
    errors: dict = {}
    message = None
    status = 200
    if request.method == "POST":
        rows: list[int] = []
        try:
            data, scans, rows = forms.application_form_data(request.form, request.files)
            application = services.submit_application(current_user(), product.id, data, scans)
            flash("申请已提交，等待县级审核")
            return redirect(url_for("certification.application_page", certification_id=application.id))
        except RequestEntityTooLarge:
            message, status = "上传的扫描件过大", 422
        except ValidationError as exc:
            errors, status = forms.errors_by_row(exc.messages, rows), 422
        except AppError as exc:
            if exc.status in (403, 404):
                raise
            errors, message, status = forms.errors_by_row(exc.fields, rows), exc.message, exc.status
        db.session.rollback()
    pending = services.in_progress_application(product.id)
    return render_template("certification/apply.html", product=product, errors=errors, message=message,
                           form=request.form if request.method == "POST" else None, pending=pending,
                           renewal=product.certificate is not None and product.certificate.status == "certified",
                           evidence_types=forms.evidence_type_choices(), rows=forms.EVIDENCE_ROWS,
                           max_pdf_pages=uploads.max_pdf_pages()), status


# ---- reviewers ---------------------------------------------------------------------------


@bp.get("/review")
@require_roles(Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.ADMIN)
def queue():
    """What waits for me, how long it has waited, and what needs a closer look."""
    return render_template("certification/queue.html", entries=services.review_queue(current_user()))


@bp.get("/review/certificates")
@require_roles(Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.ADMIN)
def certificates():
    """Certificates products sell on, soonest expiry first (prefecture reviewers revoke from here)."""
    county = request.args.get("county") if request.args.get("county") in COUNTIES else None
    expiring = request.args.get("expiring") == "1"
    items = services.certificates_overview(current_user(), county=county, expiring_only=expiring)
    return render_template("certification/certificates.html", items=items, county=county, expiring=expiring,
                           counties=COUNTIES, reminder_days=renewal_reminder_days())


def _can_decide(user, application) -> bool:
    """True when the page should offer this user the decision form."""
    decider = services.STAGE_DECIDER.get(application.status)
    return decider is not None and user.has_role(decider)


def _render_application(application, *, errors=None, message=None, status=200):
    """Render an application page: product, evidence with flags, earlier applications, history, forms."""
    user = current_user()
    product = application.product
    others = [a for a in reversed(product.applications) if a.id != application.id]
    events = services.decisions_of([application.id] + [a.id for a in others])
    waiting_since = services.stage_entered_at([application])[application.id]
    today = shanghai_today()
    return render_template(
        "certification/application.html", application=application, product=product, others=others,
        events=events, history=events[application.id],
        actors=services.actor_names(e for es in events.values() for e in es),
        flags={e.id: evidence_flags(e, today) for e in application.evidence},
        can_decide=_can_decide(user, application),
        can_revoke=(user.has_role(Role.PREFECTURE_REVIEWER) and application.status == "certified"
                    and product.certificate_id == application.id),
        waited=utcnow() - waiting_since if application.status in IN_PROGRESS else None,
        errors=errors or {}, message=message,
        form=request.form if request.method == "POST" else None), status


@bp.get("/certifications/<int:certification_id>")
@require_login
def application_page(certification_id: int):
    """An application as its cooperative and its reviewers see it."""
    return _render_application(services.get_application(current_user(), certification_id))


def _refused(certification_id: int, exc):
    """Show the application page again with why the decision or revocation was refused."""
    db.session.rollback()
    application = services.get_application(current_user(), certification_id)
    if isinstance(exc, ValidationError):
        return _render_application(application, errors=exc.messages, message="输入有误", status=422)
    return _render_application(application, errors=exc.fields, message=exc.message, status=exc.status)


@bp.post("/certifications/<int:certification_id>/decision")
@require_roles(Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER)
def decide(certification_id: int):
    """Approve or reject from the application page."""
    try:
        application = services.decide_application(current_user(), certification_id, request.form.to_dict())
    except (ValidationError, Conflict) as exc:
        return _refused(certification_id, exc)
    outcome = {"county_approved": "已通过县级审核，转州级认定",
               "certified": f"已认定，证书编号 {application.certificate_no}",
               "rejected": "已驳回，合作社将看到驳回理由"}
    flash(f"{application.product.name}：{outcome.get(application.status, '已处理')}")
    return redirect(url_for("certification.queue"))


@bp.post("/certifications/<int:certification_id>/revoke")
@require_roles(Role.PREFECTURE_REVIEWER)
def revoke(certification_id: int):
    """Revoke a certificate from its page; the product leaves every listing at once."""
    try:
        application = services.revoke_certificate(current_user(), certification_id, request.form.to_dict())
    except (ValidationError, Conflict) as exc:
        return _refused(certification_id, exc)
    flash(f"证书 {application.certificate_no} 已撤销，产品已下架")
    return redirect(url_for("certification.application_page", certification_id=application.id))
