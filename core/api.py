"""Kernel JSON API: auth (tokens, sign-out, password), me, staff accounts, villages and their sales targets, cooperatives, budget units (``/api/v1``)."""
from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, request
from marshmallow import fields, validate

from core import budget_units, cooperatives, password_reset, users, village_targets, villages
from core.auth import current_user, issue_token, remember_device, require_login, require_roles
from core.errors import ValidationFailed
from core.extensions import db
from core.http import json_body, list_envelope, page_params
from core.models import ROLE_VALUES, Role
from core.openapi import api_doc, api_tag
from core.ratelimit import rate_limited
from core.schemas import (AccountSchema, BudgetUnitChangeSchema, BudgetUnitOutSchema, BudgetUnitSchema,
                          BudgetUnitUpdateSchema, BudgetUnitYearSchema, CooperativeSchema, CredentialsSchema,
                          PasswordChangeSchema, PasswordResetConfirmSchema, PasswordResetRequestSchema, RegisterSchema,
                          RegistrationSchema, TokenSchema, UserCreateSchema, UserSchema, UserUpdateSchema,
                          VillageQuerySchema, VillageSchema, VillageTargetOutSchema, VillageTargetSchema,
                          VillageTargetsSchema)
from core.timeutil import isoformat, utcnow

bp = Blueprint("core_api", __name__, url_prefix="/api/v1")
api_tag(bp, "账号、村、合作社与预算单位", "令牌与注册、账号管理、脱贫村名录与销售目标、合作社、预算单位（食堂）")


def _token_body(user) -> dict:
    """A new bearer token for ``user``, when it expires, and who it is for."""
    lifetime = current_app.config["API_TOKEN_MAX_AGE"]
    return {"token": issue_token(user), "user": UserSchema().dump(user), "expires_in": lifetime,
            "expires_at": isoformat(utcnow() + timedelta(seconds=lifetime))}


@bp.post("/auth/token")
@api_doc(request=CredentialsSchema, response=TokenSchema, errors=(401, 429))
def create_token():
    """Exchange email and password for a bearer token (failures limited per account and address)."""
    data = json_body()
    CredentialsSchema().load(data)
    user = users.sign_in(data.get("email"), data.get("password"))
    return remember_device(jsonify(_token_body(user)), user)


@bp.post("/auth/register")
@api_doc(request=RegisterSchema, response=RegistrationSchema, status=201, errors=(429,))
@rate_limited("register", 10)
def register():
    """Create a consumer account: 201 with the account and a token; a taken e-mail gets the same
    201 without them (README "Registration")."""
    registration = users.register_consumer(json_body())
    if registration.created:
        body = {**UserSchema().dump(registration.user), "token": issue_token(registration.user)}
    else:
        body = {"id": None, "email": registration.email, "display_name": registration.display_name,
                "role": Role.CONSUMER.value, "county": None, "cooperative_id": None, "budget_unit_id": None,
                "token": None}
    return jsonify({**body, "message": REGISTRATION_MESSAGE}), 201


#: Said to every registration, new e-mail or taken, so the answer's text tells nothing.
REGISTRATION_MESSAGE = "注册申请已受理。若该邮箱此前未注册，账号已创建；若已注册，请直接登录。"


@bp.post("/auth/logout")
@api_doc(response={"type": "object", "properties": {"revoked": {"type": "string", "enum": ["token"]}}})
@require_login
def logout():
    """Revoke the calling token at once (other tokens and sessions stay signed in)."""
    users.sign_out(current_user())
    return jsonify({"revoked": "token"})


@bp.post("/auth/logout-all")
@api_doc(response={"type": "object", "properties": {"revoked": {"type": "string", "enum": ["all"]}}})
@require_login
def logout_everywhere():
    """Revoke every token and page session of the caller ("sign out everywhere")."""
    users.sign_out_everywhere(current_user())
    return jsonify({"revoked": "all"})


@bp.post("/auth/password")
@api_doc(request=PasswordChangeSchema, response=TokenSchema, errors=(429,))
@require_login
def change_password():
    """``{"current_password", "new_password"}``: every other token and session dies; answers a new token."""
    user = users.change_password(current_user(), json_body())
    return jsonify(_token_body(user))


@bp.post("/auth/password-reset")
@api_doc(request=PasswordResetRequestSchema, status=202, errors=(429,),
         response={"type": "object", "properties": {"message": {"type": "string"}}})
