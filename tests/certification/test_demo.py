"""The demo takes real products through the real workflow and leaves every stage populated, with
certificates granted long before the first batch and sale and the waiting ones applied for lately."""
import re
from datetime import timedelta

import sqlalchemy as sa

from certification import demo
from certification.gate import sellable_clause
from certification.models import Certification, Product
from core.audit import history_of, verify_chain
from core.demo import DemoTimeline, load_demo
from core.extensions import db
from core.identifiers import is_valid_gtin
from core.timeutil import shanghai_today, to_shanghai, utcnow
from shop.models import Order
from traceability.models import Batch


def test_demo_products_cover_every_stage_and_the_chain_verifies():
    lines = load_demo()
    assert any("演示产品" in line for line in lines)
    statuses = dict(db.session.execute(
        sa.select(Certification.status, sa.func.count()).group_by(Certification.status)).all())
    assert statuses == {"certified": 6, "submitted": 1, "county_approved": 1, "rejected": 1}
    sellable = db.session.scalars(sa.select(Product).where(sellable_clause())).all()
    assert {p.name for p in sellable} >= {"古丈毛尖 明前特级", "保靖黄金茶 一芽一叶", "十八洞红心猕猴桃",
                                         "永顺莓茶 芽尖", "龙山百合 鲜百合", "苗绣 手工刺绣香包"}
    gtins = [p.gtin for p in db.session.scalars(sa.select(Product)) if p.gtin]
    assert gtins and all(is_valid_gtin(g) and g[1:4] == "690" for g in gtins)
    assert all(p.images for p in sellable)
    assert verify_chain().ok


def test_demo_certificates_come_before_every_batch_and_sale():
    load_demo()
    founded = DemoTimeline.ending_today().founded
    first_batch = db.session.scalar(sa.select(sa.func.min(Batch.created_at)))
    first_sale = db.session.scalar(sa.select(sa.func.min(Order.paid_at)))
    certificates = db.session.scalars(sa.select(Certification).where(Certification.status == "certified")).all()
    for certificate in certificates:
        events = history_of("certification", certificate.id)
        assert [e.action for e in events] == ["submit", "approve", "approve"]
        times = [e.at for e in events]
        assert times == sorted(times) and certificate.decided_at <= times[-1]
        assert certificate.product.created_at <= certificate.submitted_at <= times[0]
        assert founded < certificate.valid_from == to_shanghai(certificate.decided_at).date()
        assert certificate.decided_at < first_batch < first_sale
        assert certificate.certificate_no.startswith(f"XXXB-{certificate.valid_from.year}-")


def test_demo_waiting_applications_were_made_lately_and_the_rejection_cites_an_expired_document():
    load_demo()
    today, now = shanghai_today(), utcnow()
    waiting = db.session.scalars(sa.select(Certification).where(
        Certification.status.in_(("submitted", "county_approved")))).all()
    assert waiting and all(today - timedelta(days=10) <= to_shanghai(a.submitted_at).date() < today for a in waiting)
    assert all(e.at <= now for a in waiting for e in history_of("certification", a.id))
    rejected = db.session.scalar(sa.select(Certification).where(Certification.status == "rejected"))
    expired = rejected.evidence[0].valid_until
    assert expired < to_shanghai(rejected.submitted_at).date() < to_shanghai(rejected.decided_at).date()
    assert f"已于 {expired.isoformat()} 过期" in history_of("certification", rejected.id)[-1].comment
    # Evidence is dated from the application on: numbers carry its year, validity runs on after it.
    for application in db.session.scalars(sa.select(Certification)):
        applied = to_shanghai(application.submitted_at).date()
        for evidence in application.evidence:
            year = re.search(r"-(20\d\d)-", evidence.number)
            assert year is None or int(year.group(1)) == applied.year
            if application.status != "rejected" and evidence.valid_until:
                assert evidence.valid_until > applied


def test_demo_products_load_once():
    load_demo()
    assert demo.load() == ["演示产品已存在，未重复加载。"]
    assert db.session.scalar(sa.select(sa.func.count(Product.id))) == len(demo.DEMO_PRODUCTS)
