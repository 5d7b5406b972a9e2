"""Certification use cases: products, their images, applications, decisions, certificates, catalogue.

Each use case takes the acting user explicitly, checks what that user may do, runs in one
transaction (the only commits of this package are here), writes one audit event per
transition into the shared chain, and announces product changes after the commit.

Who decides what (the contract's "Wrong role or county → 403; wrong stage → 409"):

* Only county and prefecture reviewers decide (anyone else: 403, admins included, so that
  certification always rests on a reviewer's signature).
* A county reviewer outside the product's cooperative's county: 403.
* A reviewer whose role does not decide the application's *current* stage gets 409, not
  403: a prefecture reviewer deciding a ``submitted`` application is early (the county has
  not spoken), a county reviewer deciding a ``county_approved`` one (e.g. a double click)
  is late. Both are "wrong workflow stage"; the role itself is entitled to decide.
"""
import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import aliased, defaultload, selectinload

from certification import uploads
from certification.gate import is_sellable, sellable_clause
from certification.models import (
    CATEGORY_LABELS,
    EVIDENCE_TYPE_LABELS,
    IN_PROGRESS,
    BulkTier,
    Certification,
    CertificationStatus,
    Evidence,
    Product,
    ProductImage,
    ProductStatus,
    product_villages,
)
from certification.schemas import (PRODUCT_PATCH_PARTIAL, ApplicationInputSchema, DecisionSchema, ProductInputSchema,
                                   RevokeSchema)
from certification.status import (  # noqa: F401  (product_status is part of this module's API)
    certificate_status,
    evidence_flags,
    product_status,
    renewal_due,
    renewal_reminder_days,
)
from core.audit import AuditEvent, history_of, record_event
from core.auth import ensure_cooperative_member
from core.db import commit_or_conflict, unique_or_conflict
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.models import Cooperative, Role, User, Village
from core.money import format_yuan
from core.notifications import active_users, notify
from core.signals import notify_products_changed
from core.timeutil import shanghai_today, utcnow

CERTIFICATE_PREFIX = "XXXB"  # 湘西香伴 (Xiang Xi Xiang Ban)
DEFAULT_MAX_IMAGES = 8
# Facts the certificate vouches for: changing one on a product that holds (or is applying for)
# the brand would carry the brand over to something no reviewer saw.
BRAND_FIELDS = ("name", "category", "village_ids", "unit", "specification", "gtin")
BRAND_FIELD_LABELS = {"name": "名称", "category": "品类", "village_ids": "产地村", "unit": "单位",
                      "specification": "规格", "gtin": "GTIN"}
STATUS_LABELS = {
    "draft": "草稿", "submitted": "待县级审核", "county_approved": "待州级认定", "certified": "已认定",
    "rejected": "已驳回", "revoked": "已撤销", "expired": "已过期",
}
ACTION_LABELS = {"submit": "提交申请", "approve": "通过", "reject": "驳回", "revoke": "撤销证书",
                 "attach_file": "上传证明扫描件"}
# Which role decides each open stage, and where approval leads.
STAGE_DECIDER = {
    CertificationStatus.SUBMITTED.value: Role.COUNTY_REVIEWER,
    CertificationStatus.COUNTY_APPROVED.value: Role.PREFECTURE_REVIEWER,
}
APPROVAL_LEADS_TO = {
    CertificationStatus.SUBMITTED.value: CertificationStatus.COUNTY_APPROVED.value,
    CertificationStatus.COUNTY_APPROVED.value: CertificationStatus.CERTIFIED.value,
}


# ---- shared helpers ----------------------------------------------------------------------


def _lock_row(model, pk: int):
    """Lock one row for the rest of the transaction and return it freshly loaded.

    PostgreSQL: ``SELECT ... FOR UPDATE``. SQLite has no row locks and pysqlite only begins a
    transaction at the first write, so a no-op UPDATE takes the database write lock first;
    reads after it cannot be overtaken by another writer.
    """
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(sa.text(f"UPDATE {model.__tablename__} SET id = id WHERE id = :id"), {"id": pk})
    else:
        db.session.execute(sa.select(model.id).where(model.id == pk).with_for_update())
    return db.session.get(model, pk, populate_existing=True)


def can_oversee(user: User | None, product: Product) -> bool:
    """True for those who see a product whatever its status: its cooperative, the reviewers of
    its cooperative's county, prefecture reviewers and admins."""
    if user is None:
        return False
    if user.has_role(Role.ADMIN, Role.PREFECTURE_REVIEWER):
        return True
    if user.has_role(Role.COUNTY_REVIEWER):
        return user.county == product.cooperative.county
    if user.has_role(Role.COOPERATIVE):
        return user.cooperative_id == product.cooperative_id
    return False


def get_product(viewer: User | None, product_id: int) -> Product:
    """Return a product the viewer may see: anyone while sellable, overseers always.

    :raise NotFound: absent, or not visible to this viewer.
    """
    product = db.session.get(Product, product_id)
    if product is None or not (is_sellable(product) or can_oversee(viewer, product)):
        raise NotFound("产品不存在或未通过认定")
    return product


