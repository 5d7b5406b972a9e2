"""Cooperative (合作社) use cases."""
import sqlalchemy as sa

from core.audit import record_event
from core.auth import ensure_county
from core.db import unique_or_conflict
from core.errors import Conflict, NotFound, ValidationFailed
from core.extensions import db
from core.models import Cooperative, Role, User, Village
from core.schemas import CooperativeSchema


def register_cooperative(actor: User, data: dict) -> Cooperative:
    """Register a cooperative in a village of the actor's county.

    :raise ValidationFailed: invalid input or unknown village (422).
    :raise Forbidden: a county reviewer registering outside their county.
    :raise Conflict: the credit code is already registered (409).
    """
    fields = CooperativeSchema().load(data)
    village = db.session.get(Village, fields["village_id"])
    if village is None:
        raise ValidationFailed(fields={"village_id": ["村不存在"]})
    ensure_county(actor, village.county)
    taken = db.session.scalar(sa.select(Cooperative.id).where(Cooperative.credit_code == fields["credit_code"]))
    if taken is not None:
        raise Conflict("该统一社会信用代码已登记", code="duplicate_credit_code")
    # Two registrations of one code can both pass the check above; the unique key stops one.
    with unique_or_conflict("该统一社会信用代码已登记", "duplicate_credit_code"):
        cooperative = Cooperative(**fields)
        db.session.add(cooperative)
        db.session.flush()
        record_event(subject_type="cooperative", subject_id=cooperative.id, action="register",
                     actor=actor, to_state="registered", data={"credit_code": cooperative.credit_code})
    return cooperative


def get_cooperative(cooperative_id: int) -> Cooperative:
    """Return a cooperative by id.

    :raise NotFound: no such cooperative.
    """
    cooperative = db.session.get(Cooperative, cooperative_id)
    if cooperative is None:
        raise NotFound("合作社不存在")
    return cooperative


def cooperatives_visible_to(actor: User) -> list[Cooperative]:
    """Cooperatives an administrator (all) or a county reviewer (own county) manages."""
    query = sa.select(Cooperative).join(Village).order_by(Village.county, Cooperative.name)
    if not actor.has_role(Role.ADMIN, Role.PREFECTURE_REVIEWER):
        query = query.where(Village.county == actor.county)
    return list(db.session.scalars(query))
