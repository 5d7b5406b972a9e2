"""The demo hook gives every sellable product batches in its seasons since certification, serials,
a shipping history in time order and a few scans — none of it before the certificate or after now."""
import re
from datetime import timedelta

import sqlalchemy as sa

from core.audit import verify_chain
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today, to_shanghai, utcnow
from tests.certification.factories import certified_product, product
from tests.traceability.factories import batch
from tests.traceability.helpers import make_gtin14
from traceability import demo, services
from traceability.models import Batch, ScanEvent, Serial, TraceEvent


def test_demo_batches_for_every_sellable_product_once(make):
    coop = make.user(Role.COOPERATIVE)
    make.user(Role.ADMIN, email="admin@xiangban.test")
    certified_on = shanghai_today() - timedelta(days=500)
    tea = certified_product(make, cooperative=coop.cooperative, gtin=make_gtin14(), valid_from=certified_on)
    kiwi = certified_product(make, name="十八洞红心猕猴桃", category="kiwifruit",  # a cooperative without an account
                             valid_from=certified_on)
    draft = product(make, cooperative=coop.cooperative, name="未认定的产品")
    lines = demo.load()
    assert "个批次" in lines[0] and any("扫码体验" in line for line in lines)
    batches = db.session.scalars(sa.select(Batch)).all()
    by_product = {item.id: [b for b in batches if b.product_id == item.id] for item in (tea, kiwi, draft)}
    # Over 500 days every season day came at least once: tea's three, kiwifruit's two.
    assert len(by_product[tea.id]) >= 3 and len(by_product[kiwi.id]) >= 2 and by_product[draft.id] == []
    for item in (tea, kiwi):
        season_days, _ = demo.SEASONS[item.category]
        for made in by_product[item.id]:
            assert (made.produced_on.month, made.produced_on.day) in season_days
            assert certified_on < made.produced_on < shanghai_today()
            assert re.fullmatch(rf"(CY|MHT)-{made.produced_on:%Y%m%d}-\d{{3}}", made.lot)
    assert services.available_quantities([tea.id])[tea.id] > 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Serial)) >= 12
    steps = set(db.session.scalars(sa.select(TraceEvent.biz_step)))
    assert steps == {"commissioning", "shipping", "receiving"}
    assert db.session.scalar(sa.select(sa.func.max(Serial.scan_count))) > services.scan_warning_threshold()
    assert demo.load() == ["已有批次，未重复加载演示批次。"]


def test_demo_batch_histories_run_in_time_order_up_to_now(make):
    make.user(Role.ADMIN, email="admin@xiangban.test")
    tea = certified_product(make, valid_from=shanghai_today() - timedelta(days=400))
    demo.load()
    now = utcnow()
    for made in db.session.scalars(sa.select(Batch)):
        events = db.session.scalars(sa.select(TraceEvent).where(TraceEvent.batch_id == made.id)
                                    .order_by(TraceEvent.id)).all()
        # Labelled (生产赋码) on its production day, before it was shipped and then received.
        assert events[0].biz_step == "commissioning" and events[0].event_time == made.created_at
        assert to_shanghai(made.created_at).date() == made.produced_on
        assert [e.biz_step for e in events] in (["commissioning"], ["commissioning", "shipping", "receiving"])
        times = [e.event_time for e in events]
        assert times == sorted(times) and services.events_of(made.id) == events
        assert all(e.event_time <= e.recorded_at <= now for e in events)
        serials = db.session.scalars(sa.select(Serial.created_at).where(Serial.batch_id == made.id)).all()
        assert all(made.created_at <= issued <= now for issued in serials)
    scanned = db.session.scalars(sa.select(ScanEvent.at)).all()
    assert scanned and max(scanned) <= now
    assert min(scanned) > db.session.scalar(sa.select(sa.func.max(TraceEvent.recorded_at)))
    assert tea.id in {b.product_id for b in db.session.scalars(sa.select(Batch))}
    assert verify_chain().ok


def test_demo_has_nothing_to_make_for_a_product_certified_today(make):
    make.user(Role.ADMIN, email="admin@xiangban.test")
    certified_product(make, valid_from=shanghai_today())
    assert "未创建演示批次" in demo.load()[0]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0


def test_stock_produced_before_counts_only_earlier_unexpired_batches(make):
    tea = certified_product(make)
    day = shanghai_today() - timedelta(days=30)
    batch(tea, quantity=10, produced_on=day - timedelta(days=5))
    batch(tea, quantity=20, produced_on=day - timedelta(days=60), expires_on=day - timedelta(days=1))
    batch(tea, quantity=40, produced_on=day)
    batch(tea, quantity=80, produced_on=day - timedelta(days=1), available_quantity=0)
    assert demo.stock_produced_before([tea.id], day) == {tea.id: 10}
