"""Kernel JSON API: auth, me, villages and their sales targets, cooperatives, budget units (``/api/v1``)."""
import sqlalchemy as sa
from flask import Blueprint, jsonify, request

from core import budget_units, cooperatives, users, village_targets, villages
from core.auth import current_user, issue_token, require_login, require_roles
from core.extensions import db
from core.http import json_body, list_envelope, page_params
from core.models import Role
from core.ratelimit import rate_limited
from core.schemas import (BudgetUnitSchema, BudgetUnitYearSchema, CooperativeSchema, CredentialsSchema, UserSchema,
                          VillageQuerySchema, VillageSchema, VillageTargetOutSchema)

bp = Blueprint("core_api", __name__, url_prefix="/api/v1")


@bp.post("/auth/token")
@rate_limited("sign_in", 20)
def create_token():
    """Exchange email and password for a bearer token."""
    data = json_body()
    CredentialsSchema().load(data)
    user = users.authenticate(data.get("email"), data.get("password"))
    return jsonify({"token": issue_token(user), "user": UserSchema().dump(user)})


@bp.post("/auth/register")
@rate_limited("register", 10)
def register():
    """Create a consumer account."""
    user = users.register_consumer(json_body())
    return jsonify({**UserSchema().dump(user), "token": issue_token(user)}), 201


@bp.get("/me")
@require_login
def me():
    """Return the caller's identity and scope."""
    return jsonify(UserSchema().dump(current_user()))


@bp.get("/villages")
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
def get_village(village_id: int):
    """Return one village."""
    return jsonify(VillageSchema().dump(villages.get_village(village_id)))


@bp.get("/villages/<int:village_id>/sales-targets")
def list_village_targets(village_id: int):
    """A village's default yearly target and the years given a target of their own."""
    village, overrides = village_targets.targets_of(village_id)
    return jsonify({"village_id": village.id, "default_target_fen": village.sales_target_fen,
                    "items": VillageTargetOutSchema(many=True, only=("year", "target_fen")).dump(overrides)})


@bp.put("/villages/<int:village_id>/sales-targets/<int:year>")
@require_roles(*village_targets.TARGET_SETTERS)
def set_village_target(village_id: int, year: int):
    """Set a village's sales target for one year: ``{"target_fen", "reason"?}``."""
    change = village_targets.set_target(current_user(), village_id, year, json_body())
    return jsonify(VillageTargetOutSchema().dump(
        {"village_id": change.village.id, "year": year, "target_fen": change.after_fen, "overridden": True}))


@bp.delete("/villages/<int:village_id>/sales-targets/<int:year>")
@require_roles(*village_targets.TARGET_SETTERS)
def clear_village_target(village_id: int, year: int):
    """Return a village to its default target for one year."""
    change = village_targets.clear_target(current_user(), village_id, year, request.args.get("reason", ""))
    return jsonify(VillageTargetOutSchema().dump(
        {"village_id": change.village.id, "year": year, "target_fen": change.after_fen, "overridden": False}))


@bp.post("/cooperatives")
@require_roles(Role.ADMIN, Role.COUNTY_REVIEWER)
def create_cooperative():
    """Register a cooperative (admin anywhere, a county reviewer in their county)."""
    cooperative = cooperatives.register_cooperative(current_user(), json_body())
    return jsonify(CooperativeSchema().dump(cooperative)), 201


@bp.get("/cooperatives/<int:cooperative_id>")
def get_cooperative(cooperative_id: int):
    """Return a cooperative's public record."""
    return jsonify(CooperativeSchema().dump(cooperatives.get_cooperative(cooperative_id)))


@bp.post("/budget-units")
@require_roles(Role.ADMIN)
def create_budget_unit():
    """Register a budget unit that runs a canteen."""
    unit = budget_units.create_budget_unit(current_user(), json_body())
    return jsonify(_budget_unit_body(unit)), 201


@bp.get("/budget-units/<int:unit_id>")
@require_login
def get_budget_unit(unit_id: int):
    """Return a budget unit to its buyers, finance, officials and admins."""
    return jsonify(_budget_unit_body(budget_units.get_budget_unit_for(current_user(), unit_id)))


@bp.patch("/budget-units/<int:unit_id>")
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
