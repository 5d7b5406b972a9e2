"""Test data builders: the smallest valid record of each kind, overridable by keyword."""
import itertools

import sqlalchemy as sa

from core.auth import issue_token
from core.demo import demo_credit_code
from core.extensions import db
from core.models import BudgetUnit, Cooperative, Role, User, Village

_sequence = itertools.count(1)


class Factory:
    """Builds committed records; ``token(user)`` gives an API bearer header for them."""

    def __init__(self, app):
        self.app = app

    def village(self, county="古丈县", name=None) -> Village:
        """Return a registry village, the first in ``county`` unless ``name`` is given."""
        query = sa.select(Village).where(Village.county == county)
        if name:
            query = query.where(Village.name == name)
        return db.session.scalars(query.order_by(Village.id).limit(1)).one()

    def cooperative(self, village: Village | None = None, **fields) -> Cooperative:
        n = next(_sequence)
        cooperative = Cooperative(
            name=fields.pop("name", f"测试合作社{n}"),
            credit_code=fields.pop("credit_code", demo_credit_code(100000 + n)),
            village=village or self.village(),
            contact_name="联系人", contact_phone="0743-1234567", **fields,
        )
        db.session.add(cooperative)
        db.session.commit()
        return cooperative

    def budget_unit(self, **fields) -> BudgetUnit:
        n = next(_sequence)
        unit = BudgetUnit(name=fields.pop("name", f"测试预算单位{n}"),
                          annual_canteen_budget_fen=fields.pop("annual_canteen_budget_fen", 10_000_000),
                          reserved_share=fields.pop("reserved_share", "0.10"), **fields)
        db.session.add(unit)
        db.session.commit()
        return unit

    def user(self, role: Role | str = Role.CONSUMER, password="password123", **fields) -> User:
        role = Role(role)
        n = next(_sequence)
        if role is Role.COUNTY_REVIEWER:
            fields.setdefault("county", "古丈县")
        if role is Role.COOPERATIVE and "cooperative_id" not in fields and "cooperative" not in fields:
            fields["cooperative"] = self.cooperative()
        if role is Role.CANTEEN_BUYER and "budget_unit_id" not in fields and "budget_unit" not in fields:
            fields["budget_unit"] = self.budget_unit()
        user = User(email=fields.pop("email", f"{role.value}{n}@test.cn"),
                    display_name=fields.pop("display_name", f"{role.label}{n}"), role=role.value, **fields)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
        return user

    def headers(self, user: User) -> dict:
        """Authorization header for ``user``."""
        return {"Authorization": f"Bearer {issue_token(user)}"}
