"""Production batches: the unit of traceability and of sellable stock."""
import sqlalchemy as sa

from core.extensions import db
from core.timeutil import UTCDateTime, utcnow

# 承诺依据 on the 承诺达标合格证 (domain.md).
COMMITMENT_BASIS_LABELS = {
    "quality_control": "质量安全控制",
    "self_test": "自行检测",
    "entrusted_test": "委托检测",
}


class Batch(db.Model):
    """A lot of one certified product from one of its villages.

    ``quantity`` is what was produced; ``available_quantity`` is what is still sellable
    (reservations take units from it, releases give them back). Shop code must change
    ``available_quantity`` only under a row lock (see shop stock allocation).
    """

    __tablename__ = "batches"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "lot", name="uq_batches_product_lot"),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("available_quantity >= 0 AND available_quantity <= quantity", name="available_in_range"),
        sa.Index("ix_batches_product_produced", "product_id", "produced_on", "id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id"), nullable=False)
    village_id = db.Column(db.Integer, db.ForeignKey("villages.id"), nullable=False, index=True)
    lot = db.Column(db.String(40), nullable=False)
    produced_on = db.Column(db.Date, nullable=False)
    expires_on = db.Column(db.Date, nullable=True)
    quantity = db.Column(db.Integer, nullable=False)
    available_quantity = db.Column(db.Integer, nullable=False)
    commitment_basis = db.Column(db.String(20), nullable=False, default="quality_control")
    created_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    product = db.relationship("Product", lazy="joined")
    village = db.relationship("Village", lazy="joined")