def _product_for_change(actor: User, product_id: int) -> Product:
    """Return a product the actor's cooperative may change (404 if unseen, 403 if not theirs)."""
    product = get_product(actor, product_id)
    ensure_cooperative_member(actor, product.cooperative_id)
    return product


def in_progress_application(product_id: int) -> Certification | None:
    """Return the product's application under review, if any."""
    return db.session.scalar(
        sa.select(Certification).where(Certification.product_id == product_id,
                                       Certification.status.in_(IN_PROGRESS)).limit(1)
    )


def holds_or_seeks_brand(product: Product) -> bool:
    """True while the product sells under a valid certificate or an application is reviewed."""
    return is_sellable(product) or in_progress_application(product.id) is not None


# ---- products ----------------------------------------------------------------------------


def _acting_cooperative(actor: User, requested: int | None) -> int:
    """Return the cooperative a new product belongs to.

    Members always create for their own cooperative; an admin must name one.
    :raise Forbidden: a member naming another cooperative, or a role without product rights.
    :raise ValidationFailed: an admin without ``cooperative_id`` or with an unknown one.
    """
    if actor.has_role(Role.ADMIN):
        if requested is None:
            raise ValidationFailed(fields={"cooperative_id": ["管理员代为登记时必须指定合作社"]})
        if db.session.get(Cooperative, requested) is None:
            raise ValidationFailed(fields={"cooperative_id": ["合作社不存在"]})
        return requested
    if actor.has_role(Role.COOPERATIVE) and actor.cooperative_id is not None:
        if requested is not None and requested != actor.cooperative_id:
            raise Forbidden("只能为本合作社登记产品")
        return actor.cooperative_id
    raise Forbidden("只有合作社成员可以登记产品")


