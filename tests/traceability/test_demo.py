"""The demo hook gives every sellable product batches, serials, events and a few scans."""
import re

import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from tests.certification.factories import certified_product, product
from tests.traceability.helpers import make_gtin14
from traceability import demo, services
from traceability.models import Batch, Serial, TraceEvent


def test_demo_batches_for_every_sellable_product_once(make):
    coop = make.user(Role.COOPERATIVE)
    make.user(Role.ADMIN, email="admin@xiangban.test")
    tea = certified_product(make, cooperative=coop.cooperative, gtin=make_gtin14())
    kiwi = certified_product(make, name="十八洞红心猕猴桃", category="kiwifruit")  # a cooperative without an account
    draft = product(make, cooperative=coop.cooperative, name="未认定的产品")
    lines = demo.load()
    assert "个批次" in lines[0] and any("扫码体验" in line for line in lines)
    batches = db.session.scalars(sa.select(Batch)).all()
    by_product = {item.id: [b for b in batches if b.product_id == item.id] for item in (tea, kiwi, draft)}
    assert len(by_product[tea.id]) == 3 and len(by_product[kiwi.id]) == 2 and by_product[draft.id] == []
    assert all(re.fullmatch(r"(CY|MHT)-2026\d{4}-\d{3}", batch.lot) for batch in batches)
    assert services.available_quantities([tea.id])[tea.id] > 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Serial)) >= 12
    steps = set(db.session.scalars(sa.select(TraceEvent.biz_step)))
    assert steps == {"commissioning", "shipping", "receiving"}
    assert db.session.scalar(sa.select(sa.func.max(Serial.scan_count))) > services.scan_warning_threshold()
    assert demo.load() == ["已有批次，未重复加载演示批次。"]
