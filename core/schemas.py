"""marshmallow schemas for the kernel's resources (marshmallow 3+/4 API)."""
import re
from decimal import Decimal

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, pre_load, validates, validates_schema

from core.identifiers import ID_MAX, is_valid_credit_code
from core.passwords import password_problems
from core.models import ROLE_VALUES
from core.timeutil import isoformat, shanghai_today
from core.village_registry import COUNTIES, ZONE_LABELS

NOT_BLANK = validate.Length(min=1, error="不能为空")
#: Every id a caller sends: past ``ID_MAX`` it names no row and would fail in the database.
ROW_ID = validate.Range(min=1, max=ID_MAX, error=f"编号须为 1 到 {ID_MAX} 之间的整数")


class CredentialsSchema(Schema):
    email = fields.Email(required=True, error_messages={"required": "必填", "invalid": "邮箱格式不正确"})
    password = fields.String(required=True, validate=NOT_BLANK, error_messages={"required": "必填"})


class RegisterSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254, error="邮箱过长（最多 254 个字符）"),
                         error_messages={"required": "必填", "invalid": "邮箱格式不正确"})
    password = fields.String(required=True, load_only=True, error_messages={"required": "必填"})
    display_name = fields.String(required=True, validate=validate.Length(min=1, max=100, error="长度须为 1 到 100"),
                                 error_messages={"required": "必填"})

    @validates_schema(skip_on_field_errors=False)
    def validate_password_rule(self, data, **kwargs):
        """Length, the common-password list and the e-mail address (``core.passwords``)."""
        if "password" in data:
            problems = password_problems(data["password"], data.get("email"))
            if problems:
                raise ValidationError(problems, field_name="password")


class PasswordChangeSchema(Schema):
    """``{"current_password", "new_password"}``: the new one obeys the password rule."""

    current_password = fields.String(required=True, load_only=True, validate=NOT_BLANK,
                                     error_messages={"required": "必填"})
    new_password = fields.String(required=True, load_only=True, error_messages={"required": "必填"})


class StrictBoolean(fields.Boolean):
    """JSON true or false only (not 0, 1 or "yes")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class UserUpdateSchema(Schema):
    """What an administrator (or a county reviewer, for its cooperatives' logins) may change."""

    is_active = StrictBoolean(error_messages={"invalid": "须为 true 或 false"})
    #: Canteen buyers only: approves its unit's orders above the unit's threshold (admins only).
    is_approver = StrictBoolean(error_messages={"invalid": "须为 true 或 false"})
    display_name = fields.String(validate=validate.Length(min=1, max=100, error="长度须为 1 到 100"))
    reason = fields.String(load_default="", validate=validate.Length(max=500, error="原因过长"))


class UserSchema(Schema):
    """The ``/me`` shape fixed by the contract, plus the display name."""

    id = fields.Integer()
    email = fields.String()
    display_name = fields.String()
    role = fields.String()
    county = fields.String(allow_none=True)
    cooperative_id = fields.Integer(allow_none=True)
    budget_unit_id = fields.Integer(allow_none=True)


class AccountSchema(UserSchema):
    """An account as the account pages and ``/api/v1/users`` show it to those who manage it."""

    is_active = fields.Boolean()
    is_approver = fields.Boolean()
    created_at = fields.Method("get_created_at")

    def get_created_at(self, user):
        return isoformat(user.created_at)


class VillageSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    township = fields.String()
    county = fields.String()
    zone = fields.String(allow_none=True)
    zone_label = fields.Method("get_zone_label")
    sales_target_fen = fields.Method("get_target")

    def get_zone_label(self, village):
        return ZONE_LABELS.get(village.zone)

    def get_target(self, village):
        # The target in force this (Asia/Shanghai) year, honouring per-year overrides.
        return village.target_for(shanghai_today().year)


#: ¥1 亿 a year for one village: far above any plausible target, far inside BIGINT.
MAX_TARGET_FEN = 10_000_000_000


class VillageTargetSchema(Schema):
    """A village's sales target for one year: ``{"target_fen": 20000000, "reason": "..."}``."""

    target_fen = fields.Integer(required=True, strict=True,
                                validate=validate.Range(min=0, max=MAX_TARGET_FEN, error="须在 0 到 1 亿元之间"),
                                error_messages={"required": "必填", "invalid": "必须是整数（分）"})
    reason = fields.String(load_default="", validate=validate.Length(max=500, error="原因过长"))


class VillageTargetOutSchema(Schema):
    """One year's target as the API answers it."""

    village_id = fields.Integer()
    year = fields.Integer()
    target_fen = fields.Integer()
    overridden = fields.Boolean()


class VillageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # page/per_page and future parameters are not filters

    county = fields.String(validate=validate.OneOf(COUNTIES, error="未知的县市"))
    township = fields.String()
    zone = fields.String(validate=validate.OneOf(tuple(ZONE_LABELS), error="未知的分区"))
    q = fields.String()
    year = fields.Integer(validate=validate.Range(min=2000, max=2100))


class CooperativeSchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=2, max=120, error="长度须为 2 到 120"),
                         error_messages={"required": "必填"})
    credit_code = fields.String(required=True, error_messages={"required": "必填"})
    village_id = fields.Integer(required=True, validate=ROW_ID, error_messages={"required": "必填", "invalid": "必须是整数"})
    contact_name = fields.String(required=True, validate=validate.Length(min=1, max=50, error="长度须为 1 到 50"),
                                 error_messages={"required": "必填"})
    contact_phone = fields.String(required=True,
                                  validate=validate.Regexp(r"^[0-9+\-\s]{5,30}$", error="电话号码格式不正确"),
                                  error_messages={"required": "必填"})
    county = fields.String(dump_only=True)
    village = fields.Nested(VillageSchema, dump_only=True, only=("id", "name", "township", "county", "zone"))
    created_at = fields.Method("get_created_at", dump_only=True)

    @validates("credit_code")
    def validate_credit_code(self, value, **kwargs):
        if not is_valid_credit_code(value):
            raise ValidationError("统一社会信用代码无效（须为 18 位且校验位正确，GB 32100-2015）")

    def get_created_at(self, cooperative):
        return isoformat(cooperative.created_at)