def _villages(ids: list[int]) -> list[Village]:
    """Return the registry villages with these ids, in the given order.

    :raise ValidationFailed: any id is not a registry village (422).
    """
    found = {v.id: v for v in db.session.scalars(sa.select(Village).where(Village.id.in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValidationFailed("产地村不存在", fields={"village_ids": [f"村 {i} 不存在" for i in missing]})
    return [found[i] for i in ids]


def _ensure_gtin_free(gtin: str | None, product_id: int | None = None) -> None:
    """:raise Conflict: another product already carries this GTIN (409)."""
    if gtin is None:
        return
    other = db.session.scalar(sa.select(Product.id).where(Product.gtin == gtin))
    if other is not None and other != product_id:
        raise Conflict("该 GTIN 已被其他产品使用", code="duplicate_gtin", fields={"gtin": ["已被其他产品使用"]})


def _set_bulk(product: Product, bulk: dict | None) -> None:
    """Replace the product's canteen terms (None removes them)."""
    product.bulk_tiers.clear()
    db.session.flush()  # delete old tiers before inserting new ones with the same min_qty
    if bulk is None:
        product.bulk_moq = None
        return
    product.bulk_moq = bulk["moq"]
    product.bulk_tiers.extend(BulkTier(min_qty=t["min_qty"], price_fen=t["price_fen"]) for t in bulk["tiers"])


def _check_tier_prices(price_fen: int, bulk: dict | None, *, blame_price: bool) -> None:
    """Every canteen tier is strictly below the list price (a canteen was once charged ¥999 a unit
    for a ¥168 product).

    :raise ValidationFailed: on the tiers, or on ``price_fen`` when ``blame_price`` (only the
        price changed, under tiers already saved).
    """
    tiers = (bulk or {}).get("tiers") or []
    too_high = {index: tier for index, tier in enumerate(tiers) if tier["price_fen"] >= price_fen}
    if not too_high:
        return
    if blame_price:
        raise ValidationFailed(fields={"price_fen": [
            f"须高于各档团购价（最高 {format_yuan(max(t['price_fen'] for t in tiers))}），或先修改团购价"]})
    raise ValidationFailed(fields={"bulk": {"tiers": {index: {"price_fen": [f"团购价须低于零售价 {format_yuan(price_fen)}"]}
                                                      for index in too_high}}})


def _bulk_of(product: Product) -> dict | None:
    if product.bulk_moq is None:
        return None
    return {"moq": product.bulk_moq, "tiers": [{"min_qty": t.min_qty, "price_fen": t.price_fen}
                                               for t in product.bulk_tiers]}


def _gtin_race():
    """Commit the block; two products given one GTIN at once both pass ``_ensure_gtin_free``, and
    the unique key (at a flush or the commit) refuses the second."""
    return unique_or_conflict("该 GTIN 已被其他产品使用", "duplicate_gtin")


def create_product(actor: User, data: dict) -> Product:
    """Register a draft product for the actor's cooperative (an admin names the cooperative).

    :raise ValidationFailed: invalid fields or unknown villages (422).
    :raise Conflict: the GTIN is already used (409).
    """
    fields = ProductInputSchema().load(data)
    cooperative_id = _acting_cooperative(actor, fields.pop("cooperative_id", None))
    villages = _villages(fields.pop("village_ids"))
    bulk = fields.pop("bulk")
    _check_tier_prices(fields["price_fen"], bulk, blame_price=False)
    _ensure_gtin_free(fields["gtin"])
    with _gtin_race():
        product = Product(cooperative_id=cooperative_id, status=ProductStatus.DRAFT.value, **fields)
        product.villages = villages
        db.session.add(product)
        _set_bulk(product, bulk)
        db.session.flush()
        record_event(subject_type="product", subject_id=product.id, action="create", actor=actor,
                     to_state=ProductStatus.DRAFT.value,
                     data={"name": product.name, "category": product.category, "gtin": product.gtin,
                           "village_ids": [v.id for v in villages], "price_fen": product.price_fen})
    notify_products_changed(product.id)
    return product


def update_product(actor: User, product_id: int, data: dict) -> Product:
    """Change a product of the actor's cooperative.

    Price, description and bulk terms may change at any time. Name, category, origin villages,
    unit, specification and GTIN are what reviewers certified: while the product sells under a
    valid certificate or an application is being reviewed they are locked (409); to sell
    something different, register a new product and apply for it. Once the certificate is
    gone (expired, revoked) or an application was rejected they are free again.

    :raise ValidationFailed: invalid fields (422). :raise Conflict: locked fields or a used GTIN (409).
    """
    product = _product_for_change(actor, product_id)
    fields = ProductInputSchema(partial=PRODUCT_PATCH_PARTIAL).load(data)
    fields.pop("cooperative_id", None)  # a product never moves between cooperatives
    changes: dict[str, tuple] = {}
    for key in ("name", "category", "description", "unit", "specification", "price_fen", "gtin"):
        if key in fields and getattr(product, key) != fields[key]:
            changes[key] = (getattr(product, key), fields[key])
    villages = None
    if "village_ids" in fields:
        villages = _villages(fields["village_ids"])
        if {v.id for v in villages} != {v.id for v in product.villages}:
            changes["village_ids"] = ([v.id for v in product.villages], fields["village_ids"])
    if "bulk" in fields and fields["bulk"] != _bulk_of(product):
        changes["bulk"] = (_bulk_of(product), fields["bulk"])
    if "price_fen" in changes or "bulk" in changes:
        _check_tier_prices(fields.get("price_fen", product.price_fen),
                           fields["bulk"] if "bulk" in changes else _bulk_of(product),
                           blame_price="bulk" not in changes)
    locked = [key for key in BRAND_FIELDS if key in changes]
    if locked and holds_or_seeks_brand(product):
        raise Conflict(
            "已认定或审核中的产品不能修改" + "、".join(BRAND_FIELD_LABELS[k] for k in locked)
            + "；价格、描述和团购条款可随时修改。如需销售不同的产品，请登记新产品并申请认定。",
            code="brand_fields_locked", fields={key: ["认定期间不可修改"] for key in locked})
    if not changes:
        return product
    if "gtin" in changes:
        _ensure_gtin_free(fields["gtin"], product.id)
    with _gtin_race():
        for key in ("name", "category", "description", "unit", "specification", "price_fen", "gtin"):
            if key in changes:
                setattr(product, key, fields[key])
        if "village_ids" in changes:
            product.villages = villages
        if "bulk" in changes:
            _set_bulk(product, fields["bulk"])
        product.updated_at = utcnow()
        record_event(subject_type="product", subject_id=product.id, action="update", actor=actor,
                     from_state=product.status, to_state=product.status,
                     data={key: {"from": old, "to": new} for key, (old, new) in changes.items()})
    notify_products_changed(product.id)
    return product


def _max_images() -> int:
    return int(current_app.config.get("PRODUCT_MAX_IMAGES", DEFAULT_MAX_IMAGES))


def add_product_image(actor: User, product_id: int, upload) -> ProductImage:
    """Validate, re-encode and attach a photo to a product of the actor's cooperative.

    :param upload: a file-like object (werkzeug ``FileStorage`` or bytes stream).
    :raise ValidationFailed: missing, not a JPEG/PNG/WebP image, too large, too many pixels,
        or the product already has the maximum number of photos (422).
    """
    product = _product_for_change(actor, product_id)
    if upload is None:
        raise ValidationFailed("请选择图片文件", code="invalid_image", fields={"file": ["必填"]})
    if len(product.images) >= _max_images():
        raise ValidationFailed(f"每个产品最多 {_max_images()} 张图片", code="too_many_images",
                               fields={"file": [f"最多 {_max_images()} 张"]})
    processed = uploads.process_image(uploads.read_limited(upload))
    name = uploads.store("products", processed)
    position = max((image.position for image in product.images), default=-1) + 1
    image = ProductImage(product=product, filename=name, width=processed.width,
                         height=processed.height, position=position)
    db.session.add(image)
    db.session.flush()
    record_event(subject_type="product", subject_id=product.id, action="add_image", actor=actor,
                 from_state=product.status, to_state=product.status,
                 data={"image_id": image.id, "sha256": processed.sha256})
    commit_or_conflict("图片保存失败，请重试", "image_conflict", cleanup=lambda: uploads.remove("products", name))
    notify_products_changed(product.id)
    return image


def delete_product_image(actor: User, product_id: int, image_id: int) -> Product:
    """Remove a photo of a product of the actor's cooperative (the file goes after the commit).

    :raise NotFound: the image is not this product's.
    """
    product = _product_for_change(actor, product_id)
    image = db.session.get(ProductImage, image_id)
    if image is None or image.product_id != product.id:
        raise NotFound("图片不存在")
    name = image.filename
    product.images.remove(image)
    record_event(subject_type="product", subject_id=product.id, action="remove_image", actor=actor,
                 from_state=product.status, to_state=product.status, data={"image_id": image_id})
    db.session.commit()
    uploads.remove("products", name)
    notify_products_changed(product.id)
    return product


def image_visible(viewer: User | None, name: str) -> bool:
    """True when ``name`` is a stored product photo (or thumbnail) of a product the viewer may see."""
    full = name.replace("-s.jpg", ".jpg")
    product = db.session.scalar(
        sa.select(Product).join(ProductImage, ProductImage.product_id == Product.id).where(ProductImage.filename == full)
    )
    return product is not None and (is_sellable(product) or can_oversee(viewer, product))


def sellable_products_query(*, category: str | None = None, county: str | None = None,
                            village_id: int | None = None, today: date | None = None):
    """Return a SELECT of products that may be sold now, filtered.

    ``county`` matches a product made in that county: any origin village there, or its
    cooperative's home village.
    """
    query = sa.select(Product).where(sellable_clause(today))
    if category:
        query = query.where(Product.category == category)
    if county:
        origin = (sa.select(product_villages.c.product_id)
                  .join(Village, Village.id == product_villages.c.village_id).where(Village.county == county))
        home = (sa.select(Cooperative.id).join(Village, Village.id == Cooperative.village_id)
                .where(Village.county == county))
        query = query.where(sa.or_(Product.id.in_(origin), Product.cooperative_id.in_(home)))
    if village_id is not None:
        query = query.where(Product.id.in_(
            sa.select(product_villages.c.product_id).where(product_villages.c.village_id == village_id)))
    return query


# What a listing shows, loaded in a fixed number of queries; the evidence behind certificates
# and villages' per-year targets are not shown there, so they are not loaded.
LISTING_LOAD = (
    defaultload(Product.certificate).lazyload(Certification.evidence),
    selectinload(Product.villages).lazyload(Village.targets),
    defaultload(Product.cooperative).defaultload(Cooperative.village).lazyload(Village.targets),
)


def list_sellable_products(filters: dict, offset: int, limit: int) -> tuple[list[Product], int]:
    """Return one page of sellable products (oldest first) and the total matching."""
    query = sellable_products_query(**filters)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.with_only_columns(Product.id).subquery()))
    rows = db.session.scalars(query.options(*LISTING_LOAD).order_by(Product.id).offset(offset).limit(limit)).unique()
    return list(rows), total


def cooperative_products(viewer: User | None, cooperative_id: int) -> list[Product]:
    """Return a cooperative's products: all of them to its overseers, the sellable ones to others."""
    cooperative = db.session.get(Cooperative, cooperative_id)
    if cooperative is None:
        raise NotFound("合作社不存在")
    query = (sa.select(Product).where(Product.cooperative_id == cooperative_id)
             .options(selectinload(Product.applications)).order_by(Product.id))
    products = list(db.session.scalars(query).unique())
    return [p for p in products if is_sellable(p) or can_oversee(viewer, p)]


# ---- applications and decisions --------------------------------------------------------


def add_years(start: date, years: int) -> date:
    """Return the same calendar day ``years`` later (29 February → 28 February)."""
    try:
        return start.replace(year=start.year + years)
    except ValueError:
        return start.replace(year=start.year + years, day=28)


def certificate_validity(today: date | None = None) -> tuple[date, date]:
    """Return (valid_from, valid_until) of a certificate issued today.

    ``CERTIFICATE_VALIDITY_YEARS`` full years, both ends inclusive: issued 2026-11-29 for three
    years, it is valid through 2029-11-28 and expired on 2029-11-29.
    """
    start = today or shanghai_today()
    years = int(current_app.config.get("CERTIFICATE_VALIDITY_YEARS", 3))
    return start, add_years(start, years) - timedelta(days=1)


def certificate_number(certification: Certification) -> str:
    """Return the certificate number, e.g. ``XXXB-2026-000123``.

    Built from the application's id, so it is unique without a counter that two concurrent
    approvals could race for (numbers skip the ids of applications that were not certified).
    """
    return f"{CERTIFICATE_PREFIX}-{certification.valid_from.year}-{certification.id:06d}"


def submit_application(actor: User, product_id: int, data: dict, evidence_files: dict | None = None) -> Certification:
    """Apply for the brand (or renew it) for a product of the actor's cooperative.

    A product that sells under a valid certificate keeps selling on it while the renewal is
    reviewed. ``evidence_files`` maps an evidence index to an uploaded scan (a picture or a PDF).

    :raise ValidationFailed: invalid evidence or scan (422).
    :raise Conflict: an application of this product is already being reviewed (409).
    """
    product = _product_for_change(actor, product_id)
    fields = ApplicationInputSchema().load(data)
    scans = {}
    for index, upload in (evidence_files or {}).items():
        if not 0 <= index < len(fields["evidence"]):
            raise ValidationFailed(fields={f"evidence.{index}.file": ["没有对应的证明材料"]})
        field = f"evidence.{index}.file"
        scans[index] = uploads.process_evidence(uploads.read_limited(upload, field), field)
    product = _lock_row(Product, product.id)
    if in_progress_application(product.id) is not None:
        raise Conflict("该产品已有审核中的申请，请等待审核结果", code="application_in_progress")
    current = product.certificate
    renews = current if current is not None and current.status == CertificationStatus.CERTIFIED.value else None
    application = Certification(product=product, status=CertificationStatus.SUBMITTED.value,
                                renews_id=renews.id if renews else None, submitted_at=utcnow())
    stored: list[str] = []
    try:
        for index, item in enumerate(fields["evidence"]):
            filename = None
            if index in scans:
                filename = uploads.store("evidence", scans[index])
                stored.append(filename)
            application.evidence.append(Evidence(type=item["type"], number=item["number"], issuer=item["issuer"],
                                                 valid_until=item["valid_until"], filename=filename))
        db.session.add(application)
        product.status = ProductStatus.SUBMITTED.value
        db.session.flush()
        _notify_submitted(product, application, renews)
        record_event(
            subject_type="certification", subject_id=application.id, action="submit", actor=actor,
            from_state=None, to_state=CertificationStatus.SUBMITTED.value,
            comment=f"续期申请（原证书 {renews.certificate_no}）" if renews else "",
            data={"product_id": product.id, "renews_id": application.renews_id,
                  "evidence": [{"type": e["type"], "number": e["number"], "issuer": e["issuer"],
                                "valid_until": e["valid_until"].isoformat() if e["valid_until"] else None,
                                "sha256": scans[i].sha256 if i in scans else None}
                               for i, e in enumerate(fields["evidence"])]},
        )
    except Exception:
        db.session.rollback()
        for name in stored:
            uploads.remove("evidence", name)
        raise
    commit_or_conflict("该产品已有审核中的申请", "application_in_progress",
                       cleanup=lambda: [uploads.remove("evidence", name) for name in stored])
    return application


def attach_evidence_file(actor: User, certification_id: int, evidence_id: int, upload) -> Certification:
    """Attach (or replace) the scan (a picture or a PDF) of one evidence document while the county
    has not decided.

    :raise ValidationFailed: not an acceptable picture or PDF (422).
    :raise Conflict: the application has left the ``submitted`` stage (409).
    """
    application = get_application(actor, certification_id)
    ensure_cooperative_member(actor, application.product.cooperative_id)
    evidence = db.session.get(Evidence, evidence_id)
    if evidence is None or evidence.certification_id != application.id:
        raise NotFound("证明材料不存在")
    if upload is None:
        raise ValidationFailed("请选择扫描件", code="invalid_image", fields={"file": ["必填"]})
    processed = uploads.process_evidence(uploads.read_limited(upload))
    application = _lock_row(Certification, application.id)
    if application.status != CertificationStatus.SUBMITTED.value:
        raise Conflict("县级审核后不能再修改证明材料", code="wrong_stage")
    name = uploads.store("evidence", processed)
    previous = evidence.filename
    evidence.filename = name
    record_event(subject_type="certification", subject_id=application.id, action="attach_file", actor=actor,
                 from_state=application.status, to_state=application.status,
                 data={"evidence_id": evidence.id, "sha256": processed.sha256})
    commit_or_conflict("保存失败，请重试", "conflict", cleanup=lambda: uploads.remove("evidence", name))
    uploads.remove("evidence", previous)
    return application


def get_application(viewer: User, certification_id: int) -> Certification:
    """Return an application the viewer may read.

    Prefecture reviewers and admins read all; a county reviewer reads its county's (another
    county's: 403, as for deciding); a cooperative reads its own; anyone else gets 404.
    """
    application = db.session.get(Certification, certification_id)
    if application is None:
        raise NotFound("申请不存在")
    product = application.product
    if viewer.has_role(Role.ADMIN, Role.PREFECTURE_REVIEWER):
        return application
    if viewer.has_role(Role.COUNTY_REVIEWER):
        if viewer.county != product.cooperative.county:
            raise Forbidden("只能查看和审核本县合作社的申请", code="wrong_county")
        return application
    if viewer.has_role(Role.COOPERATIVE) and viewer.cooperative_id == product.cooperative_id:
        return application
    raise NotFound("申请不存在")


def application_history(certification_id: int) -> list[AuditEvent]:
    """Return the application's audit events, oldest first."""
    return history_of("certification", certification_id)


def decide_application(actor: User, certification_id: int, data: dict) -> Certification:
    """Approve or reject an application at its current stage (see the module docstring for 403/409).

    :raise Forbidden: not a reviewer, or a county reviewer of another county (403).
    :raise ValidationFailed: bad decision, or a rejection without a reason (422).
    :raise Conflict: the application is not at a stage the actor's role decides (409).
    """
    if not actor.has_role(Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER):
        raise Forbidden("只有县级审核员和州级认定员可以作出认定决定")
    application = get_application(actor, certification_id)
    fields = DecisionSchema().load(data)
    _lock_row(Product, application.product_id)
    application = _lock_row(Certification, application.id)
    stage = application.status
    decider = STAGE_DECIDER.get(stage)
    if decider is None:
        raise Conflict(f"该申请已{STATUS_LABELS.get(certificate_status(application), stage)}，不能再作决定",
                       code="wrong_stage")
    if not actor.has_role(decider):
        message = ("该申请尚待县级审核，县级通过后才能州级认定" if decider is Role.COUNTY_REVIEWER
                   else "该申请已通过县级审核，正等待州级认定")
        raise Conflict(message, code="wrong_stage")
    product = application.product
    now = utcnow()
    data_out = {"product_id": product.id}
    if fields["decision"] == "reject":
        new = CertificationStatus.REJECTED.value
        application.decided_at = now
    else:
        new = APPROVAL_LEADS_TO[stage]
        if new == CertificationStatus.CERTIFIED.value:
            application.valid_from, application.valid_until = certificate_validity()
            application.decided_at = now
            db.session.flush()
            application.certificate_no = certificate_number(application)
            data_out.update(certificate_no=application.certificate_no,
                            valid_from=application.valid_from.isoformat(),
                            valid_until=application.valid_until.isoformat(),
                            replaces_id=product.certificate_id)
            product.certificate = application
    application.status = new
    product.status = new
    _notify_decision(product, application, stage, new, fields["comment"])
    record_event(subject_type="certification", subject_id=application.id, action=fields["decision"],
                 actor=actor, from_state=stage, to_state=new, comment=fields["comment"], data=data_out)
    commit_or_conflict("证书编号冲突，请重试", "conflict")
    if new == CertificationStatus.CERTIFIED.value:
        notify_products_changed(product.id)
    return application


def revoke_certificate(actor: User, certification_id: int, data: dict) -> Certification:
    """Revoke a product's current certificate; the product is delisted on the next request.

    A renewal under review is closed with it (rejected, citing the revocation): a product whose
    brand was withdrawn must apply afresh.

    :raise Forbidden: not a prefecture reviewer (403).
    :raise ValidationFailed: no reason (422).
    :raise Conflict: not a certificate, or not the product's current one (409).
    """
    if not actor.has_role(Role.PREFECTURE_REVIEWER):
        raise Forbidden("只有州级认定员可以撤销证书")
    application = get_application(actor, certification_id)
    fields = RevokeSchema().load(data)
    reason = fields["reason"].strip()
    product = _lock_row(Product, application.product_id)
    application = _lock_row(Certification, application.id)
    if application.status != CertificationStatus.CERTIFIED.value:
        raise Conflict(f"只能撤销已认定的证书（当前：{STATUS_LABELS.get(application.status, application.status)}）",
                       code="wrong_stage")
    if product.certificate_id != application.id:
        raise Conflict("该证书已被续期后的新证书取代，请撤销产品当前的证书", code="not_current_certificate")
    was = certificate_status(application)
    now = utcnow()
    application.status = CertificationStatus.REVOKED.value
    application.revoked_reason = reason
    product.status = ProductStatus.REVOKED.value
    record_event(subject_type="certification", subject_id=application.id, action="revoke", actor=actor,
                 from_state=was, to_state=CertificationStatus.REVOKED.value, comment=reason,
                 data={"product_id": product.id, "certificate_no": application.certificate_no})
    pending = in_progress_application(product.id)
    if pending is not None:
        stage = pending.status
        pending.status = CertificationStatus.REJECTED.value
        pending.decided_at = now
        record_event(subject_type="certification", subject_id=pending.id, action="reject", actor=actor,
                     from_state=stage, to_state=CertificationStatus.REJECTED.value,
                     comment=f"所依据的证书 {application.certificate_no} 已被撤销：{reason}",
                     data={"product_id": product.id, "automatic": True, "revoked_id": application.id})
    notify(active_users(Role.COOPERATIVE, cooperative_ids=[product.cooperative_id]), "certification_decision",
           f"“{product.name}”的认定证书已被撤销",
           f"州级认定员撤销了证书 {application.certificate_no}，产品已下架。撤销理由：{reason}"
           + ("\n审核中的续期申请已一并关闭。" if pending is not None else ""),
           f"/certifications/{application.id}")
    db.session.commit()
    notify_products_changed(product.id)
    return application


def _notify_submitted(product: Product, application: Certification, renews: Certification | None) -> None:
    """Tell the county's reviewers that an application waits for them (caller's transaction)."""
    cooperative = product.cooperative
    notify(active_users(Role.COUNTY_REVIEWER, county=cooperative.county), "application_waiting",
           f"待县级审核：{product.name}",
           f"{cooperative.name}提交了“{product.name}”的{'续期' if renews else '认定'}申请，等待县级审核。",
           f"/certifications/{application.id}")


def _notify_decision(product: Product, application: Certification, stage: str, new: str, comment: str) -> None:
    """Tell the cooperative what was decided, and the prefecture when the county passed it on."""
    level = "县级审核" if stage == CertificationStatus.SUBMITTED.value else "州级认定"
    if new == CertificationStatus.REJECTED.value:
        title, body = f"“{product.name}”未通过{level}", f"{level}未通过。理由：{comment}"
    elif new == CertificationStatus.CERTIFIED.value:
        title = f"“{product.name}”已获湘西香伴品牌认定"
        body = (f"证书编号 {application.certificate_no}，有效期 {application.valid_from.isoformat()} 至 "
                f"{application.valid_until.isoformat()}。现在可以登记批次、生成溯源码并上架销售。")
    else:
        title, body = f"“{product.name}”已通过县级审核", "申请已转州级认定，请留意认定结果。"
    if comment and new != CertificationStatus.REJECTED.value:
        body += f"\n审核意见：{comment}"
    link = f"/certifications/{application.id}"
    notify(active_users(Role.COOPERATIVE, cooperative_ids=[product.cooperative_id]), "certification_decision",
           title, body, link)
    if new == CertificationStatus.COUNTY_APPROVED.value:
        notify(active_users(Role.PREFECTURE_REVIEWER), "application_waiting", f"待州级认定：{product.name}",
               f"{product.cooperative.name}的“{product.name}”已通过{product.cooperative.county}县级审核，等待州级认定。",
               link)


def applications_query(viewer: User, *, status: str | None = None, county: str | None = None,
                       today: date | None = None):
    """Return a SELECT of the applications the viewer may list, filtered by (derived) status.

    County reviewers see their county only; cooperatives their own; prefecture and admin all.
    """
    today = today or shanghai_today()
    query = (sa.select(Certification).join(Product, Product.id == Certification.product_id)
             .join(Cooperative, Cooperative.id == Product.cooperative_id)
             .join(Village, Village.id == Cooperative.village_id))
    if viewer.has_role(Role.COUNTY_REVIEWER):
        query = query.where(Village.county == viewer.county)
    elif viewer.has_role(Role.COOPERATIVE):
        query = query.where(Product.cooperative_id == viewer.cooperative_id)
    elif not viewer.has_role(Role.ADMIN, Role.PREFECTURE_REVIEWER):
        raise Forbidden("无权查看认定申请")
    if county:
        query = query.where(Village.county == county)
    if status == CertificationStatus.EXPIRED.value:
        query = query.where(Certification.status == CertificationStatus.CERTIFIED.value,
                            Certification.valid_until < today)
    elif status == CertificationStatus.CERTIFIED.value:
        query = query.where(Certification.status == status, Certification.valid_until >= today)
    elif status:
        query = query.where(Certification.status == status)
    return query


def list_applications(viewer: User, filters: dict, offset: int, limit: int) -> tuple[list[Certification], int]:
    """Return one page of applications the viewer may list (oldest first) and the total."""
    query = applications_query(viewer, **filters)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.order_by(Certification.id).offset(offset).limit(limit)).unique().all()
    return list(rows), total


