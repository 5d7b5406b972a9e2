"""marshmallow schemas for batches, serials, trace events and scans (marshmallow 4 API)."""
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from core.schemas import ROW_ID
from core.timeutil import shanghai_today
from traceability.gs1 import is_cset82
from traceability.models import COMMITMENT_BASIS_LABELS, MANUAL_BIZ_STEPS

MAX_SERIALS_PER_REQUEST = 10_000


def _required(**extra) -> dict:
    """Chinese messages for a required field of a given kind."""
    return {"required": "必填", "null": "不能为空", **extra}


class BatchCreateSchema(Schema):
    """Input of ``POST /api/v1/products/{id}/batches`` (and the batch form)."""

    lot = fields.String(required=True, error_messages=_required(invalid="必须是文本"))
    village_id = fields.Integer(required=True, strict=True, validate=ROW_ID, error_messages=_required(invalid="必须是整数"))
    produced_on = fields.Date(required=True, error_messages=_required(invalid="日期格式应为 YYYY-MM-DD"))
    expires_on = fields.Date(load_default=None, allow_none=True,
                             error_messages={"invalid": "日期格式应为 YYYY-MM-DD"})
    quantity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=10_000_000, error="必须是 1 到 10000000 之间的整数"),
                              error_messages=_required(invalid="必须是整数"))
    unit = fields.String(load_default=None, allow_none=True,
                         validate=validate.Length(min=1, max=20, error="长度须为 1 到 20"))
    commitment_basis = fields.String(
        load_default="quality_control",
        validate=validate.OneOf(tuple(COMMITMENT_BASIS_LABELS),
                                error="承诺依据须为 quality_control（质量安全控制）、self_test（自行检测）或 entrusted_test（委托检测）"),
    )
    committer = fields.String(load_default=None, allow_none=True,
                              validate=validate.Length(min=1, max=120, error="长度须为 1 到 120"))
    contact_phone = fields.String(load_default=None, allow_none=True,
                                  validate=validate.Regexp(r"^[0-9+\-\s]{5,30}$", error="电话号码格式不正确"))

    @validates("lot")
    def validate_lot(self, value, **kwargs):
        # The lot is GS1 AI (10) in a Digital Link, so it must fit that AI even for products
        # without a GTIN today: a GTIN added later must not make old batches unprintable.
        if not value.strip():
            raise ValidationError("批号不能为空")
        if len(value) > 20 or not is_cset82(value):
            raise ValidationError("批号须为 1–20 个字母、数字或 GS1 允许的符号（如 - . _ /），不含中文和空格")

    @validates("produced_on")
    def validate_produced_on(self, value, **kwargs):
        if value > shanghai_today():
            raise ValidationError("生产日期不能晚于今天")

    @validates_schema
    def validate_expiry(self, data, **kwargs):
        expires_on, produced_on = data.get("expires_on"), data.get("produced_on")
        if expires_on is not None and produced_on is not None and expires_on < produced_on:
            raise ValidationError("保质期截止日不能早于生产日期", field_name="expires_on")


class SerialRequestSchema(Schema):
    count = fields.Integer(required=True, strict=True,
                           validate=validate.Range(min=1, max=MAX_SERIALS_PER_REQUEST,
                                                   error=f"必须是 1 到 {MAX_SERIALS_PER_REQUEST} 之间的整数"),
                           error_messages=_required(invalid="必须是整数"))


