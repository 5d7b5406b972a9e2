"""Products, their origin villages and bulk terms, certification applications and evidence."""
import enum

import sqlalchemy as sa

from core.extensions import db
from core.timeutil import UTCDateTime, utcnow

# The region's leading industries (domain.md); codes in English, labels shown to people.
CATEGORY_LABELS = {
    "tea": "茶叶",
    "berry_tea": "莓茶",
    "kiwifruit": "猕猴桃",
    "citrus": "柑橘",
    "camellia_oil": "油茶",
    "rice": "优质稻米",
    "vegetables": "高山蔬菜",
    "herbs": "中药材",
    "pork": "湘西黑猪",
    "beef": "湘西黄牛",
    "lily": "百合",
    "buckwheat": "苦荞",
    "crafts": "手工艺品",
    "other": "其他",
}


class ProductStatus(str, enum.Enum):
    """Where a product stands with the brand. ``expired`` is derived from the date, never stored."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    COUNTY_APPROVED = "county_approved"
    CERTIFIED = "certified"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


class CertificationStatus(str, enum.Enum):
    """Stages of one application. ``expired`` is derived from ``valid_until``, never stored."""

    SUBMITTED = "submitted"
    COUNTY_APPROVED = "county_approved"
    CERTIFIED = "certified"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


IN_PROGRESS = (CertificationStatus.SUBMITTED.value, CertificationStatus.COUNTY_APPROVED.value)

EVIDENCE_TYPE_LABELS = {
    "green_food": "绿色食品",
    "organic": "有机产品",
    "geographical_indication": "农产品地理标志",
    "compliance_certificate": "承诺达标合格证",
    "other": "其他",
}

product_villages = db.Table(
    "product_villages",
    db.Column("product_id", db.Integer, db.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
    db.Column("village_id", db.Integer, db.ForeignKey("villages.id"), primary_key=True),
)


class Product(db.Model):
    """A cooperative's product. May carry the brand only through a valid certificate."""

    __tablename__ = "products"
    __table_args__ = (
        sa.CheckConstraint("price_fen > 0", name="price_positive"),
        sa.CheckConstraint("bulk_moq IS NULL OR bulk_moq > 0", name="moq_positive"),
    )

    id = db.Column(db.Integer, primary_key=True)
    cooperative_id = db.Column(db.Integer, db.ForeignKey("cooperatives.id"), nullable=False, index=True)
    name = db.Column(db.String(120), nullable=False)
    category = db.Column(db.String(30), nullable=False, index=True)
    description = db.Column(db.Text, nullable=False, default="")
    unit = db.Column(db.String(20), nullable=False)
    specification = db.Column(db.String(120), nullable=False, default="")
    price_fen = db.Column(db.BigInteger, nullable=False)
    gtin = db.Column(db.String(14), nullable=True, unique=True)
    bulk_moq = db.Column(db.Integer, nullable=True)
    # Workflow state; "expired" is computed from the certificate's date (see services.product_status).
    status = db.Column(db.String(20), nullable=False, default=ProductStatus.DRAFT.value, index=True)
    # The certificate that currently grants the brand; kept while a renewal is reviewed.
    certificate_id = db.Column(db.Integer, db.ForeignKey("certifications.id", use_alter=True,
                                                          name="fk_products_certificate_id_certifications"),
                               nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)

    cooperative = db.relationship("Cooperative", lazy="joined")
    villages = db.relationship("Village", secondary=product_villages, lazy="selectin", order_by="Village.id")
    bulk_tiers = db.relationship("BulkTier", cascade="all, delete-orphan", lazy="selectin",
                                 order_by="BulkTier.min_qty", back_populates="product")
    images = db.relationship("ProductImage", cascade="all, delete-orphan", lazy="selectin",
                             order_by="ProductImage.position", back_populates="product")
    certificate = db.relationship("Certification", foreign_keys=[certificate_id], post_update=True, lazy="joined")
    applications = db.relationship("Certification", foreign_keys="Certification.product_id",
                                   order_by="Certification.id", back_populates="product")

    @property
    def category_label(self) -> str:
        return CATEGORY_LABELS.get(self.category, self.category)


class BulkTier(db.Model):
    """A canteen price tier: from ``min_qty`` units the unit price is ``price_fen``."""

    __tablename__ = "bulk_tiers"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "min_qty", name="uq_bulk_tiers_product_min_qty"),
        sa.CheckConstraint("min_qty > 0 AND price_fen > 0", name="tier_positive"),
    )

    id = db.Column(db.Integer, primary_key=True)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    min_qty = db.Column(db.Integer, nullable=False)
    price_fen = db.Column(db.BigInteger, nullable=False)

    product = db.relationship("Product", back_populates="bulk_tiers")


class ProductImage(db.Model):
    """A validated, re-encoded product photo stored under a generated name."""

    __tablename__ = "product_images"

    id = db.Column(db.Integer, primary_key=True)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id", ondelete="CASCADE"), nullable=False, index=True)
    filename = db.Column(db.String(80), nullable=False, unique=True)
    width = db.Column(db.Integer, nullable=False)
    height = db.Column(db.Integer, nullable=False)
    position = db.Column(db.Integer, nullable=False, default=0)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    product = db.relationship("Product", back_populates="images")


class Certification(db.Model):
    """One application for the brand and, once certified, the certificate itself."""

    __tablename__ = "certifications"
    __table_args__ = (
        sa.Index("ix_certifications_status", "status"),
        sa.CheckConstraint("valid_until IS NULL OR valid_from IS NULL OR valid_until >= valid_from",
                           name="validity_ordered"),
    )

    id = db.Column(db.Integer, primary_key=True)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id"), nullable=False, index=True)
    status = db.Column(db.String(20), nullable=False, default=CertificationStatus.SUBMITTED.value)
    # The certificate this application renews, if any (the product stays on sale meanwhile).
    renews_id = db.Column(db.Integer, db.ForeignKey("certifications.id"), nullable=True)
    certificate_no = db.Column(db.String(40), nullable=True, unique=True)
    valid_from = db.Column(db.Date, nullable=True)
    valid_until = db.Column(db.Date, nullable=True)
    submitted_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    decided_at = db.Column(UTCDateTime, nullable=True)
    revoked_reason = db.Column(db.Text, nullable=True)

    product = db.relationship("Product", foreign_keys=[product_id], back_populates="applications")
    evidence = db.relationship("Evidence", cascade="all, delete-orphan", lazy="selectin",
                               order_by="Evidence.id", back_populates="certification")


class Evidence(db.Model):
    """A document supporting an application: 三品一标 or the 承诺达标合格证."""

    __tablename__ = "evidence"

    id = db.Column(db.Integer, primary_key=True)
    certification_id = db.Column(db.Integer, db.ForeignKey("certifications.id", ondelete="CASCADE"),
                                 nullable=False, index=True)
    type = db.Column(db.String(30), nullable=False)
    number = db.Column(db.String(60), nullable=False)
    issuer = db.Column(db.String(120), nullable=False)
    valid_until = db.Column(db.Date, nullable=True)
    # Optional scanned document, stored under a generated name.
    filename = db.Column(db.String(80), nullable=True)

    certification = db.relationship("Certification", back_populates="evidence")

    @property
    def type_label(self) -> str:
        return EVIDENCE_TYPE_LABELS.get(self.type, self.type)
