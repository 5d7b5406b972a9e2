"""Products and certification JSON API (``/api/v1``): parse → service → dump."""
from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from certification import services
from certification.models import IN_PROGRESS
from certification.schemas import (
    PRODUCT_PATCH_PARTIAL,
    ApplicationInputSchema,
    CertificationOutSchema,
    CertificationQuerySchema,
    CertificationSchema,
    DecisionSchema,
    ImageSchema,
    ProductInputSchema,
    ProductOutSchema,
    ProductQuerySchema,
    ProductSchema,
    RevokeSchema,
    history_item,
    image_item,
)
from certification.status import certificate_status
from core.auth import current_user, require_login, require_roles
from core.errors import ValidationFailed
from core.http import json_body, list_envelope, page_params
from core.models import Role
from core.openapi import api_doc, api_tag
from core.timeutil import isoformat

bp = Blueprint("certification_api", __name__, url_prefix="/api/v1")
api_tag(bp, "产品与认定", "合作社登记产品、上传照片与证明材料；县、州两级审核认定与撤销")

REVIEWERS = (Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER)


def product_body(product) -> dict:
    """A product item; its overseers also see its applications and the one under review."""
    body = ProductSchema().dump(product)
    if services.can_oversee(current_user(), product):
        applications = product.applications
        body["applications"] = [{"id": a.id, "status": certificate_status(a), "certificate_no": a.certificate_no,
                                 "submitted_at": isoformat(a.submitted_at)} for a in applications]
        pending = next((a for a in applications if a.status in IN_PROGRESS), None)
        body["pending_application"] = {"id": pending.id, "status": pending.status} if pending else None
    return body


def certification_body(application, with_history: bool = True) -> dict:
    """An application with its audit history (the contract's ``history``)."""
    body = CertificationSchema().dump(application)
    if with_history:
        body["history"] = [history_item(event) for event in services.application_history(application.id)]
    return body


def query_args() -> dict:
    """The query string without empty parameters (``?county=`` means no county filter)."""
    return {key: value for key, value in request.args.items() if value != ""}


def uploaded_file(field: str = "file"):
    """Return the multipart upload ``field``; an over-long body is a 422 like any bad file."""
    try:
        upload = request.files.get(field)
    except RequestEntityTooLarge:
        raise ValidationFailed("文件过大", code="file_too_large", fields={field: ["文件过大"]}) from None
    if upload is None or not upload.filename:
        raise ValidationFailed("请以 multipart/form-data 上传文件（字段名 file）", code="file_required",
                               fields={field: ["必填"]})
    return upload.stream


@bp.post("/products")
@api_doc(request=ProductInputSchema, response=ProductOutSchema, status=201, errors=(409,))
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def create_product():
    """Register a draft product (members for their cooperative; admins name ``cooperative_id``)."""
    product = services.create_product(current_user(), json_body())
    return jsonify(product_body(product)), 201


@bp.patch("/products/<int:product_id>")
@api_doc(request=ProductInputSchema(partial=PRODUCT_PATCH_PARTIAL), response=ProductOutSchema, errors=(409,))
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def update_product(product_id: int):
    """Change a product of the caller's cooperative (brand-defining fields locked while certified)."""
    product = services.update_product(current_user(), product_id, json_body())
    return jsonify(product_body(product))


@bp.get("/products")
@api_doc(query=ProductQuerySchema, paged=True, response=ProductSchema, many=True)
def list_products():
    """List products that may be sold now, by category, county or village."""
    filters = ProductQuerySchema().load(query_args())
    page = page_params()
    products, total = services.list_sellable_products(filters, page.offset, page.size)
    return jsonify(list_envelope(ProductSchema(many=True).dump(products), total, page))


@bp.get("/products/<int:product_id>")
@api_doc(response=ProductOutSchema)
def get_product(product_id: int):
    """Return a product: public while sellable; its cooperative and reviewers always."""
    return jsonify(product_body(services.get_product(current_user(), product_id)))


@bp.post("/products/<int:product_id>/images")
@api_doc(upload="file", response=ImageSchema, status=201, errors=(409,))
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def add_product_image(product_id: int):
    """Upload a product photo (multipart field ``file``: JPEG, PNG or WebP)."""
    image = services.add_product_image(current_user(), product_id, uploaded_file())
    return jsonify(image_item(image)), 201


@bp.delete("/products/<int:product_id>/images/<int:image_id>")
@api_doc(response=ProductOutSchema)
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def delete_product_image(product_id: int, image_id: int):
    """Remove a product photo; answers the updated product."""
    return jsonify(product_body(services.delete_product_image(current_user(), product_id, image_id)))


@bp.get("/cooperatives/<int:cooperative_id>/products")
@api_doc(paged=True, response=ProductOutSchema, many=True)
def cooperative_products(cooperative_id: int):
    """A cooperative's products: every status to its overseers, sellable ones to everyone else."""
    products = services.cooperative_products(current_user(), cooperative_id)
    page = page_params()
    window = products[page.offset:page.offset + page.size]
    return jsonify(list_envelope([product_body(p) for p in window], len(products), page))


@bp.post("/products/<int:product_id>/certification")
@api_doc(request=ApplicationInputSchema, response=CertificationOutSchema, status=201, errors=(409,))
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def submit_application(product_id: int):
    """Apply for (or renew) the brand with evidence; 409 while an application is reviewed."""
    application = services.submit_application(current_user(), product_id, json_body())
    return jsonify(certification_body(application)), 201


@bp.get("/certifications")
@api_doc(query=CertificationQuerySchema, paged=True, response=CertificationSchema, many=True)
@require_roles(Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.ADMIN, Role.COOPERATIVE)
def list_certifications():
    """List applications by status: a county reviewer its county, a cooperative its own."""
    filters = CertificationQuerySchema().load(query_args())
    page = page_params()
    applications, total = services.list_applications(current_user(), filters, page.offset, page.size)
    return jsonify(list_envelope([certification_body(a, with_history=False) for a in applications], total, page))


@bp.get("/certifications/<int:certification_id>")
@api_doc(response=CertificationOutSchema, errors=(403,))
@require_login
def get_certification(certification_id: int):
    """Return an application with its history."""
    return jsonify(certification_body(services.get_application(current_user(), certification_id)))


@bp.post("/certifications/<int:certification_id>/decision")
@api_doc(request=DecisionSchema, response=CertificationOutSchema, errors=(409,))
@require_roles(*REVIEWERS)
def decide(certification_id: int):
    """Approve or reject at the current stage: county, then prefecture."""
    application = services.decide_application(current_user(), certification_id, json_body())
    return jsonify(certification_body(application))


@bp.post("/certifications/<int:certification_id>/revoke")
@api_doc(request=RevokeSchema, response=CertificationOutSchema, errors=(409,))
@require_roles(Role.PREFECTURE_REVIEWER)
def revoke(certification_id: int):
    """Revoke a certificate with a reason; the product is delisted at once."""
    application = services.revoke_certificate(current_user(), certification_id, json_body())
    return jsonify(certification_body(application))


@bp.post("/certifications/<int:certification_id>/evidence/<int:evidence_id>/file")
@api_doc(upload="file", response=CertificationOutSchema, errors=(409,))
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def attach_evidence_file(certification_id: int, evidence_id: int):
    """Attach the scan of an evidence document (an image or a PDF) before the county decides."""
    application = services.attach_evidence_file(current_user(), certification_id, evidence_id, uploaded_file())
    return jsonify(certification_body(application))
