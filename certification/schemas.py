"""marshmallow schemas for products and certification (input validation and output shapes)."""
from flask import url_for
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from certification import status as derived
from certification.gate import is_sellable
from certification.models import CATEGORY_LABELS, EVIDENCE_TYPE_LABELS, CertificationStatus, ProductStatus
from core.identifiers import gtin14, is_valid_gtin
from core.schemas import ROW_ID, LabelledChoice
from core.timeutil import isoformat
from core.village_registry import COUNTIES

MAX_FEN = 10_000_000_000  # ¥100,000,000: far above any product; stops overflow games.
MAX_QTY = 10_000_000
REQUIRED = {"required": "必填", "null": "不能为空"}
# Evidence kinds whose certificates always carry an expiry date.
DATED_EVIDENCE = ("green_food", "organic", "geographical_indication")


def _int(minimum: int, maximum: int, **kwargs) -> fields.Integer:
    """A JSON integer only: strings, floats (even 12.0) and booleans are refused."""
    return fields.Integer(strict=True, validate=validate.Range(min=minimum, max=maximum,
                                                               error=f"必须是 {minimum} 到 {maximum} 之间的整数"),
                          error_messages={"invalid": "必须是整数", **REQUIRED}, **kwargs)


def _text(minimum: int, maximum: int, **kwargs) -> fields.String:
    """A trimmed string with length bounds and Chinese messages."""
    return fields.String(validate=validate.Length(min=minimum, max=maximum,
                                                  error=f"长度须为 {minimum} 到 {maximum} 个字符"),
                         error_messages={"invalid": "必须是文本", **REQUIRED}, **kwargs)


class TierSchema(Schema):
    """One canteen price tier."""

    class Meta:
        unknown = EXCLUDE

    min_qty = _int(1, MAX_QTY, required=True)
    price_fen = _int(1, MAX_FEN, required=True)


class BulkSchema(Schema):
    """Canteen terms: minimum order quantity and price tiers by quantity."""

    class Meta:
        unknown = EXCLUDE

    moq = _int(1, MAX_QTY, required=True)
    tiers = fields.List(fields.Nested(TierSchema), load_default=list,
                        validate=validate.Length(max=10, error="最多 10 档价格"),
                        error_messages={"invalid": "必须是列表", "null": "不能为空"})

    @validates_schema
    def validate_tiers(self, data, **kwargs):
        """Tiers start at or above the MOQ, rise strictly in quantity and fall strictly in price
        (a bigger order never pays more a unit; below the list price is checked by the service,
        which knows the price a PATCH leaves unchanged)."""
        previous = None
        for index, tier in enumerate(data.get("tiers", [])):
            if tier["min_qty"] < data["moq"]:
                raise ValidationError({"tiers": {index: {"min_qty": ["不能小于起订量 moq"]}}})
            if previous is not None and tier["min_qty"] <= previous["min_qty"]:
                raise ValidationError({"tiers": {index: {"min_qty": ["各档 min_qty 必须严格递增"]}}})
            if previous is not None and tier["price_fen"] >= previous["price_fen"]:
                raise ValidationError({"tiers": {index: {"price_fen": ["各档价格须随数量增加而严格降低"]}}})
            previous = tier