def stage_entered_at(applications: list[Certification]) -> dict[int, datetime]:
    """Return when each application entered its current stage (its latest audit event)."""
    ids = [a.id for a in applications]
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(AuditEvent.subject_id, sa.func.max(AuditEvent.at))
        .where(AuditEvent.subject_type == "certification", AuditEvent.subject_id.in_(ids),
               AuditEvent.action != "attach_file")
        .group_by(AuditEvent.subject_id)
    )
    entered = {a.id: a.submitted_at for a in applications}
    entered.update({subject_id: at for subject_id, at in rows if at is not None})
    return entered


def decisions_of(application_ids: list[int]) -> dict[int, list[AuditEvent]]:
    """Return each application's audit events (oldest first), for many applications in one query."""
    result: dict[int, list[AuditEvent]] = {i: [] for i in application_ids}
    if not application_ids:
        return result
    for event in db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.subject_type == "certification",
                                    AuditEvent.subject_id.in_(application_ids)).order_by(AuditEvent.id)
    ):
        result[event.subject_id].append(event)
    return result


def actor_names(events) -> dict[int, str]:
    """Return display names of the people behind audit events, in one query."""
    ids = {event.actor_id for event in events if event.actor_id is not None}
    if not ids:
        return {}
    return dict(db.session.execute(sa.select(User.id, User.display_name).where(User.id.in_(ids))).all())


