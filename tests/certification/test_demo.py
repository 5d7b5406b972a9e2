"""The demo takes real products through the real workflow and leaves every stage populated."""
import sqlalchemy as sa

from certification import demo
from certification.gate import sellable_clause
from certification.models import Certification, Product
from core.audit import verify_chain
from core.demo import load_demo
from core.extensions import db
from core.identifiers import is_valid_gtin


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


def test_demo_products_load_once():
    load_demo()
    assert demo.load() == ["演示产品已存在，未重复加载。"]
    assert db.session.scalar(sa.select(sa.func.count(Product.id))) == len(demo.DEMO_PRODUCTS)