class ProductInputSchema(Schema):
    """What a cooperative sends to create (all required) or change (partial) a product."""

    class Meta:
        unknown = EXCLUDE  # read-only fields such as "status" are ignored, never applied

    name = _text(1, 120, required=True)
    category = LabelledChoice(CATEGORY_LABELS, error="未知的品类", required=True,
                             error_messages={"invalid": "必须是文本", **REQUIRED})
    description = _text(0, 5000, load_default="")
    unit = _text(1, 20, required=True)
    specification = _text(0, 120, load_default="")
    price_fen = _int(1, MAX_FEN, required=True)
    village_ids = fields.List(_int(1, 2**31 - 1), required=True,
                              validate=validate.Length(min=1, max=20, error="须选择 1 到 20 个产地村"),
                              error_messages={"invalid": "必须是村 id 的列表", **REQUIRED})
    gtin = fields.String(allow_none=True, load_default=None,
                         error_messages={"invalid": "GTIN 必须是数字字符串"})
    bulk = fields.Nested(BulkSchema, allow_none=True, load_default=None,
                         error_messages={"type": "必须是对象 {moq, tiers}"})
    # Only an admin acting for a cooperative sends this; members always act for their own.
    cooperative_id = _int(1, 2**31 - 1)

    @validates("gtin")
    def validate_gtin(self, value, **kwargs):
        """A GTIN-8/12/13/14 whose GS1 check digit is right (blank means none)."""
        if value is None or value.strip() == "":
            return
        if not is_valid_gtin(value.strip()):
            raise ValidationError("GTIN 无效：须为 8、12、13 或 14 位数字且校验位正确")

    @post_load
    def normalise(self, data, **kwargs):
        """Trim text, store GTINs as GTIN-14, de-duplicate villages keeping their order."""
        for key in ("name", "unit", "specification", "description"):
            if isinstance(data.get(key), str):
                data[key] = data[key].strip()
        if "name" in data and not data["name"]:
            raise ValidationError({"name": ["不能为空"]})
        if "unit" in data and not data["unit"]:
            raise ValidationError({"unit": ["不能为空"]})
        if "gtin" in data:
            gtin = (data["gtin"] or "").strip()
            data["gtin"] = gtin14(gtin) if gtin else None
        if "village_ids" in data:
            data["village_ids"] = list(dict.fromkeys(data["village_ids"]))
        return data


#: PATCH may leave out any product field, but a ``bulk`` it sends is whole: ``partial=True`` would
#: reach into the nested schema too (marshmallow passes it down) and let ``moq`` go missing.
PRODUCT_PATCH_PARTIAL = tuple(ProductInputSchema._declared_fields)


class EvidenceInputSchema(Schema):
    """One supporting document of an application."""

    class Meta:
        unknown = EXCLUDE

    type = LabelledChoice(EVIDENCE_TYPE_LABELS, error="未知的证明类型", required=True,
                         error_messages={"invalid": "必须是文本", **REQUIRED})
    number = _text(1, 60, required=True)
    issuer = _text(1, 120, required=True)
    valid_until = fields.Date(allow_none=True, load_default=None,
                              error_messages={"invalid": "日期格式须为 YYYY-MM-DD"})

    @validates_schema
    def validate_dated(self, data, **kwargs):
        """三品一标 certificates always have an expiry date; blank numbers and issuers say nothing."""
        errors = {key: ["不能为空"] for key in ("number", "issuer") if not data.get(key, "").strip()}
        if data.get("type") in DATED_EVIDENCE and data.get("valid_until") is None:
            errors["valid_until"] = ["该类证明须填写有效期"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def trim(self, data, **kwargs):
        """Store numbers and issuers without surrounding blanks."""
        return {**data, "number": data["number"].strip(), "issuer": data["issuer"].strip()}


class ApplicationInputSchema(Schema):
    """A certification application: its evidence."""

    class Meta:
        unknown = EXCLUDE

    evidence = fields.List(fields.Nested(EvidenceInputSchema), required=True,
                           validate=validate.Length(min=1, max=10, error="须提交 1 到 10 份证明材料"),
                           error_messages={"invalid": "必须是列表", **REQUIRED})


class DecisionSchema(Schema):
    """A reviewer's decision; rejection must say why."""

    class Meta:
        unknown = EXCLUDE

    decision = fields.String(required=True, validate=validate.OneOf(("approve", "reject"), error="须为 approve 或 reject"),
                             error_messages={"invalid": "必须是文本", **REQUIRED})
    comment = fields.String(load_default="", allow_none=True, validate=validate.Length(max=2000, error="不超过 2000 字"),
                            error_messages={"invalid": "必须是文本"})

    @validates_schema
    def reason_for_rejection(self, data, **kwargs):
        """A rejection without a reason leaves the cooperative nothing to fix."""
        if data.get("decision") == "reject" and not (data.get("comment") or "").strip():
            raise ValidationError({"comment": ["驳回必须填写理由"]})

    @post_load
    def trim(self, data, **kwargs):
        """Store the comment without surrounding blanks (None as empty)."""
        return {**data, "comment": (data.get("comment") or "").strip()}


class RevokeSchema(Schema):
    """A revocation and its reason (quality failure, brand misuse ...)."""

    class Meta:
        unknown = EXCLUDE

    reason = _text(1, 2000, required=True)

    @validates("reason")
    def not_blank(self, value, **kwargs):
        """Whitespace is not a reason."""
        if not value.strip():
            raise ValidationError("撤销必须填写理由")


class ProductQuerySchema(Schema):
    """Filters of the public product list and catalogue."""

    class Meta:
        unknown = EXCLUDE  # page/per_page are read by core.http.page_params

    category = LabelledChoice(CATEGORY_LABELS, error="未知的品类")
    county = fields.String(validate=validate.OneOf(COUNTIES, error="未知的县市"))
    village_id = fields.Integer(validate=ROW_ID, error_messages={"invalid": "必须是整数"})


class CertificationQuerySchema(Schema):
    """Filters of the reviewers' application list."""

    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.OneOf(tuple(s.value for s in CertificationStatus), error="未知的状态"))
    county = fields.String(validate=validate.OneOf(COUNTIES, error="未知的县市"))


