"""Kernel models: people and roles, the village registry, cooperatives and budget units.

Domain packages (shop, certification, traceability, search) reference these; they never
reference each other's models directly.
"""
import enum

import sqlalchemy as sa
from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from core.extensions import db
from core.timeutil import UTCDateTime, utcnow


class Role(str, enum.Enum):
    """The roles fixed by the contract."""

    CONSUMER = "consumer"
    COOPERATIVE = "cooperative"
    COUNTY_REVIEWER = "county_reviewer"
    PREFECTURE_REVIEWER = "prefecture_reviewer"
    CANTEEN_BUYER = "canteen_buyer"
    FINANCE = "finance"
    OFFICIAL = "official"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        """Chinese name shown to people."""
        return ROLE_LABELS[self]


ROLE_LABELS = {
    Role.CONSUMER: "消费者",
    Role.COOPERATIVE: "合作社",
    Role.COUNTY_REVIEWER: "县级审核员",
    Role.PREFECTURE_REVIEWER: "州级认定员",
    Role.CANTEEN_BUYER: "食堂采购员",
    Role.FINANCE: "财务",
    Role.OFFICIAL: "官员",
    Role.ADMIN: "管理员",
}

ROLE_VALUES = tuple(role.value for role in Role)


class User(db.Model):
    """A person who signs in; scoped by county, cooperative or budget unit per role."""

    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint(sa.column("role").in_(ROLE_VALUES), name="role_known"),
    )

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(254), nullable=False, unique=True)
    display_name = db.Column(db.String(100), nullable=False, default="")
    password_hash = db.Column(db.String(255), nullable=False)
    role = db.Column(db.String(32), nullable=False, default=Role.CONSUMER.value)
    county = db.Column(db.String(20), nullable=True)
    cooperative_id = db.Column(db.Integer, db.ForeignKey("cooperatives.id"), nullable=True)
    budget_unit_id = db.Column(db.Integer, db.ForeignKey("budget_units.id"), nullable=True)
    # Bumped to invalidate every API token issued before (password change, lock-out).
    token_generation = db.Column(db.Integer, nullable=False, default=0)
    is_active = db.Column(db.Boolean, nullable=False, default=True)
    #: A canteen buyer who approves its unit's orders above the unit's approval threshold.
    is_approver = db.Column(db.Boolean, nullable=False, default=False, server_default=sa.false())
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    cooperative = db.relationship("Cooperative", foreign_keys=[cooperative_id])
    budget_unit = db.relationship("BudgetUnit", foreign_keys=[budget_unit_id])

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password`` (Werkzeug scrypt unless configured otherwise)."""
        method = current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
        self.password_hash = generate_password_hash(password, method=method)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    @property
    def role_enum(self) -> Role:
        return Role(self.role)

    def has_role(self, *roles: Role) -> bool:
        """True when the user holds one of ``roles``."""
        return self.role in {role.value for role in roles}


class Village(db.Model):
    """A village (村/社区) of the registry, identified by (county, township, name)."""

    __tablename__ = "villages"
    __table_args__ = (
        sa.UniqueConstraint("county", "township", "name", name="uq_villages_place"),
        sa.CheckConstraint(
            "zone IS NULL OR zone IN ('demonstration', 'key_support', 'consolidation_1', 'consolidation_2')",
            name="zone_known",
        ),
        sa.CheckConstraint("sales_target_fen >= 0", name="target_not_negative"),
    )

    id = db.Column(db.Integer, primary_key=True)
    county = db.Column(db.String(20), nullable=False, index=True)
    township = db.Column(db.String(40), nullable=False)
    name = db.Column(db.String(40), nullable=False)
    # Null for a village outside the plan's list of 1,110 脱贫村.
    zone = db.Column(db.String(20), nullable=True, index=True)
    # Default yearly target; a VillageSalesTarget row overrides it for one year.
    sales_target_fen = db.Column(db.BigInteger, nullable=False, default=15_000_000)

    targets = db.relationship("VillageSalesTarget", back_populates="village",
                              cascade="all, delete-orphan", lazy="selectin")

    def target_for(self, year: int) -> int:
        """Return the sales target in fen for a Shanghai calendar year."""
        for target in self.targets:
            if target.year == year:
                return target.target_fen
        return self.sales_target_fen


class VillageSalesTarget(db.Model):
    """A per-year override of a village's consumption-assistance sales target."""

    __tablename__ = "village_sales_targets"
    __table_args__ = (
        sa.UniqueConstraint("village_id", "year", name="uq_village_sales_targets_village_year"),
        sa.CheckConstraint("target_fen >= 0", name="target_not_negative"),
    )

    id = db.Column(db.Integer, primary_key=True)
    village_id = db.Column(db.Integer, db.ForeignKey("villages.id", ondelete="CASCADE"), nullable=False)
    year = db.Column(db.Integer, nullable=False)
    target_fen = db.Column(db.BigInteger, nullable=False)

    village = db.relationship("Village", back_populates="targets")


