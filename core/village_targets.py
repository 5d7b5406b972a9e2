"""Villages' yearly consumption-assistance sales targets (销售目标), set by officials.

The plan asks ¥150,000 of sales per village per year (``Village.sales_target_fen``, the
default); domain.md: "Configurable per village and year". A ``VillageSalesTarget`` row
overrides the default for one year. Reports, the scan page and the village API read the
target in force with one ``COALESCE(override, default)``, so nothing else changes when a
target is set here.

Targets are set one at a time (page or API) or for many villages at once from a CSV file that
officials fill in with a spreadsheet: ``export_csv`` gives every village with its target for
a year, ``import_csv`` takes it back all-or-nothing. Every change is on the audit trail.
"""
import csv
import io
import json
from dataclasses import dataclass

import sqlalchemy as sa
from marshmallow import ValidationError

from core.audit import history_of, record_event
from core.db import unique_or_conflict
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.identifiers import whole_number
from core.money import parse_yuan
from core.models import Role, User, Village, VillageSalesTarget
from core.schemas import MAX_TARGET_FEN, VillageTargetSchema
from core.village_registry import ZONE_LABELS

#: Who decides targets: the prefecture's officials and administrators.
TARGET_SETTERS = (Role.ADMIN, Role.OFFICIAL)
#: The plan starts in 2021; a target further than this ahead is a typing error.
FIRST_YEAR, LAST_YEAR = 2021, 2100
MAX_REASON = 500
#: Columns of the spreadsheet, in order (the target is in yuan: people fill it in).
CSV_HEADER = ("村ID", "县市", "乡镇", "村", "分区", "年度", "销售目标（元）")
MAX_IMPORT_BYTES = 2 * 1024 * 1024
MAX_IMPORT_ERRORS = 50

def _check_year(year: int) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValidationFailed(f"年度须在 {FIRST_YEAR} 到 {LAST_YEAR} 之间", code="invalid_year",
                               fields={"year": [f"须在 {FIRST_YEAR} 到 {LAST_YEAR} 之间"]})


def _village(village_id: int) -> Village:
    village = db.session.get(Village, village_id)
    if village is None:
        raise NotFound("村不存在")
    return village


def _override(village_id: int, year: int) -> VillageSalesTarget | None:
    return db.session.scalar(sa.select(VillageSalesTarget).where(
        VillageSalesTarget.village_id == village_id, VillageSalesTarget.year == year))


@dataclass(frozen=True)
class TargetChange:
    """What one change did: the target in force before and after, and whether anything was written."""

    village: Village
    year: int
    before_fen: int
    after_fen: int
    written: bool


_UNKNOWN = object()


def _apply(actor: User | None, village: Village, year: int, target_fen: int | None, reason: str,
           source: str, known=_UNKNOWN) -> TargetChange:
    """Set (``target_fen``) or clear (None) one override in the open transaction, audited.

    Setting the value already set, or clearing what is not set, writes nothing.
    """
    override = _override(village.id, year) if known is _UNKNOWN else known
    before = override.target_fen if override is not None else village.sales_target_fen
    if target_fen is None:
        if override is None:
            return TargetChange(village, year, before, before, False)
        db.session.delete(override)
        after, action = village.sales_target_fen, "sales_target_cleared"
    else:
        if before == target_fen:
            # Already in force (set, or the default with nothing set): an untouched spreadsheet
            # row pins nothing and says nothing on the audit trail.
            return TargetChange(village, year, before, before, False)
        if override is None:
            db.session.add(VillageSalesTarget(village_id=village.id, year=year, target_fen=target_fen))
        else:
            override.target_fen = target_fen
        after, action = target_fen, "sales_target_set"
    db.session.flush()
    record_event(subject_type="village", subject_id=village.id, action=action, actor=actor, comment=reason,
                 data={"year": year, "from_fen": before, "to_fen": after, "source": source})
    db.session.expire(village, ["targets"])
    return TargetChange(village, year, before, after, True)