# ---- output ----------------------------------------------------------------------------


class VillageBriefSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    township = fields.String()
    county = fields.String()
    zone = fields.String(allow_none=True)


def certificate_brief(certification, today=None) -> dict | None:
    """The ``certification`` object embedded in a product item."""
    if certification is None:
        return None
    return {
        "id": certification.id,
        "certificate_no": certification.certificate_no,
        "valid_from": certification.valid_from.isoformat() if certification.valid_from else None,
        "valid_until": certification.valid_until.isoformat() if certification.valid_until else None,
        "status": derived.certificate_status(certification, today),
        "expires_in_days": derived.expires_in_days(certification, today),
        "renewal_due": derived.renewal_due(certification, today),
    }


class ProductSchema(Schema):
    """A product as the API shows it (``status``, ``certification`` and ``villages`` per contract)."""

    id = fields.Integer()
    name = fields.String()
    category = fields.String(metadata={"enum": list(CATEGORY_LABELS)})
    category_label = fields.String()
    description = fields.String()
    unit = fields.String()
    specification = fields.String()
    price_fen = fields.Integer()
    gtin = fields.String(allow_none=True)
    bulk = fields.Method("get_bulk")
    cooperative_id = fields.Integer()
    cooperative = fields.Method("get_cooperative")
    villages = fields.Nested(VillageBriefSchema, many=True)
    images = fields.Method("get_images")
    status = fields.Method("get_status", metadata={"enum": [s.value for s in ProductStatus]})
    sellable = fields.Method("get_sellable")
    certification = fields.Method("get_certification")
    created_at = fields.Method("get_created_at")
    updated_at = fields.Method("get_updated_at")

    def get_bulk(self, product):
        if product.bulk_moq is None:
            return None
        return {"moq": product.bulk_moq,
                "tiers": [{"min_qty": t.min_qty, "price_fen": t.price_fen} for t in product.bulk_tiers]}

    def get_cooperative(self, product):
        cooperative = product.cooperative
        return {"id": cooperative.id, "name": cooperative.name, "county": cooperative.county}

    def get_images(self, product):
        return [image_item(image) for image in product.images]

    def get_status(self, product):
        return derived.product_status(product)

    def get_sellable(self, product):
        return is_sellable(product)

    def get_certification(self, product):
        return certificate_brief(product.certificate)

    def get_created_at(self, product):
        return isoformat(product.created_at)

    def get_updated_at(self, product):
        return isoformat(product.updated_at)


def image_item(image) -> dict:
    """A product image with the URLs it is served at."""
    return {"id": image.id, "width": image.width, "height": image.height, "position": image.position,
            "url": url_for("certification.product_image", name=image.filename),
            "thumbnail_url": url_for("certification.product_image", name=image.filename[:-4] + "-s.jpg")}