class UserCreateSchema(RegisterSchema):
    """Admin/CLI creation of any role, with its scope. ``send_password_link``: e-mail the account a
    one-time link to choose its own password; ``password`` may then be left out."""

    password = fields.String(load_only=True)  # required unless a link is sent (below)
    send_password_link = StrictBoolean(load_default=False, load_only=True,
                                       error_messages={"invalid": "须为 true 或 false"})
    role = fields.String(required=True, validate=validate.OneOf(ROLE_VALUES, error="未知的角色"))
    county = fields.String(allow_none=True, validate=validate.OneOf(COUNTIES, error="未知的县市"))
    cooperative_id = fields.Integer(allow_none=True, validate=ROW_ID)
    budget_unit_id = fields.Integer(allow_none=True, validate=ROW_ID)
    is_approver = StrictBoolean(load_default=False, error_messages={"invalid": "须为 true 或 false"})

    @pre_load
    def blank_password_with_a_link(self, data, **kwargs):
        """With a link the owner chooses the password: an empty one (a form's blank box) was not given."""
        if isinstance(data, dict) and data.get("send_password_link") is True and not data.get("password"):
            data = {key: value for key, value in data.items() if key != "password"}
        return data

    @validates_schema(skip_on_field_errors=False)
    def password_unless_link(self, data, **kwargs):
        if "password" not in data and not data.get("send_password_link"):
            raise ValidationError("必填", field_name="password")


class LabelledChoice(fields.String):
    """A code from a {code: 中文标签} table; the Chinese label is accepted too and loads as its code.

    Clients see codes ("tea") in responses but people type labels ("茶叶"); both name one value.
    The table is passed in so core stays free of domain vocabularies.
    """

    def __init__(self, labels: dict[str, str], *, error: str, **kwargs):
        self.labels = dict(labels)
        self._by_label = {label: code for code, label in self.labels.items()}
        choices = "、".join(f"{code}（{label}）" for code, label in self.labels.items())
        self.choice_error = f"{error}，可选：{choices}"
        kwargs.setdefault("metadata", {})
        kwargs["metadata"] = {"enum": list(self.labels), **kwargs["metadata"]}
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if text in self.labels:
            return text
        if text in self._by_label:
            return self._by_label[text]
        raise ValidationError(self.choice_error)


class ShareString(fields.Field):
    """A ratio given as a decimal string between "0" and "1" with at most 4 places."""

    _pattern = re.compile(r"^(0(\.\d{1,4})?|1(\.0{1,4})?)$")

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not self._pattern.match(value):
            raise ValidationError('须为 0 到 1 之间、最多 4 位小数的字符串，如 "0.10"')
        return Decimal(value)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        value = Decimal(value)
        # Stored "0.1000" reads back as "0.10"; extra places only when they matter ("0.125").
        return f"{value:.2f}" if value == round(value, 2) else format(value.normalize(), "f")