@rate_limited("password_reset", 5)
def request_password_reset():
    """``{"email"}``: e-mail a one-time reset link if the address has an account; 202 either way."""
    fields = PasswordResetRequestSchema().load(json_body())
    password_reset.request_reset(fields["email"])
    return jsonify({"message": password_reset.REQUEST_MESSAGE}), 202


@bp.post("/auth/password-reset/confirm")
@api_doc(request=PasswordResetConfirmSchema,
         response={"type": "object", "properties": {"message": {"type": "string"}, "user": {"type": "object"}}})
def confirm_password_reset():
    """``{"token", "new_password"}``: set the password; every session and token of the account ends."""
    fields = PasswordResetConfirmSchema().load(json_body())
    user = password_reset.reset_password(fields["token"], fields["new_password"])
    return jsonify({"message": "密码已重设，请用新密码登录", "user": UserSchema().dump(user)})


# ---------------------------------------------------------------- accounts (admin, county reviewers)

def _flag_arg(name: str) -> bool | None:
    """A true/false query parameter; None when absent.

    :raise ValidationFailed: anything but true/false/1/0 (422).
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in {"true", "1"}:
        return True
    if raw.lower() in {"false", "0"}:
        return False
    raise ValidationFailed(fields={name: ["须为 true 或 false"]})


#: ``GET /users`` filters, read by the view itself.
USER_QUERY = {"role": fields.String(validate=validate.OneOf(ROLE_VALUES)),
              "is_active": fields.String(validate=validate.OneOf(("true", "false", "1", "0"))),
              "q": fields.String(metadata={"description": "邮箱或姓名片段"})}


@bp.get("/users")
@api_doc(response=AccountSchema, many=True, paged=True, query=USER_QUERY)
@require_roles(*users.ACCOUNT_MANAGERS)
def list_users():
    """The accounts the caller manages (``?role=&is_active=&q=``)."""
    page = page_params()
    role = request.args.get("role") or None
    if role is not None and role not in ROLE_VALUES:
        raise ValidationFailed(fields={"role": ["未知的角色"]})
    query = users.list_accounts(current_user(), role=role, is_active=_flag_arg("is_active"),
                                q=request.args.get("q") or None)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.offset(page.offset).limit(page.size)).all()
    return jsonify(list_envelope(AccountSchema(many=True).dump(rows), total, page))


@bp.post("/users")
@api_doc(request=UserCreateSchema, response=AccountSchema, status=201, errors=(409,))
@require_roles(*users.ACCOUNT_MANAGERS)
def create_user():
    """Create a staff account (admin: any role and scope; county reviewer: its county's cooperatives).

    ``"send_password_link": true`` e-mails the account a one-time link to choose its password;
    ``password`` may then be left out.
    """
    user = users.create_user(json_body(), actor=current_user())
    return jsonify(AccountSchema().dump(user)), 201


@bp.get("/users/<int:user_id>")
@api_doc(response=AccountSchema)
@require_roles(*users.ACCOUNT_MANAGERS)
def get_user(user_id: int):
    """One account the caller manages."""
    return jsonify(AccountSchema().dump(users.get_account(current_user(), user_id)))


@bp.patch("/users/<int:user_id>")
@api_doc(request=UserUpdateSchema, response=AccountSchema)
@require_roles(*users.ACCOUNT_MANAGERS)
def update_user(user_id: int):
    """``{"is_active"?, "display_name"?, "reason"?}``; deactivation revokes its tokens and sessions at once."""
    return jsonify(AccountSchema().dump(users.update_account(current_user(), user_id, json_body())))


@bp.get("/me")
@api_doc(response=UserSchema)
@require_login
def me():
    """Return the caller's identity and scope."""
    return jsonify(UserSchema().dump(current_user()))


@bp.get("/villages")
@api_doc(query=VillageQuerySchema, paged=2000, response=VillageSchema, many=True)
def list_villages():
    """List registry villages, filtered by county, township, zone or a name fragment."""
    filters = VillageQuerySchema().load(request.args.to_dict())
    filters.pop("year", None)
    page = page_params(max_per_page=2000)
    query = villages.filtered_villages(**filters)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    rows = db.session.scalars(query.offset(page.offset).limit(page.size)).all()
    return jsonify(list_envelope(VillageSchema(many=True).dump(rows), total, page))


@bp.get("/villages/<int:village_id>")
@api_doc(response=VillageSchema)
def get_village(village_id: int):
    """Return one village."""
    return jsonify(VillageSchema().dump(villages.get_village(village_id)))


@bp.get("/villages/<int:village_id>/sales-targets")
@api_doc(response=VillageTargetsSchema)
def list_village_targets(village_id: int):
    """A village's default yearly target and the years given a target of their own."""
    village, overrides = village_targets.targets_of(village_id)
    return jsonify({"village_id": village.id, "default_target_fen": village.sales_target_fen,
                    "items": VillageTargetOutSchema(many=True, only=("year", "target_fen")).dump(overrides)})


@bp.put("/villages/<int:village_id>/sales-targets/<int:year>")
@api_doc(request=VillageTargetSchema, response=VillageTargetOutSchema)
@require_roles(*village_targets.TARGET_SETTERS)
def set_village_target(village_id: int, year: int):
    """Set a village's sales target for one year: ``{"target_fen", "reason"?}``."""
    change = village_targets.set_target(current_user(), village_id, year, json_body())
    return jsonify(VillageTargetOutSchema().dump(
        {"village_id": change.village.id, "year": year, "target_fen": change.after_fen, "overridden": True}))


@bp.delete("/villages/<int:village_id>/sales-targets/<int:year>")
@api_doc(query={"reason": fields.String(metadata={"description": "原因（记入审计）"})}, response=VillageTargetOutSchema)
@require_roles(*village_targets.TARGET_SETTERS)
def clear_village_target(village_id: int, year: int):
    """Return a village to its default target for one year."""
    change = village_targets.clear_target(current_user(), village_id, year, request.args.get("reason", ""))
    return jsonify(VillageTargetOutSchema().dump(
        {"village_id": change.village.id, "year": year, "target_fen": change.after_fen, "overridden": False}))


@bp.post("/cooperatives")
@api_doc(request=CooperativeSchema, response=CooperativeSchema, status=201, errors=(409,))
@require_roles(Role.ADMIN, Role.COUNTY_REVIEWER)
def create_cooperative():
    """Register a cooperative (admin anywhere, a county reviewer in their county)."""
    cooperative = cooperatives.register_cooperative(current_user(), json_body())
    return jsonify(CooperativeSchema().dump(cooperative)), 201


@bp.get("/cooperatives/<int:cooperative_id>")
@api_doc(response=CooperativeSchema)
def get_cooperative(cooperative_id: int):
    """Return a cooperative's public record."""
    return jsonify(CooperativeSchema().dump(cooperatives.get_cooperative(cooperative_id)))


@bp.post("/budget-units")
@api_doc(request=BudgetUnitSchema, response=BudgetUnitOutSchema, status=201, errors=(409,))
@require_roles(Role.ADMIN)
def create_budget_unit():
    """Register a budget unit that runs a canteen."""
    unit = budget_units.create_budget_unit(current_user(), json_body())
    return jsonify(_budget_unit_body(unit)), 201


@bp.get("/budget-units/<int:unit_id>")
@api_doc(response=BudgetUnitOutSchema, errors=(403,))
@require_login
def get_budget_unit(unit_id: int):
    """Return a budget unit to its buyers, finance, officials and admins."""
    return jsonify(_budget_unit_body(budget_units.get_budget_unit_for(current_user(), unit_id)))


@bp.patch("/budget-units/<int:unit_id>")
@api_doc(request=BudgetUnitUpdateSchema(partial=True), response=BudgetUnitChangeSchema, errors=(409,))
@require_roles(Role.ADMIN)
def update_budget_unit(unit_id: int):
    """Change a unit's name, or its budget and share from ``"year"`` on (default this year, at most
    the next); audited old → new. ``applied`` says what the year has now and which later years
    kept their own values."""
    change = budget_units.change_budget_unit(current_user(), unit_id, json_body())
    applied = {**change.after.as_audit(), "below_policy_minimum": budget_units.below_policy_minimum(change.after),
               "kept_years": change.kept_years}
    return jsonify({**_budget_unit_body(change.unit), "applied": applied})


def _budget_unit_body(unit) -> dict:
    """A unit as the contract shapes it (its values for now and later years), whether its share is
    below the policy's 10%, and the years that have budget and share of their own."""
    return {**BudgetUnitSchema().dump(unit), "below_policy_minimum": budget_units.below_policy_minimum(unit),
            "years": BudgetUnitYearSchema(many=True).dump(budget_units.own_years(unit.id))}
