"""Budget units (预算单位) that run government canteens and reserve a share of their food budget."""
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.audit import record_event
from core.errors import Conflict, Forbidden, NotFound
from core.extensions import db
from core.models import BudgetUnit, Role, User
from core.schemas import BudgetUnitSchema


def create_budget_unit(actor: User, data: dict) -> BudgetUnit:
    """Register a budget unit with its annual canteen budget and reserved share.

    :raise ValidationFailed: invalid input (422).
    :raise Conflict: a unit with that name exists (409).
    """
    fields = BudgetUnitSchema().load(data)
    if db.session.scalar(sa.select(BudgetUnit.id).where(BudgetUnit.name == fields["name"])) is not None:
        raise Conflict("同名预算单位已存在", code="duplicate_budget_unit")
    unit = BudgetUnit(**fields)
    db.session.add(unit)
    db.session.flush()
    record_event(subject_type="budget_unit", subject_id=unit.id, action="create", actor=actor,
                 to_state="active", data={"annual_canteen_budget_fen": unit.annual_canteen_budget_fen,
                                          "reserved_share": str(unit.reserved_share)})
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("同名预算单位已存在", code="duplicate_budget_unit") from None
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


def reserved_target_fen(unit: BudgetUnit) -> int:
    """The fen the unit must spend on assistance products this year (rounded half up)."""
    exact = Decimal(unit.annual_canteen_budget_fen) * Decimal(unit.reserved_share)
    return int(exact.quantize(Decimal(1), rounding="ROUND_HALF_UP"))
