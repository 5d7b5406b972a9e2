"""Budget units (预算单位) that run government canteens and reserve a share of their food budget.

Policy (财库〔2021〕19号): a unit with a canteen reserves at least 10% of its annual canteen food
purchasing for products from poverty-relief areas; some places ask 15% or 30%, so the share is
set per unit. A share below 10% is *accepted* and flagged (``below_policy_minimum``) rather than
refused: the platform records the quota a unit was actually given, and refusing would force an
administrator to enter a figure that is not true. Pages warn about it and the audit trail marks it.
Units without a canteen have a budget of 0 and so no quota at all.

Budgets are annual, so a change must never move a year that is already behind us. A unit's own
columns hold the values in force "now and later unless a year says otherwise"; a
``BudgetUnitYear`` row gives one year values of its own. The values in force in year Y
(``values_in_force``, the one definition every report reads):

1. Y's own record;
2. else, for a year before the unit's first record, that first record (the first record is
   always the freeze of what every earlier year had, so one row keeps them all still);
3. else the unit's own values.

A change applies from a Shanghai year Y on, the current year (default) or the next one (a
budget approved in December for the coming year); earlier years are closed. It applies to Y and
each later year up to the next year that has a record of its own: that year and those after
it keep their values (``kept_years``). Before anything moves, every earlier year without a
record of its own is frozen with the values it had. A change for next year is recorded as that
year's own record and becomes the unit's values from then on, this year first being frozen.
"""
import json
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from marshmallow import ValidationError

from core.audit import history_of, record_event
from core.db import unique_or_conflict
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.models import BudgetUnit, BudgetUnitYear, Role, User
from core.schemas import BudgetUnitSchema, BudgetUnitUpdateSchema, BudgetUnitYearSchema
from core.timeutil import shanghai_today

#: The policy floor of the reserved share (财库〔2021〕19号).
POLICY_MIN_SHARE = Decimal("0.10")
#: Largest budget accepted (¥1,000 亿): far above any canteen, well inside a BIGINT of fen.
MAX_BUDGET_FEN = 10_000_000_000_000
#: Longest reason an administrator may give for a change.
MAX_REASON = 500
#: The fields an update may change, in the order the audit trail lists them.
EDITABLE_FIELDS = ("name", "annual_canteen_budget_fen", "reserved_share", "approval_threshold_fen")
#: The fields that belong to a year (the name does not).
YEAR_FIELDS = ("annual_canteen_budget_fen", "reserved_share")


def below_policy_minimum(values) -> bool:
    """True when a unit with a canteen reserves less than the policy's 10%.

    :param values: a ``BudgetUnit`` (its own values) or ``YearValues`` (one year's).
    """
    return values.annual_canteen_budget_fen > 0 and Decimal(values.reserved_share) < POLICY_MIN_SHARE


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


def editable_years(today=None) -> tuple[int, int]:
    """The Shanghai years a change may apply from: this year and the next."""
    year = (today or shanghai_today()).year
    return year, year + 1


