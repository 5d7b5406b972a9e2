"""Production batches (the unit of traceability and of sellable stock), item serials, the
EPCIS-like event history of a batch, and the scan log."""
import sqlalchemy as sa

from core.extensions import db
from core.timeutil import UTCDateTime, utcnow

# 承诺依据 on the 承诺达标合格证 (domain.md).
COMMITMENT_BASIS_LABELS = {
    "quality_control": "质量安全控制",
    "self_test": "自行检测",
    "entrusted_test": "委托检测",
}

# 承诺事项: the statements every 承诺达标合格证 carries; the producer signs all of them.
COMMITMENT_STATEMENTS = (
    "不使用禁用农药兽药、停用兽药和非法添加物",
    "常规农药兽药残留不超标",
    "对承诺的真实性负责",
)

# EPCIS business steps (CBV) of the subset we track, in supply-chain order, with Chinese labels.
BIZ_STEP_LABELS = {
    "commissioning": "生产赋码",
    "shipping": "发货",
    "receiving": "收货",
    "retail_selling": "零售",
}
# Steps a cooperative records by hand; commissioning is written when the batch is created.
MANUAL_BIZ_STEPS = ("shipping", "receiving", "retail_selling")

# Coarse client classes kept in the scan log (no IP address, no full user-agent).
DEVICE_CLASSES = ("mobile", "tablet", "desktop", "bot", "other")
#: How pages name the coarse client classes kept in the scan log.
DEVICE_LABELS = {"mobile": "手机", "tablet": "平板", "desktop": "电脑", "bot": "机器人", "other": "其他"}
CLIENT_LABELS = {"wechat": "微信", "alipay": "支付宝", "qq": "QQ", "dingtalk": "钉钉", "weibo": "微博",
                 "edge": "Edge 浏览器", "firefox": "火狐浏览器", "chrome": "Chrome 浏览器", "safari": "Safari 浏览器",
                 "bot": "机器人", "other": "其他"}


class Batch(db.Model):
    """A lot of one certified product from one of its villages.

    ``quantity`` is what was produced; ``available_quantity`` is what is still sellable
    (reservations take units from it, releases give them back). Shop code must change
    ``available_quantity`` only under a row lock (see shop stock allocation).

    The batch is also an electronic 承诺达标合格证: ``committer`` (承诺主体) and
    ``contact_phone`` (联系方式) are copied from the cooperative when the batch is created,
    because an issued certificate must keep saying what it said on the day it was issued.
    """

    __tablename__ = "batches"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "lot", name="uq_batches_product_lot"),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("available_quantity >= 0 AND available_quantity <= quantity", name="available_in_range"),
        sa.CheckConstraint("expires_on IS NULL OR expires_on >= produced_on", name="expiry_after_production"),
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
    # Null: the product's unit at the time of reading (batches made before units were recorded).
    unit = db.Column(db.String(20), nullable=True)
    commitment_basis = db.Column(db.String(20), nullable=False, default="quality_control")
    committer = db.Column(db.String(120), nullable=True)
    contact_phone = db.Column(db.String(30), nullable=True)
    created_by_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    product = db.relationship("Product", lazy="joined")
    village = db.relationship("Village", lazy="joined")

    @property
    def unit_label(self) -> str:
        """The unit the quantity is counted in."""
        return self.unit or self.product.unit

    @property
    def committer_name(self) -> str:
        """承诺主体: the cooperative as it was named when the certificate was issued."""
        return self.committer or self.product.cooperative.name

    @property
    def contact(self) -> str:
        """联系方式 printed on the certificate."""
        return self.contact_phone or self.product.cooperative.contact_phone

    @property
    def commitment_basis_label(self) -> str:
        return COMMITMENT_BASIS_LABELS.get(self.commitment_basis, self.commitment_basis)


