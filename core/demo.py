"""Demo data for a newcomer's machine: cooperatives of the region's real industries, a
canteen budget unit and one account per role.

This module is a composition root: after the kernel's own records it asks each domain
package that has demo data to add it (products, certificates, batches, orders).
"""
import sqlalchemy as sa

from core.extensions import db
from core.identifiers import credit_code_check_char
from core.budget_units import create_budget_unit
from core.models import Cooperative, Role, User, Village

DEMO_PASSWORD = "xiangban2025"

# (name, county, township, village, contact) — villages taken from the plan's 专栏2.
DEMO_COOPERATIVES = (
    ("古丈县默戎镇牛角山村茶叶专业合作社", "古丈县", "默戎镇", "牛角山村", "龙献文"),
    ("保靖县吕洞山镇黄金村黄金茶专业合作社", "保靖县", "吕洞山镇", "黄金村", "石继承"),
    ("花垣县双龙镇十八洞村猕猴桃专业合作社", "花垣县", "双龙镇", "十八洞村", "施进兰"),
    ("永顺县灵溪镇司城村莓茶专业合作社", "永顺县", "灵溪镇", "司城村", "彭秀英"),
    ("龙山县里耶镇杉树村百合种植专业合作社", "龙山县", "里耶镇", "杉树村", "向明华"),
    ("凤凰县山江镇板畔村苗绣专业合作社", "凤凰县", "山江镇", "板畔村", "龙金花"),
    ("泸溪县浦市镇黄家桥村椪柑专业合作社", "泸溪县", "浦市镇", "黄家桥村", "张德顺"),
)

DEMO_BUDGET_UNIT = ("湘西州机关事务服务中心职工食堂", 120_000_000, "0.15")

# email → (role, display name, scope)
DEMO_ACCOUNTS = (
    ("admin@xiangban.test", Role.ADMIN, "平台管理员", {}),
    ("official@xiangban.test", Role.OFFICIAL, "州乡村振兴局 官员", {}),
    ("prefecture@xiangban.test", Role.PREFECTURE_REVIEWER, "州级认定员 田主任", {}),
    ("guzhang@xiangban.test", Role.COUNTY_REVIEWER, "古丈县审核员 向科长", {"county": "古丈县"}),
    ("huayuan@xiangban.test", Role.COUNTY_REVIEWER, "花垣县审核员 石科长", {"county": "花垣县"}),
    ("coop@xiangban.test", Role.COOPERATIVE, "牛角山村合作社 龙献文", {"cooperative": 0}),
    ("coop2@xiangban.test", Role.COOPERATIVE, "十八洞村合作社 施进兰", {"cooperative": 2}),
    ("canteen@xiangban.test", Role.CANTEEN_BUYER, "州机关食堂 采购员", {"budget_unit": True}),
    ("finance@xiangban.test", Role.FINANCE, "平台财务", {}),
    ("consumer@xiangban.test", Role.CONSUMER, "游客 小李", {}),
)


def demo_credit_code(seed: int) -> str:
    """Return a well-formed credit code for demo cooperative ``seed`` (93 = 农民专业合作社)."""
    body = f"93433100MA{seed:06d}X"[:17].replace("X", "Y")
    return body + credit_code_check_char(body)


def _village(county: str, township: str, name: str) -> Village:
    village = db.session.scalar(sa.select(Village).filter_by(county=county, township=township, name=name))
    if village is None:
        raise RuntimeError(f"demo village {county}{township}{name} missing: run `flask --app wsgi setup` first")
    return village


def load_demo() -> list[str]:
    """Create the demo records once; report what was done, line by line."""
    if db.session.scalar(sa.select(User.id).where(User.email == DEMO_ACCOUNTS[0][0])) is not None:
        return ["演示数据已存在，未重复加载。"]
    cooperatives = []
    for index, (name, county, township, village_name, contact) in enumerate(DEMO_COOPERATIVES, start=1):
        cooperative = Cooperative(name=name, credit_code=demo_credit_code(index),
                                  village=_village(county, township, village_name),
                                  contact_name=contact, contact_phone=f"0743-88{index:05d}")
        db.session.add(cooperative)
        cooperatives.append(cooperative)
    name, budget, share = DEMO_BUDGET_UNIT
    # Through the service, as an administrator would: validated and on the audit trail.
    unit = create_budget_unit(None, {"name": name, "annual_canteen_budget_fen": budget, "reserved_share": share,
                                     "reason": "演示数据"})
    for email, role, display_name, scope in DEMO_ACCOUNTS:
        user = User(email=email, role=role.value, display_name=display_name,
                    county=scope.get("county"),
                    cooperative_id=cooperatives[scope["cooperative"]].id if "cooperative" in scope else None,
                    budget_unit_id=unit.id if scope.get("budget_unit") else None)
        user.set_password(DEMO_PASSWORD)
        db.session.add(user)
    db.session.commit()
    lines = [f"已创建 {len(cooperatives)} 个合作社、1 个预算单位、{len(DEMO_ACCOUNTS)} 个演示账号（密码 {DEMO_PASSWORD}）。"]
    for hook in _domain_demo_hooks():
        lines.extend(hook())
    return lines


def _domain_demo_hooks():
    """Demo loaders of the domain packages, in dependency order."""
    from certification import demo as certification_demo
    from search import demo as search_demo  # after everything: indexes the final catalogue and stock
    from shop import demo as shop_demo  # last: orders need certified products and their batches
    from traceability import demo as traceability_demo  # batches (stock) of the certified products

    return [certification_demo.load, traceability_demo.load, shop_demo.load, search_demo.load]