class TraceEventCreateSchema(Schema):
    """A shipping, receiving or retail-selling event recorded by the cooperative."""

    biz_step = fields.String(required=True, data_key="type",
                             validate=validate.OneOf(MANUAL_BIZ_STEPS,
                                                     error="类型须为 shipping（发货）、receiving（收货）或 retail_selling（零售）"),
                             error_messages=_required())
    event_time = fields.AwareDateTime(load_default=None, allow_none=True, data_key="occurred_at",
                                      error_messages={"invalid": "时间格式应为带时区的 ISO 8601",
                                                      "naive": "时间须带时区（如 +08:00）"})
    location = fields.String(required=True, validate=validate.Length(min=1, max=120, error="长度须为 1 到 120"),
                             error_messages=_required())
    partner = fields.String(load_default="", validate=validate.Length(max=120, error="最长 120 字"))
    quantity = fields.Integer(load_default=None, allow_none=True, strict=True,
                              validate=validate.Range(min=1, max=10_000_000, error="必须是 1 到 10000000 之间的整数"),
                              error_messages={"invalid": "必须是整数"})
    note = fields.String(load_default="", validate=validate.Length(max=500, error="最长 500 字"))


# ---- answers of the API (``traceability.presenters`` builds them; described here for the OpenAPI document) ----

class TraceEventOutSchema(Schema):
    """One EPCIS-like event (``presenters.event_json``)."""

    id = fields.Integer()
    batch_id = fields.Integer()
    type = fields.String(metadata={"description": "commissioning（赋码）或 shipping、receiving、retail_selling"})
    label = fields.String()
    occurred_at = fields.String(allow_none=True)
    recorded_at = fields.String(allow_none=True)
    location = fields.String(allow_none=True)
    partner = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    note = fields.String(allow_none=True)


class ScanTotalsSchema(Schema):
    batch_code = fields.Integer()
    items = fields.Integer()
    total = fields.Integer()
    first_at = fields.String(allow_none=True)
    last_at = fields.String(allow_none=True)


class BatchOutSchema(Schema):
    """A batch (``presenters.batch_json``): the contract's fields, the 承诺达标合格证, links; details on one batch."""

    id = fields.Integer()
    product_id = fields.Integer()
    product_name = fields.String()
    lot = fields.String()
    village_id = fields.Integer()
    village = fields.Dict(metadata={"description": "{id, name, township, county, zone, zone_label}"})
    produced_on = fields.String(allow_none=True)
    expires_on = fields.String(allow_none=True)
    quantity = fields.Integer()
    available_quantity = fields.Integer()
    unit = fields.String(allow_none=True)
    commitment_basis = fields.String(metadata={"enum": list(COMMITMENT_BASIS_LABELS)})
    compliance_certificate = fields.Dict(metadata={"description": "电子承诺达标合格证的八项内容"})
    trace_url = fields.String(metadata={"description": "带签名的公开溯源地址（有 GTIN 时为 GS1 Digital Link）"})
    qr_png_url = fields.String()
    labels_url = fields.String()
    created_at = fields.String()
    scans = fields.Nested(ScanTotalsSchema)
    serials_count = fields.Integer(metadata={"description": "仅单个批次详情"})
    events = fields.List(fields.Nested(TraceEventOutSchema), metadata={"description": "仅单个批次详情"})


class SerialOutSchema(Schema):
    serial = fields.String()
    trace_url = fields.String()
    scan_count = fields.Integer()
    first_scanned_at = fields.String(allow_none=True)
    last_scanned_at = fields.String(allow_none=True)
    created_at = fields.String()


class IssuedSerialsSchema(Schema):
    """``POST /batches/{id}/serials``: the new serials and their URLs."""

    batch_id = fields.Integer()
    count = fields.Integer()
    items = fields.List(fields.Nested(SerialOutSchema(only=("serial", "trace_url"))))


class ScanOutSchema(Schema):
    id = fields.Integer()
    at = fields.String()
    serial = fields.String(allow_none=True)
    device_class = fields.String(allow_none=True)
    client = fields.String(allow_none=True)
    as_json = fields.Boolean()


class FakeReportsSchema(Schema):
    """``GET /fake-reports``: flagged batches and serials, most reported first, and unverified codes."""

    items = fields.List(fields.Dict(), metadata={"description": "{batch_id, serial, reports, latest_at, reasons, "
                                                                "serial_scans, product, lot}"})
    unverified = fields.List(fields.Dict(), metadata={"description": "{code, reason, note, created_at}"})