class BatchScanCounter(db.Model):
    """How often the batch-level code was scanned, and when first.

    A table of its own (not columns on ``batches``) because the shop locks batch rows while
    it reserves stock; a scan must never wait behind an order.
    """

    __tablename__ = "batch_scan_counters"

    batch_id = db.Column(db.Integer, db.ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    count = db.Column(db.Integer, nullable=False, default=0)
    first_at = db.Column(UTCDateTime, nullable=True)
    last_at = db.Column(UTCDateTime, nullable=True)


class ScanFlush(db.Model):
    """One write of a worker's buffered scans, by its random token (traceability/scanning.py).

    Inserted in the same transaction as the counts it adds, so a write whose COMMIT was sent but
    not acknowledged (a dropped connection) can be retried safely: if it had committed, the
    token is already here, the retry fails on the key and adds nothing. Rows older than 30 days
    are pruned by the writers.
    """

    __tablename__ = "scan_flushes"

    token = db.Column(db.String(32), primary_key=True)
    written_at = db.Column(UTCDateTime, nullable=False, index=True)


class Serial(db.Model):
    """One item label of a batch: an unguessable serial with its own scan counter."""

    __tablename__ = "batch_serials"
    __table_args__ = (sa.CheckConstraint("scan_count >= 0", name="scan_count_not_negative"),)

    id = db.Column(db.Integer, primary_key=True)
    batch_id = db.Column(db.Integer, db.ForeignKey("batches.id", ondelete="CASCADE"), nullable=False, index=True)
    serial = db.Column(db.String(20), nullable=False, unique=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    scan_count = db.Column(db.Integer, nullable=False, default=0)
    first_scanned_at = db.Column(UTCDateTime, nullable=True)
    last_scanned_at = db.Column(UTCDateTime, nullable=True)


class TraceEvent(db.Model):
    """One EPCIS-like ObjectEvent of a batch: what happened (biz_step), when, where, with whom."""

    __tablename__ = "trace_events"
    __table_args__ = (
        sa.CheckConstraint(sa.column("biz_step").in_(tuple(BIZ_STEP_LABELS)), name="biz_step_known"),
        sa.CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity_positive"),
        sa.Index("ix_trace_events_batch_time", "batch_id", "event_time", "id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    batch_id = db.Column(db.Integer, db.ForeignKey("batches.id", ondelete="CASCADE"), nullable=False)
    biz_step = db.Column(db.String(20), nullable=False)
    event_time = db.Column(UTCDateTime, nullable=False, default=utcnow)
    recorded_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    actor_id = db.Column(db.Integer, db.ForeignKey("users.id"), nullable=True)
    # EPCIS readPoint (a place in words, e.g. "吉首市经开区冷链仓") and the trading partner.
    location = db.Column(db.String(120), nullable=False, default="")
    partner = db.Column(db.String(120), nullable=False, default="")
    quantity = db.Column(db.Integer, nullable=True)
    note = db.Column(db.String(500), nullable=False, default="")

    @property
    def biz_step_label(self) -> str:
        return BIZ_STEP_LABELS.get(self.biz_step, self.biz_step)


class ScanEvent(db.Model):
    """One scan of a trace URL: when, which code, and a coarse client class.

    No IP address (not even truncated) and no full user-agent: the anti-counterfeit signal
    is the per-code count, which needs neither, and PIPL asks for the minimum.

    No foreign keys, deliberately: this append-only log is written on every scan, and an FK
    check would both cost a lookup and take a KEY SHARE lock on the batch row, making scans
    wait behind the shop's stock reservations (SELECT ... FOR UPDATE on batches). Rows are
    only written by the scan statement, with ids it has just matched.
    """

    __tablename__ = "scan_events"
    __table_args__ = (sa.Index("ix_scan_events_batch_id_id", "batch_id", "id"),)

    id = db.Column(db.Integer, primary_key=True)
    at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    batch_id = db.Column(db.Integer, nullable=False)
    serial_id = db.Column(db.Integer, nullable=True)
    device_class = db.Column(db.String(10), nullable=False, default="other")
    # The app or browser family only (微信, 支付宝, Chrome ...).
    client = db.Column(db.String(20), nullable=False, default="other")
    # True when a machine asked for JSON (a scanner app), false for a person's browser.
    as_json = db.Column(db.Boolean, nullable=False, default=False)


FAKE_REASONS = ("label_mismatch", "scanned_often", "price_too_low", "seller_unknown", "other")
FAKE_REASON_LABELS = {"label_mismatch": "标签、包装与页面不符", "scanned_often": "提示扫码次数异常",
                      "price_too_low": "售价明显偏低", "seller_unknown": "卖家不是页面上的合作社", "other": "其他"}


class FakeReport(db.Model):
    """A consumer's "this looks fake" about a scanned code, for the prefecture to follow up.

    ``batch_id``/``serial`` are set only when the reported code's signature verified (a copied
    genuine label: the serial to watch); an unverifiable code is kept as the text reported.
    No address or device is stored; ``contact`` only if the person chose to leave one.
    """

    __tablename__ = "fake_reports"
    __table_args__ = (
        sa.CheckConstraint(sa.column("reason").in_(FAKE_REASONS), name="reason_known"),
        sa.Index("ix_fake_reports_batch_serial", "batch_id", "serial"),
    )

    id = db.Column(db.Integer, primary_key=True)
    code = db.Column(db.String(600), nullable=False)
    authentic = db.Column(db.Boolean, nullable=False)
    batch_id = db.Column(db.Integer, db.ForeignKey("batches.id", ondelete="SET NULL"), nullable=True)
    serial = db.Column(db.String(20), nullable=True)
    reason = db.Column(db.String(20), nullable=False)
    note = db.Column(db.String(500), nullable=False, default="")
    contact = db.Column(db.String(60), nullable=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    batch = db.relationship("Batch")

    @property
    def reason_label(self) -> str:
        return FAKE_REASON_LABELS[self.reason]
