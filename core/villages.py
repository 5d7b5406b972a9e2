"""The village registry: loading the plan's list into the database, and finding villages."""
import sqlalchemy as sa

from core.errors import NotFound
from core.extensions import db
from core.models import Village
from core.village_registry import load_plan_villages


def load_registry() -> tuple[int, int]:
    """Insert the plan's villages that are missing and fix zones that changed.

    Idempotent: run on every ``setup``. Villages are matched on (county, township, name),
    so ids stay stable and targets set by officials are never overwritten.

    :return: (villages added, villages whose zone was corrected)
    """
    existing = {
        (v.county, v.township, v.name): v
        for v in db.session.scalars(sa.select(Village))
    }
    added = updated = 0
    for plan_village in load_plan_villages():
        key = (plan_village.county, plan_village.township, plan_village.name)
        village = existing.get(key)
        if village is None:
            db.session.add(Village(county=plan_village.county, township=plan_village.township,
                                   name=plan_village.name, zone=plan_village.zone))
            added += 1
        elif village.zone != plan_village.zone:
            village.zone = plan_village.zone
            updated += 1
    db.session.commit()
    return added, updated


def filtered_villages(*, county=None, township=None, zone=None, q=None):
    """Return a SELECT of villages matching the filters, in registry order."""
    query = sa.select(Village)
    if county:
        query = query.where(Village.county == county)
    if township:
        query = query.where(Village.township == township)
    if zone:
        query = query.where(Village.zone == zone)
    if q:
        pattern = f"%{q.strip()}%"
        query = query.where(sa.or_(Village.name.like(pattern), Village.township.like(pattern)))
    return query.order_by(Village.id)


def get_village(village_id: int) -> Village:
    """Return a village by id.

    :raise NotFound: no such village.
    """
    village = db.session.get(Village, village_id)
    if village is None:
        raise NotFound("村不存在")
    return village


def townships_of(county: str) -> dict[str, list[Village]]:
    """Return a county's villages grouped by township, in registry order."""
    grouped: dict[str, list[Village]] = {}
    for village in db.session.scalars(filtered_villages(county=county)):
        grouped.setdefault(village.township, []).append(village)
    return grouped