class BudgetUnitSchema(Schema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=2, max=120, error="长度须为 2 到 120"),
                         error_messages={"required": "必填"})
    annual_canteen_budget_fen = fields.Integer(required=True, strict=True,
                                               validate=validate.Range(min=0, error="不能为负数"),
                                               error_messages={"required": "必填", "invalid": "必须是整数（分）"})
    # A decimal string ("0.10") so no float ever touches a share of public money.
    reserved_share = ShareString(required=True, error_messages={"required": "必填"})
    #: Orders above this many fen wait for the unit's approver (内部审批); null: none do.
    approval_threshold_fen = fields.Integer(
        allow_none=True, strict=True, validate=validate.Range(min=0, max=10_000_000_000, error="须在 0 到 1 亿元之间"),
        error_messages={"invalid": "必须是整数（分）"})
    created_at = fields.Method("get_created_at", dump_only=True)

    def get_created_at(self, unit):
        return isoformat(unit.created_at)


class BudgetUnitUpdateSchema(BudgetUnitSchema):
    """An update: any subset of the unit's fields, and the Shanghai year the budget and share apply from."""

    year = fields.Integer(strict=True, load_only=True,
                          error_messages={"invalid": "须为整数年份，如 2026", "null": "须为整数年份，如 2026"})


class BudgetUnitYearSchema(Schema):
    """One year's budget and share as the API shows them (a year with a record of its own)."""

    year = fields.Integer()
    annual_canteen_budget_fen = fields.Integer()
    reserved_share = ShareString()


class NotificationSchema(Schema):
    """An in-app notice as the API shows it."""

    id = fields.Integer()
    kind = fields.String()
    title = fields.String()
    body = fields.String()
    link = fields.String(allow_none=True)
    read = fields.Method("get_read")
    created_at = fields.Method("get_created_at")
    read_at = fields.Method("get_read_at")

    def get_read(self, notice):
        return notice.read_at is not None

    def get_created_at(self, notice):
        return isoformat(notice.created_at)

    def get_read_at(self, notice):
        return isoformat(notice.read_at)


class NotificationListSchema(Schema):
    """``GET /notifications``: the contract's list envelope plus the caller's unread count."""

    items = fields.List(fields.Nested(NotificationSchema))
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()
    unread = fields.Integer(metadata={"description": "未读消息总数（不受 unread 筛选和分页影响）"})

class PasswordResetRequestSchema(Schema):
    """``{"email"}``: where to send a reset link (answered alike whether or not it has an account)."""

    email = fields.Email(required=True, validate=validate.Length(max=254, error="邮箱过长（最多 254 个字符）"),
                         error_messages={"required": "必填", "invalid": "邮箱格式不正确"})


class PasswordResetConfirmSchema(Schema):
    """``{"token", "new_password"}``: the link's token and the new password (the rule is checked
    by the service, with the account's e-mail)."""

    token = fields.String(required=True, validate=validate.Length(min=1, max=200, error="链接无效"),
                          error_messages={"required": "必填"})
    new_password = fields.String(required=True, load_only=True, error_messages={"required": "必填"})


# ---- answers that are assembled in the views (described here for the OpenAPI document) ----

class TokenSchema(Schema):
    """``POST /auth/token`` and ``/auth/password``: a bearer token, whom it is for and when it ends."""

    token = fields.String()
    user = fields.Nested(UserSchema)
    expires_in = fields.Integer(metadata={"description": "令牌有效秒数"})
    expires_at = fields.String(metadata={"description": "到期时间（ISO 8601）"})


class RegistrationSchema(UserSchema):
    """``POST /auth/register``: the same fields whether the e-mail was new (account and token) or taken (nulls)."""

    id = fields.Integer(allow_none=True)
    token = fields.String(allow_none=True)
    message = fields.String()


class BudgetUnitOutSchema(BudgetUnitSchema):
    """A budget unit as the API answers it: its values now, the policy flag, its years with own values."""

    below_policy_minimum = fields.Boolean()
    years = fields.List(fields.Nested(BudgetUnitYearSchema))


class BudgetUnitChangeSchema(BudgetUnitOutSchema):
    """``PATCH /budget-units/{id}``: the unit and what the year applied has now."""

    applied = fields.Dict(metadata={"description": "该年度生效的预算与份额、是否低于政策下限、保留自身数值的后续年份"})


class VillageTargetsSchema(Schema):
    """``GET /villages/{id}/sales-targets``: the default and the years with a target of their own."""

    village_id = fields.Integer()
    default_target_fen = fields.Integer()
    items = fields.List(fields.Nested(VillageTargetOutSchema(only=("year", "target_fen"))))
