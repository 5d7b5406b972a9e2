"""Budget units (预算单位) that run government canteens and reserve a share of their food budget.

Policy (财库〔2021〕19号): a unit with a canteen reserves at least 10% of its annual canteen food
purchasing for products from poverty-relief areas; some places ask 15% or 30%, so the share is
set per unit. A share below 10% is *accepted* and flagged (``below_policy_minimum``) rather than
refused: the platform records the quota a unit was actually given, and refusing would force an
administrator to enter a figure that is not true. Pages warn about it and the audit trail marks it.
Units without a canteen have a budget of 0 and so no quota at all.
"""
import json
from decimal import Decimal

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy.exc import IntegrityError

from core.audit import history_of, record_event
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.models import BudgetUnit, Role, User
from core.schemas import BudgetUnitSchema

#: The policy floor of the reserved share (财库〔2021〕19号).
POLICY_MIN_SHARE = Decimal("0.10")
#: Largest budget accepted (¥1,000 亿): far above any canteen, well inside a BIGINT of fen.
MAX_BUDGET_FEN = 10_000_000_000_000
#: Longest reason an administrator may give for a change.
MAX_REASON = 500
#: The fields an update may change, in the order the audit trail lists them.
EDITABLE_FIELDS = ("name", "annual_canteen_budget_fen", "reserved_share")


def below_policy_minimum(unit: BudgetUnit) -> bool:
    """True when a unit with a canteen reserves less than the policy's 10%."""
    return unit.annual_canteen_budget_fen > 0 and Decimal(unit.reserved_share) < POLICY_MIN_SHARE


def share_percent(share) -> str:
    """A share as people read it: "0.1000" → "10%", "0.125" → "12.5%"."""
    value = (Decimal(str(share)) * 100).normalize()
    return f"{value:f}%"


def editable_values(unit: BudgetUnit) -> dict:
    """The editable values of a unit as the API writes them (share "0.10"): audit records and forms."""
    return BudgetUnitSchema(only=EDITABLE_FIELDS).dump(unit)


def input_errors(data: dict, *, partial: bool) -> dict:
    """The field errors ``data`` would get from create (``partial=False``) or update, {} if none.

    For forms that must report every field at once even when one of them (a yuan amount) could
    not be parsed and so is not sent to the service.
    """
    try:
        _load(data, partial=partial)
    except ValidationFailed as exc:
        return exc.fields
    return {}


def _load(data: dict, *, partial: bool) -> tuple[dict, str]:
    """Validate input with the contract's schema; return the fields and an optional reason.

    :raise ValidationFailed: invalid fields (422), all reported together.
    """
    data = dict(data)
    if isinstance(data.get("name"), str):
        data["name"] = data["name"].strip()  # " 乙单位 " is 乙单位, on the API as on the form
    reason = data.pop("reason", None)
    errors: dict = {}
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        errors["reason"] = [f"须为不超过 {MAX_REASON} 字的文字"]
    try:
        fields = BudgetUnitSchema().load(data, partial=partial)
    except ValidationError as exc:
        errors.update(exc.messages)
        fields = {}
    budget = fields.get("annual_canteen_budget_fen")
    if budget is not None and budget > MAX_BUDGET_FEN:
        errors["annual_canteen_budget_fen"] = ["金额过大"]
    if errors:
        raise ValidationFailed(fields=errors)
    return fields, (reason or "").strip()


def _name_taken(name: str, except_id: int | None = None) -> bool:
    """True when another unit already has ``name``."""
    query = sa.select(BudgetUnit.id).where(BudgetUnit.name == name)
    if except_id is not None:
        query = query.where(BudgetUnit.id != except_id)
    return db.session.scalar(query) is not None


def _commit_or_conflict() -> None:
    """Commit; a unique-name race lost at commit time is the same 409 as the check before it."""
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("同名预算单位已存在", code="duplicate_budget_unit") from None


def create_budget_unit(actor: User, data: dict) -> BudgetUnit:
    """Register a budget unit with its annual canteen budget and reserved share.

    :raise ValidationFailed: invalid input (422).
    :raise Conflict: a unit with that name exists (409).
    """
    fields, reason = _load(data, partial=False)
    if _name_taken(fields["name"]):
        raise Conflict("同名预算单位已存在", code="duplicate_budget_unit")
    unit = BudgetUnit(**fields)
    db.session.add(unit)
    db.session.flush()
    record_event(subject_type="budget_unit", subject_id=unit.id, action="create", actor=actor,
                 to_state="active", comment=reason,
                 data={**editable_values(unit), "below_policy_minimum": below_policy_minimum(unit)})
    _commit_or_conflict()
    return unit