class Cooperative(db.Model):
    """A 合作社: a legal entity with a unified social credit code and a home village."""

    __tablename__ = "cooperatives"

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False)
    credit_code = db.Column(db.String(18), nullable=False, unique=True)
    village_id = db.Column(db.Integer, db.ForeignKey("villages.id"), nullable=False, index=True)
    contact_name = db.Column(db.String(50), nullable=False)
    contact_phone = db.Column(db.String(30), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    village = db.relationship("Village", lazy="joined")

    @property
    def county(self) -> str:
        """The county the cooperative belongs to (that of its home village)."""
        return self.village.county


class BudgetUnit(db.Model):
    """A 预算单位 that runs a government canteen and reserves a share of its food budget."""

    __tablename__ = "budget_units"
    __table_args__ = (
        sa.CheckConstraint("annual_canteen_budget_fen >= 0", name="budget_not_negative"),
        sa.CheckConstraint("reserved_share >= 0 AND reserved_share <= 1", name="share_is_ratio"),
        sa.CheckConstraint("approval_threshold_fen IS NULL OR approval_threshold_fen >= 0",
                           name="approval_threshold_not_negative"),
    )

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False, unique=True)
    annual_canteen_budget_fen = db.Column(db.BigInteger, nullable=False, default=0)
    # A decimal ratio such as 0.10 (财库〔2021〕19号 asks at least 10%).
    reserved_share = db.Column(db.Numeric(5, 4), nullable=False, default=0)
    #: Orders of more than this many fen wait for the unit's approver; NULL: no internal approval.
    approval_threshold_fen = db.Column(db.BigInteger, nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class BudgetUnitYear(db.Model):
    """A unit's canteen budget and reserved share for one Shanghai year, kept apart from the unit's
    own values so that later changes never move a year's figures (``core.budget_units``)."""

    __tablename__ = "budget_unit_years"
    __table_args__ = (
        sa.UniqueConstraint("budget_unit_id", "year", name="uq_budget_unit_years_unit_year"),
        sa.CheckConstraint("annual_canteen_budget_fen >= 0", name="budget_not_negative"),
        sa.CheckConstraint("reserved_share >= 0 AND reserved_share <= 1", name="share_is_ratio"),
    )

    id = db.Column(db.Integer, primary_key=True)
    budget_unit_id = db.Column(db.Integer, db.ForeignKey("budget_units.id", ondelete="CASCADE"), nullable=False)
    year = db.Column(db.Integer, nullable=False)
    annual_canteen_budget_fen = db.Column(db.BigInteger, nullable=False)
    reserved_share = db.Column(db.Numeric(5, 4), nullable=False)


class RevokedSession(db.Model):
    """A signed-out session cookie or API token, refused until it would have expired anyway.

    Sessions and tokens are signed and carry a random ``sid``; nothing is written when one is
    issued. Signing out writes its ``sid`` here, so a copied cookie or token stops working at
    once, and the row can go once ``expires_at`` has passed (the signature check refuses it
    from then on). Revoking *all* of a user's sessions is ``User.token_generation += 1``.
    """

    __tablename__ = "revoked_sessions"

    sid = db.Column(db.String(32), primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    revoked_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = db.Column(UTCDateTime, nullable=False, index=True)