class EvidenceSchema(Schema):
    """An evidence document, with the warnings reviewers should see."""

    id = fields.Integer()
    type = fields.String(metadata={"enum": list(EVIDENCE_TYPE_LABELS)})
    type_label = fields.String()
    number = fields.String()
    issuer = fields.String()
    valid_until = fields.Method("get_valid_until")
    file_url = fields.Method("get_file_url")
    flags = fields.Method("get_flags")

    def get_valid_until(self, evidence):
        return evidence.valid_until.isoformat() if evidence.valid_until else None

    def get_file_url(self, evidence):
        if not evidence.filename:
            return None
        return url_for("certification.evidence_file", certification_id=evidence.certification_id,
                       evidence_id=evidence.id)

    def get_flags(self, evidence):
        return derived.evidence_flags(evidence)


class CertificationSchema(Schema):
    """An application / certificate (the contract's fields plus context for reviewers)."""

    id = fields.Integer()
    product_id = fields.Integer()
    product = fields.Method("get_product")
    status = fields.Method("get_status", metadata={"enum": [s.value for s in CertificationStatus]})
    certificate_no = fields.String(allow_none=True)
    valid_from = fields.Method("get_valid_from")
    valid_until = fields.Method("get_valid_until")
    expires_in_days = fields.Method("get_expires_in_days")
    renewal_due = fields.Method("get_renewal_due")
    current = fields.Method("get_current")
    renews_id = fields.Integer(allow_none=True)
    submitted_at = fields.Method("get_submitted_at")
    decided_at = fields.Method("get_decided_at")
    revoked_reason = fields.String(allow_none=True)
    evidence = fields.Nested(EvidenceSchema, many=True)

    def get_product(self, certification):
        product = certification.product
        return {"id": product.id, "name": product.name, "category": product.category,
                "cooperative_id": product.cooperative_id, "cooperative": product.cooperative.name,
                "county": product.cooperative.county}

    def get_status(self, certification):
        return derived.certificate_status(certification)

    def get_valid_from(self, certification):
        return certification.valid_from.isoformat() if certification.valid_from else None

    def get_valid_until(self, certification):
        return certification.valid_until.isoformat() if certification.valid_until else None

    def get_expires_in_days(self, certification):
        return derived.expires_in_days(certification)

    def get_renewal_due(self, certification):
        return derived.renewal_due(certification)

    def get_current(self, certification):
        # The certificate the product sells on now (a renewal replaces it on approval).
        return certification.product.certificate_id == certification.id

    def get_submitted_at(self, certification):
        return isoformat(certification.submitted_at)

    def get_decided_at(self, certification):
        return isoformat(certification.decided_at)


def history_item(event) -> dict:
    """One audit event as the contract's history entry, plus role and states."""
    return {"action": event.action, "actor_id": event.actor_id, "actor_role": event.actor_role,
            "at": isoformat(event.at), "comment": event.comment,
            "from": event.from_state, "to": event.to_state}


# ---- answers assembled in the API views (described here for the OpenAPI document) ----

class ImageSchema(Schema):
    """A product photo (``image_item``)."""

    id = fields.Integer()
    width = fields.Integer()
    height = fields.Integer()
    position = fields.Integer()
    url = fields.String()
    thumbnail_url = fields.String()


class ProductOutSchema(ProductSchema):
    """A product item; its cooperative and reviewers also see its applications (``api.product_body``)."""

    applications = fields.List(fields.Dict(), metadata={"description": "认定申请（仅合作社与审核员可见）"})
    pending_application = fields.Dict(allow_none=True, metadata={"description": "正在审核的申请（仅合作社与审核员可见）"})


class HistoryItemSchema(Schema):
    """One audit event of an application (``history_item``)."""

    action = fields.String()
    actor_id = fields.Integer(allow_none=True)
    actor_role = fields.String(allow_none=True)
    at = fields.String()
    comment = fields.String(allow_none=True)
    from_ = fields.String(allow_none=True, data_key="from")
    to = fields.String(allow_none=True)


class CertificationOutSchema(CertificationSchema):
    """An application with its audit history (the contract's ``history``)."""

    history = fields.List(fields.Nested(HistoryItemSchema))