def update_budget_unit(actor: User, unit_id: int, data: dict) -> BudgetUnit:
    """Change a unit's name, budget or reserved share; record old → new values in the audit trail.

    Fields left out keep their value; an update that changes nothing records nothing.

    :raise Forbidden: the actor is not an administrator.
    :raise NotFound: no such unit.
    :raise ValidationFailed: invalid input (422); nothing is changed.
    :raise Conflict: another unit has the new name (409).
    """
    if actor is None or not actor.has_role(Role.ADMIN):
        raise Forbidden("只有管理员可以修改预算单位")
    # Locked so two administrators' edits are applied one after the other, each audited against
    # the values it really replaced.
    unit = db.session.get(BudgetUnit, unit_id, with_for_update=True)
    if unit is None:
        raise NotFound("预算单位不存在")
    fields, reason = _load(data, partial=True)
    before = editable_values(unit)
    if "name" in fields and fields["name"] != unit.name and _name_taken(fields["name"], except_id=unit.id):
        raise Conflict("同名预算单位已存在", code="duplicate_budget_unit")
    for name in EDITABLE_FIELDS:
        if name in fields:
            setattr(unit, name, fields[name])
    after = editable_values(unit)
    changes = {name: {"from": before[name], "to": after[name]} for name in EDITABLE_FIELDS
               if before[name] != after[name]}
    if not changes:
        db.session.commit()  # ends the transaction and its row lock; nothing was written
        return unit
    record_event(subject_type="budget_unit", subject_id=unit.id, action="update", actor=actor, comment=reason,
                 data={"changes": changes, "below_policy_minimum": below_policy_minimum(unit)})
    _commit_or_conflict()
    return unit


def get_budget_unit_for(actor: User, unit_id: int) -> BudgetUnit:
    """Return a unit its own buyers, finance, officials and admins may see.

    :raise NotFound: no such unit, or another unit's buyer asking (not visible to them).
    """
    unit = db.session.get(BudgetUnit, unit_id)
    if unit is None:
        raise NotFound("预算单位不存在")
    if actor.has_role(Role.ADMIN, Role.FINANCE, Role.OFFICIAL):
        return unit
    if actor.has_role(Role.CANTEEN_BUYER):
        if actor.budget_unit_id == unit.id:
            return unit
        raise NotFound("预算单位不存在")
    raise Forbidden("当前角色无权查看预算单位")


#: Audit field names as people read them on the edit page.
FIELD_LABELS = {"name": "单位名称", "annual_canteen_budget_fen": "年度食堂食材采购预算", "reserved_share": "预留比例"}


def unit_history(unit: BudgetUnit) -> list[dict]:
    """The unit's audit events (creation and every change), newest first, with who made them.

    Each item: ``at``, ``action`` ("create"/"update"), ``actor`` (a User or None), ``comment``,
    and ``changes``: ``[(field, old or None, new)]`` with the raw stored values.
    """
    events = list(reversed(history_of("budget_unit", unit.id)))
    actor_ids = {event.actor_id for event in events if event.actor_id is not None}
    actors = {user.id: user for user in db.session.scalars(sa.select(User).where(User.id.in_(actor_ids)))} \
        if actor_ids else {}
    items = []
    for event in events:
        data = json.loads(event.data or "{}")
        if event.action == "update":
            changes = [(name, change["from"], change["to"]) for name, change in data.get("changes", {}).items()]
        else:
            changes = [(name, None, data[name]) for name in EDITABLE_FIELDS if name in data]
        items.append({"at": event.at, "action": event.action, "actor": actors.get(event.actor_id),
                      "comment": event.comment, "changes": changes})
    return items


def reserved_target_fen(unit: BudgetUnit) -> int:
    """The fen the unit must spend on assistance products this year (rounded half up)."""
    exact = Decimal(unit.annual_canteen_budget_fen) * Decimal(unit.reserved_share)
    return int(exact.quantize(Decimal(1), rounding="ROUND_HALF_UP"))