def _load(data: dict, *, partial: bool) -> tuple[dict, str]:
    """Validate input with the contract's schema; return the fields and an optional reason.

    An update (``partial``) may also name the ``year`` it applies from (this year or the next).

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
        fields = (BudgetUnitUpdateSchema() if partial else BudgetUnitSchema()).load(data, partial=partial)
    except ValidationError as exc:
        errors.update(exc.messages)
        fields = exc.valid_data or {}  # still checked below, so every bad field is reported at once
    budget = fields.get("annual_canteen_budget_fen")
    if budget is not None and budget > MAX_BUDGET_FEN:
        errors["annual_canteen_budget_fen"] = ["金额过大"]
    this_year, next_year = editable_years()
    if "year" in fields and fields["year"] not in (this_year, next_year):
        errors["year"] = [f"只能为本年度（{this_year}）或下一年度（{next_year}）：以前年度已结束，不再变动"]
    if errors:
        raise ValidationFailed(fields=errors)
    return fields, (reason or "").strip()


def _name_taken(name: str, except_id: int | None = None) -> bool:
    """True when another unit already has ``name``."""
    query = sa.select(BudgetUnit.id).where(BudgetUnit.name == name)
    if except_id is not None:
        query = query.where(BudgetUnit.id != except_id)
    return db.session.scalar(query) is not None


def _name_race():
    """Commit the block; a unique-name race lost at a flush or the commit is the same 409 as the
    check before it."""
    return unique_or_conflict("同名预算单位已存在", "duplicate_budget_unit")


def create_budget_unit(actor: User, data: dict) -> BudgetUnit:
    """Register a budget unit with its annual canteen budget and reserved share.

    :raise ValidationFailed: invalid input (422).
    :raise Conflict: a unit with that name exists (409).
    """
    fields, reason = _load(data, partial=False)
    if _name_taken(fields["name"]):
        raise Conflict("同名预算单位已存在", code="duplicate_budget_unit")
    with _name_race():
        unit = BudgetUnit(**fields)
        db.session.add(unit)
        db.session.flush()
        record_event(subject_type="budget_unit", subject_id=unit.id, action="create", actor=actor,
                     to_state="active", comment=reason,
                     data={**editable_values(unit), "below_policy_minimum": below_policy_minimum(unit)})
    return unit


# ---------------------------------------------------------------- the values in force in a year

@dataclass(frozen=True)
class YearValues:
    """A unit's canteen budget and reserved share in force in one Shanghai year."""

    year: int
    annual_canteen_budget_fen: int
    reserved_share: Decimal
    #: The year has a record of its own (else it follows the unit's values or its first record).
    own_record: bool = False

    @property
    def reserved_target_fen(self) -> int:
        """The year's reserved target in fen."""
        return reserved_target_fen(self)

    def as_audit(self) -> dict:
        """The year's values as the audit trail and the API write them (share "0.10")."""
        return BudgetUnitYearSchema().dump(self)


def values_in_force(year: int, unit_id: int | None = None):
    """Subquery: each unit's budget and share in force in the Shanghai ``year`` (the definition
    in this module's docstring), one row per unit: ``budget_unit_id``, ``annual_canteen_budget_fen``,
    ``reserved_share``, ``own_record``.

    Every figure that depends on a unit's budget (one unit, every unit in one statement, the
    months of a year, the edit page) joins this, so they cannot disagree.
    """
    own = sa.orm.aliased(BudgetUnitYear, name="own_year")
    first = sa.orm.aliased(BudgetUnitYear, name="first_year")
    first_years = (sa.select(BudgetUnitYear.budget_unit_id.label("budget_unit_id"),
                             sa.func.min(BudgetUnitYear.year).label("year"))
                   .group_by(BudgetUnitYear.budget_unit_id).subquery("first_years"))
    query = (sa.select(BudgetUnit.id.label("budget_unit_id"),
                       sa.func.coalesce(own.annual_canteen_budget_fen, first.annual_canteen_budget_fen,
                                        BudgetUnit.annual_canteen_budget_fen).label("annual_canteen_budget_fen"),
                       sa.func.coalesce(own.reserved_share, first.reserved_share,
                                        BudgetUnit.reserved_share).label("reserved_share"),
                       sa.case((own.id.is_not(None), 1), else_=0).label("own_record"))
             .select_from(BudgetUnit)
             .outerjoin(own, sa.and_(own.budget_unit_id == BudgetUnit.id, own.year == year))
             # Only a first record *after* the year stands in for it: the years before it.
             .outerjoin(first_years, sa.and_(first_years.c.budget_unit_id == BudgetUnit.id,
                                             first_years.c.year > year))
             .outerjoin(first, sa.and_(first.budget_unit_id == BudgetUnit.id, first.year == first_years.c.year)))
    if unit_id is not None:
        query = query.where(BudgetUnit.id == unit_id)
    return query.subquery("unit_year_values")


def year_values_from_row(year: int, row) -> YearValues:
    """``YearValues`` from a row carrying ``values_in_force``'s columns."""
    return YearValues(year=year, annual_canteen_budget_fen=int(row.annual_canteen_budget_fen),
                      reserved_share=Decimal(row.reserved_share), own_record=bool(row.own_record))