@dataclass
class QueueEntry:
    """One application waiting for the viewer, with what the queue shows about it."""

    application: Certification
    waiting_since: datetime
    flags: int
    earlier: int

    @property
    def waited(self) -> timedelta:
        return utcnow() - self.waiting_since


def review_queue(viewer: User) -> list[QueueEntry]:
    """Return what waits for the viewer, longest-waiting first.

    County reviewer: its county's ``submitted``; prefecture reviewer: ``county_approved``;
    admin (read-only): both stages.
    """
    if viewer.has_role(Role.COUNTY_REVIEWER):
        stages = [CertificationStatus.SUBMITTED.value]
    elif viewer.has_role(Role.PREFECTURE_REVIEWER):
        stages = [CertificationStatus.COUNTY_APPROVED.value]
    elif viewer.has_role(Role.ADMIN):
        stages = list(IN_PROGRESS)
    else:
        raise Forbidden("无权查看审核队列")
    query = applications_query(viewer).where(Certification.status.in_(stages)).options(
        selectinload(Certification.evidence))
    applications = list(db.session.scalars(query).unique())
    entered = stage_entered_at(applications)
    earlier = dict(db.session.execute(
        sa.select(Certification.product_id, sa.func.count(Certification.id))
        .where(Certification.product_id.in_({a.product_id for a in applications}))
        .group_by(Certification.product_id)
    ).all()) if applications else {}
    today = shanghai_today()
    entries = [QueueEntry(a, entered[a.id], sum(len(evidence_flags(e, today)) for e in a.evidence),
                          earlier.get(a.product_id, 1) - 1) for a in applications]
    return sorted(entries, key=lambda entry: entry.waiting_since)