def set_target(actor: User, village_id: int, year: int, data: dict) -> TargetChange:
    """Set a village's target for one year (official, admin).

    :raise ValidationFailed: a bad year or amount (422; nothing changes).
    :raise NotFound: no such village.
    """
    _ensure_setter(actor)
    _check_year(year)
    try:
        fields_ = VillageTargetSchema().load(data)
    except ValidationError as exc:
        raise ValidationFailed(fields=exc.messages) from None
    village = _village(village_id)
    with _target_race():
        change = _apply(actor, village, year, fields_["target_fen"], fields_["reason"].strip(), "single")
    return change


def _target_race():
    """Commit the block; two people setting the same village and year at once: the one whose row
    the unique key refuses (at a flush or the commit) is told to retry."""
    return unique_or_conflict("该村该年度的目标刚被他人修改，请刷新后重试", "target_changed")


def clear_target(actor: User, village_id: int, year: int, reason: str = "") -> TargetChange:
    """Go back to the default target for one year (official, admin).

    :raise NotFound: no such village, or no target of its own for that year.
    """
    _ensure_setter(actor)
    _check_year(year)
    village = _village(village_id)
    if _override(village_id, year) is None:
        raise NotFound("该村该年度没有单独设定的目标")
    with _target_race():
        change = _apply(actor, village, year, None, (reason or "").strip()[:MAX_REASON], "single")
    return change


def _ensure_setter(actor: User | None) -> None:
    """:raise Forbidden: someone other than an official or administrator (None is the command line)."""
    if actor is not None and not actor.has_role(*TARGET_SETTERS):
        raise Forbidden("只有州级官员或管理员可以设定销售目标")


def targets_of(village_id: int) -> tuple[Village, list[VillageSalesTarget]]:
    """A village and its per-year overrides, newest year first."""
    village = _village(village_id)
    rows = list(db.session.scalars(sa.select(VillageSalesTarget).where(VillageSalesTarget.village_id == village_id)
                                   .order_by(VillageSalesTarget.year.desc())))
    return village, rows


def target_history(village_id: int) -> list[dict]:
    """The changes to a village's targets, newest first: ``at``, ``action``, ``actor`` (a User or
    None for the command line), ``comment``, ``year``, ``from_fen``, ``to_fen``, ``source``."""
    events = [event for event in reversed(history_of("village", village_id))
              if event.action in ("sales_target_set", "sales_target_cleared")]
    actor_ids = {event.actor_id for event in events if event.actor_id is not None}
    actors = ({user.id: user for user in db.session.scalars(sa.select(User).where(User.id.in_(actor_ids)))}
              if actor_ids else {})
    return [{"at": event.at, "action": event.action, "actor": actors.get(event.actor_id), "comment": event.comment,
             **json.loads(event.data or "{}")} for event in events]


def targets_by_village(year: int, village_ids=None) -> dict[int, tuple[int, bool]]:
    """``{village_id: (target in force that year, overridden?)}`` in one query."""
    query = (sa.select(Village.id, Village.sales_target_fen, VillageSalesTarget.target_fen)
             .outerjoin(VillageSalesTarget, sa.and_(VillageSalesTarget.village_id == Village.id,
                                                    VillageSalesTarget.year == year)))
    if village_ids is not None:
        query = query.where(Village.id.in_(list(village_ids)))
    return {vid: (override if override is not None else default, override is not None)
            for vid, default, override in db.session.execute(query)}


# --------------------------------------------------------------------------- spreadsheets

def export_csv(year: int, county: str | None = None) -> str:
    """Every village (of ``county``) with its target for ``year``, ready to edit and import back."""
    _check_year(year)
    query = sa.select(Village).order_by(Village.id)
    if county:
        query = query.where(Village.county == county)
    villages = list(db.session.scalars(query))
    targets = targets_by_village(year, [v.id for v in villages] if county else None)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for village in villages:
        fen = targets[village.id][0]
        writer.writerow([village.id, village.county, village.township, village.name,
                         ZONE_LABELS.get(village.zone, "") if village.zone else "", year, f"{fen // 100}"
                         + (f".{fen % 100:02d}" if fen % 100 else "")])
    return "\ufeff" + out.getvalue()  # BOM: Excel opens UTF-8 CSV as such only with it