def year_values(unit_id: int, year: int) -> YearValues:
    """The budget and share of one unit in force in the Shanghai ``year``.

    :raise NotFound: no such unit.
    """
    values = values_in_force(year, unit_id)
    row = db.session.execute(sa.select(values)).one_or_none()
    if row is None:
        raise NotFound("预算单位不存在")
    return year_values_from_row(year, row)


def own_years(unit_id: int) -> list[BudgetUnitYear]:
    """The unit's years with a record of their own, earliest first."""
    return list(db.session.scalars(sa.select(BudgetUnitYear).where(BudgetUnitYear.budget_unit_id == unit_id)
                                   .order_by(BudgetUnitYear.year)))


def years_overview(unit: BudgetUnit) -> list[YearValues]:
    """What the edit page lists: every year with a record of its own, this year and the next,
    each with the values in force then, earliest first."""
    years = {record.year for record in own_years(unit.id)} | set(editable_years())
    return [year_values(unit.id, year) for year in sorted(years)]


# ---------------------------------------------------------------- changing a unit

@dataclass
class BudgetUnitChange:
    """What an update did: the values in force in ``year`` before and after, the earlier years
    frozen first, and the later years that kept a record of their own."""

    unit: BudgetUnit
    year: int
    before: YearValues
    after: YearValues
    frozen: list[YearValues] = field(default_factory=list)
    kept_years: list[int] = field(default_factory=list)
    changed: bool = False


def update_budget_unit(actor: User, unit_id: int, data: dict) -> BudgetUnit:
    """Change a unit's name, budget or reserved share (see ``change_budget_unit``); return the unit."""
    return change_budget_unit(actor, unit_id, data).unit


def change_budget_unit(actor: User, unit_id: int, data: dict) -> BudgetUnitChange:
    """Change a unit's name, or its budget and share from a year on; audit old → new with the year.

    ``data["year"]`` (default: this Shanghai year; at most the next) is the year the budget and
    share apply from; the module docstring says what that does to other years. Fields left out
    keep their value; an update that changes nothing records nothing. The name is not per year.

    :raise Forbidden: the actor is not an administrator.
    :raise NotFound: no such unit.
    :raise ValidationFailed: invalid input (422); nothing is changed.
    :raise Conflict: another unit has the new name (409).
    """
    if actor is None or not actor.has_role(Role.ADMIN):
        raise Forbidden("只有管理员可以修改预算单位")
    # Locked so two administrators' edits are applied one after the other, each audited against
    # the values it really replaced; the unit's year records are only written under this lock.
    unit = db.session.get(BudgetUnit, unit_id, with_for_update=True)
    if unit is None:
        raise NotFound("预算单位不存在")
    fields, reason = _load(data, partial=True)
    this_year = editable_years()[0]
    year = fields.pop("year", this_year)
    if "name" in fields and fields["name"] != unit.name and _name_taken(fields["name"], except_id=unit.id):
        raise Conflict("同名预算单位已存在", code="duplicate_budget_unit")
    before = year_values(unit.id, year)
    given = {name: fields[name] for name in YEAR_FIELDS if name in fields}
    wanted = YearValues(year, given.get("annual_canteen_budget_fen", before.annual_canteen_budget_fen),
                        given.get("reserved_share", before.reserved_share), before.own_record)
    changes = {}
    if "name" in fields and fields["name"] != unit.name:
        changes["name"] = {"from": unit.name, "to": fields["name"]}
    # Like the name, the approval threshold is the unit's rule from now on, not a year's figure.
    if "approval_threshold_fen" in fields and fields["approval_threshold_fen"] != unit.approval_threshold_fen:
        changes["approval_threshold_fen"] = {"from": unit.approval_threshold_fen, "to": fields["approval_threshold_fen"]}
    old, new = before.as_audit(), wanted.as_audit()
    changes.update({name: {"from": old[name], "to": new[name]} for name in YEAR_FIELDS if old[name] != new[name]})
    change = BudgetUnitChange(unit=unit, year=year, before=before, after=before)
    if not changes:
        db.session.commit()  # ends the transaction and its row lock; nothing was written
        return change
    with _name_race():
        if "name" in changes:
            unit.name = fields["name"]
        if "approval_threshold_fen" in changes:
            unit.approval_threshold_fen = fields["approval_threshold_fen"]
        if any(name in changes for name in YEAR_FIELDS):
            change.frozen, change.kept_years = _apply_from_year(unit, before, given, this_year)
        db.session.flush()
        change.after = year_values(unit.id, year)
        change.changed = True
        record_event(subject_type="budget_unit", subject_id=unit.id, action="update", actor=actor, comment=reason,
                     data={"year": year, "changes": changes,
                           "below_policy_minimum": below_policy_minimum(change.after),
                           "frozen_years": [values.as_audit() for values in change.frozen],
                           "kept_years": change.kept_years})
    return change