def certificates_overview(viewer: User, *, county: str | None = None, expiring_only: bool = False) -> list[Certification]:
    """Return the certificates products currently sell on (or last sold on), soonest expiry first."""
    query = applications_query(viewer, county=county).where(
        Certification.status == CertificationStatus.CERTIFIED.value,
        Product.certificate_id == Certification.id)
    if expiring_only:
        query = query.where(Certification.valid_until <= shanghai_today() + timedelta(days=renewal_reminder_days()))
    return list(db.session.scalars(query.order_by(Certification.valid_until, Certification.id)).unique())


def renewal_reminders(products: list[Product]) -> list[Product]:
    """Return the products whose certificate is due for renewal and no renewal is under way."""
    due = []
    for product in products:
        certificate = product.certificate
        if certificate is None or not renewal_due(certificate):
            continue
        if any(a.status in IN_PROGRESS for a in product.applications):
            continue
        due.append(product)
    return due


# ---- catalogue -------------------------------------------------------------------------


CSV_HEADER = ("产品编号", "产品名称", "品类", "规格", "单位", "价格（元）", "生产者", "统一社会信用代码",
              "所在县市", "产地村", "证书编号", "有效期起", "有效期至")


def _csv_safe(value) -> str:
    """Neutralise spreadsheet formulas (=, +, -, @) in text cells."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def catalogue_csv(filters: dict) -> str:
    """Return the sellable catalogue (filtered) as CSV text with a UTF-8 BOM, for Excel.

    Read with two plain SELECTs rather than ORM objects: the whole catalogue is exported at
    once, and building tens of thousands of objects would cost seconds.
    """
    ids = sellable_products_query(**filters).with_only_columns(Product.id)
    home = aliased(Village)
    rows = db.session.execute(
        sa.select(Product.id, Product.name, Product.category, Product.specification, Product.unit,
                  Product.price_fen, Cooperative.name, Cooperative.credit_code, home.county,
                  Certification.certificate_no, Certification.valid_from, Certification.valid_until)
        .join(Cooperative, Cooperative.id == Product.cooperative_id)
        .join(home, home.id == Cooperative.village_id)
        .join(Certification, Certification.id == Product.certificate_id)
        .where(Product.id.in_(ids)).order_by(Product.id)
    ).all()
    origins: dict[int, list[str]] = {}
    for product_id, county, township, name in db.session.execute(
        sa.select(product_villages.c.product_id, Village.county, Village.township, Village.name)
        .join(Village, Village.id == product_villages.c.village_id)
        .where(product_villages.c.product_id.in_(ids)).order_by(product_villages.c.product_id, Village.id)
    ):
        origins.setdefault(product_id, []).append(f"{county}{township}{name}")
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for (product_id, name, category, specification, unit, price_fen, producer, credit_code, county,
         certificate_no, valid_from, valid_until) in rows:
        yuan, fen = divmod(price_fen, 100)
        writer.writerow([_csv_safe(v) for v in (
            product_id, name, CATEGORY_LABELS.get(category, category), specification, unit, f"{yuan}.{fen:02d}",
            producer, credit_code, county, "；".join(origins.get(product_id, [])),
            certificate_no, valid_from.isoformat(), valid_until.isoformat(),
        )])
    return out.getvalue()


def evidence_type_label(code: str) -> str:
    """Chinese label of an evidence type."""
    return EVIDENCE_TYPE_LABELS.get(code, code)