@dataclass
class ImportReport:
    """What an import did (or, with errors, why it did nothing)."""

    rows: int = 0
    changed: int = 0
    unchanged: int = 0
    errors: list[str] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _decode(data: bytes) -> str:
    """Spreadsheets save CSV as UTF-8 (with or without BOM) or, from Chinese Excel, GB18030."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValidationFailed("文件编码无法识别，请另存为 UTF-8 或 GBK 编码的 CSV", code="invalid_csv")


def import_csv(actor: User | None, data: bytes, *, reason: str = "") -> ImportReport:
    """Set many targets from a CSV laid out as ``export_csv`` writes it, all or nothing.

    A row names its village by 村ID, checked against 县市/乡镇/村 so that a row shifted in a
    spreadsheet cannot land on the wrong village. An empty target cell leaves that village as
    it is. ``actor`` None is the command line (recorded as such on the audit trail).

    :return: the counts; with ``errors`` (line by line, in Chinese) nothing was changed.
    """
    _ensure_setter(actor)
    if len(data) > MAX_IMPORT_BYTES:
        raise ValidationFailed("文件过大（上限 2 MB）", code="file_too_large")
    try:
        rows = list(csv.reader(io.StringIO(_decode(data))))
    except csv.Error as exc:  # an unterminated quote, a cell over the csv module's field limit
        raise ValidationFailed(f"CSV 格式有误：{exc}", code="invalid_csv") from None
    report = ImportReport(errors=[])
    if not rows or tuple(cell.strip() for cell in rows[0][:len(CSV_HEADER)]) != CSV_HEADER:
        report.errors.append("第 1 行须为表头：" + ",".join(CSV_HEADER) + "（请先下载模板）")
        return report
    villages = {v.id: v for v in db.session.scalars(sa.select(Village))}
    wanted: dict[tuple[int, int], tuple[Village, int, int]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row] + [""] * (len(CSV_HEADER) - len(row))
        village_id, county, township, name, _zone, year_text, target_text = cells[:len(CSV_HEADER)]
        problem = None
        village = villages.get(whole_number(village_id))
        year = whole_number(year_text)
        fen = parse_yuan(target_text) if target_text else None
        if village is None:
            problem = f"村ID“{village_id}”不存在"
        elif (village.county, village.township, village.name) != (county, township, name):
            problem = f"村ID {village.id} 是{village.county}{village.township}{village.name}，与本行的“{county}{township}{name}”不符"
        elif year is None or not FIRST_YEAR <= year <= LAST_YEAR:
            problem = f"年度“{year_text}”须为 {FIRST_YEAR} 到 {LAST_YEAR} 之间的整数"
        elif not target_text:
            continue  # left empty: this village stays as it is
        elif fen is None:
            problem = f"销售目标“{target_text}”不是金额（元，最多两位小数）"
        elif not 0 <= fen <= MAX_TARGET_FEN:
            problem = "销售目标须在 0 到 1 亿元之间"
        elif (village.id, year) in wanted and wanted[(village.id, year)][2] != fen:
            problem = f"与第 {wanted[(village.id, year)][1]} 行重复且目标不同"
        if problem:
            report.errors.append(f"第 {line} 行：{problem}")
            if len(report.errors) >= MAX_IMPORT_ERRORS:
                report.errors.append("错误过多，其余行未检查")
                break
            continue
        wanted[(village.id, year)] = (village, line, fen)
    if report.errors:
        return report
    report.errors = None
    existing = {(row.village_id, row.year): row for row in db.session.scalars(
        sa.select(VillageSalesTarget).where(VillageSalesTarget.year.in_({year for _, year in wanted})))}
    with _target_race():  # all rows or none
        for (village_id, year), (village, _, fen) in sorted(wanted.items(), key=lambda item: item[0]):
            change = _apply(actor, village, year, fen, (reason or "").strip()[:MAX_REASON], "csv_import",
                            known=existing.get((village_id, year)))
            report.rows += 1
            if change.written:
                report.changed += 1
            else:
                report.unchanged += 1
    return report