def _apply_from_year(unit: BudgetUnit, before: YearValues, given: dict,
                     this_year: int) -> tuple[list[YearValues], list[int]]:
    """Write ``given`` (budget and/or share) from ``before.year`` on, in the open transaction.

    :return: the earlier years frozen first, and the later years that keep their own record.
    """
    year = before.year
    records = {record.year: record for record in own_years(unit.id)}
    # Freeze first, from what every earlier year shows now: each year from the first record (or
    # the year before, when that is earlier) up to the year before ``year`` that has no record of
    # its own gets one. Years before the first record follow it, so they stay still too.
    first = min(records, default=year - 1)
    frozen = [year_values(unit.id, earlier) for earlier in range(min(first, year - 1), year)
              if earlier not in records]
    for values in frozen:
        records[values.year] = BudgetUnitYear(budget_unit_id=unit.id, year=values.year,
                                              annual_canteen_budget_fen=values.annual_canteen_budget_fen,
                                              reserved_share=values.reserved_share)
        db.session.add(records[values.year])
    kept_years = sorted(later for later in records if later > year)
    own = records.get(year)
    if own is None and (kept_years or year > this_year):
        # A later year keeps its own values, so the unit's values (which serve the years after the
        # last record) must not carry this change; and next year's budget is that year's own.
        own = BudgetUnitYear(budget_unit_id=unit.id, year=year,
                             annual_canteen_budget_fen=before.annual_canteen_budget_fen,
                             reserved_share=before.reserved_share)
        db.session.add(own)
    for name, value in given.items():
        if own is not None:
            setattr(own, name, value)
        if not kept_years:
            setattr(unit, name, value)
    return frozen, kept_years


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
FIELD_LABELS = {"name": "单位名称", "annual_canteen_budget_fen": "年度食堂食材采购预算", "reserved_share": "预留比例",
                "approval_threshold_fen": "内部审批金额起点"}


def unit_history(unit: BudgetUnit) -> list[dict]:
    """The unit's audit events (creation and every change), newest first, with who made them.

    Each item: ``at``, ``action`` ("create"/"update"), ``actor`` (a User or None), ``comment``,
    ``changes``: ``[(field, old or None, new)]`` with the raw stored values, and for an update
    ``year`` (the year it applied from; None for changes made before years were kept),
    ``frozen_years`` (earlier years given their own record first, with their values) and
    ``kept_years`` (later years that kept their own record).
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
                      "comment": event.comment, "changes": changes,
                      # A renaming is not per year: only a budget or share change says from when.
                      "year": data.get("year") if any(name in YEAR_FIELDS for name, _, _ in changes) else None,
                      "frozen_years": data.get("frozen_years", []), "kept_years": data.get("kept_years", [])})
    return items


def reserved_target_fen(values) -> int:
    """The fen a unit must spend on assistance products in a year: budget × share, rounded half up.

    :param values: the year's ``YearValues`` (or a ``BudgetUnit``, for its own values).
    """
    exact = Decimal(values.annual_canteen_budget_fen) * Decimal(values.reserved_share)
    return int(exact.quantize(Decimal(1), rounding="ROUND_HALF_UP"))
