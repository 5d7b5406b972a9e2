"""Demo products of the region's real industries, taken through the real certification workflow.

Most end certified (county reviewer, then prefecture reviewer, with the demo accounts); one
waits in 古丈县's county queue, one waits for the prefecture, one was rejected with a reason,
so every page of the workflow has something to show. Along the demo's timeline, the certified
and the rejected ones were decided in the story's first fortnight, long before any batch or sale;
the two still waiting were applied for in the last days.
"""
import io
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path

import sqlalchemy as sa
from PIL import Image, ImageDraw, ImageFont

from certification import services
from certification.models import Certification, Product
from core.demo import DEMO_COOPERATIVES, DemoTimeline
from core.extensions import db
from core.identifiers import gtin_check_digit
from core.models import Cooperative, Role, User
from core.timeutil import to_shanghai

DEMO_PASSWORD = "xiangban2025"
# County reviewers for the demo cooperatives' counties beyond the two core demo accounts.
EXTRA_REVIEWERS = (
    ("baojing@xiangban.test", "保靖县", "保靖县审核员 彭科长"),
    ("yongshun@xiangban.test", "永顺县", "永顺县审核员 向科长"),
    ("longshan@xiangban.test", "龙山县", "龙山县审核员 田科长"),
    ("fenghuang@xiangban.test", "凤凰县", "凤凰县审核员 吴科长"),
    ("luxi@xiangban.test", "泸溪县", "泸溪县审核员 张科长"),
)
COUNTY_REVIEWER_EMAILS = {"古丈县": "guzhang@xiangban.test", "花垣县": "huayuan@xiangban.test",
                          **{county: email for email, county, _ in EXTRA_REVIEWERS}}
FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def _gtin(body12: str) -> str:
    """A GTIN-13 under GS1 China's 690 prefix with its check digit."""
    return body12 + str(gtin_check_digit(body12))


#: An evidence expiry the demo sets to just before the application (the rejected one's reason).
EXPIRED = "expired before the application"

# (cooperative index in core.demo.DEMO_COOPERATIVES, product fields, evidence, outcome, colour).
# Evidence dates follow the application: "valid_until" (years after the application's year,
# month, day) and "{year}" in a number (the application's year), so they read right on any day.
DEMO_PRODUCTS = (
    (0, {"name": "古丈毛尖 明前特级", "category": "tea", "unit": "罐", "specification": "250克/罐", "price_fen": 16_800,
         "description": "牛角山村海拔八百米云雾茶园，清明前一芽一叶初展手工采摘，杀青、揉捻、提毫烘焙。"
                        "条索紧细翠绿显毫，汤色嫩绿明亮，栗香持久。",
         "gtin": _gtin("690123456001"), "bulk": {"moq": 20, "tiers": [{"min_qty": 20, "price_fen": 15_800},
                                                                     {"min_qty": 100, "price_fen": 14_800}]}},
     [{"type": "geographical_indication", "number": "AGI00573", "issuer": "农业农村部", "valid_until": (4, 12, 31)},
      {"type": "green_food", "number": "LB-15-2103123456A", "issuer": "中国绿色食品发展中心",
       "valid_until": (2, 6, 30)}],
     "certified", (46, 125, 50)),
    (0, {"name": "古丈红茶 工夫红茶", "category": "tea", "unit": "盒", "specification": "200克/盒", "price_fen": 9_800,
         "description": "以古丈本地群体种夏秋茶为原料，萎凋、揉捻、发酵、烘干传统工夫红茶工艺，蜜香甜润。"},
     [{"type": "compliance_certificate", "number": "HN-GZ-{year}-1103", "issuer": "古丈县默戎镇牛角山村茶叶专业合作社",
       "valid_until": None}],
     "submitted", (140, 60, 30)),
    (1, {"name": "保靖黄金茶 一芽一叶", "category": "tea", "unit": "罐", "specification": "125克/罐", "price_fen": 23_800,
         "description": "吕洞山镇黄金村古茶树良种，氨基酸含量高，汤色嫩绿、滋味鲜爽，具“一两黄金一两茶”之誉。",
         "gtin": _gtin("690123456002")},
     [{"type": "geographical_indication", "number": "AGI01218", "issuer": "农业农村部", "valid_until": (5, 6, 30)}],
     "certified", (180, 150, 40)),
    (2, {"name": "十八洞红心猕猴桃", "category": "kiwifruit", "unit": "箱", "specification": "5斤/箱（约20-25个）",
         "price_fen": 8_800,
         "description": "十八洞村精准扶贫产业园种植，红心品种，自然成熟后采摘，果肉细嫩，糖度16度以上。",
         "bulk": {"moq": 50, "tiers": [{"min_qty": 50, "price_fen": 7_800}, {"min_qty": 200, "price_fen": 7_200}]}},
     [{"type": "green_food", "number": "LB-18-2007145678A", "issuer": "中国绿色食品发展中心", "valid_until": (3, 3, 31)},
      {"type": "compliance_certificate", "number": "HY-SL-{year}-0918", "issuer": "花垣县双龙镇十八洞村猕猴桃专业合作社",
       "valid_until": None}],
     "certified", (120, 150, 40)),
    (2, {"name": "十八洞猕猴桃果干", "category": "kiwifruit", "unit": "袋", "specification": "250克/袋", "price_fen": 3_990,
         "description": "选用十八洞村次级鲜果低温烘干，不添加色素，酸甜耐嚼。"},
     [{"type": "compliance_certificate", "number": "HY-SL-{year}-1020", "issuer": "花垣县双龙镇十八洞村猕猴桃专业合作社",
       "valid_until": None}],
     "county_approved", (150, 110, 60)),
    (3, {"name": "永顺莓茶 芽尖", "category": "berry_tea", "unit": "罐", "specification": "100克/罐", "price_fen": 6_800,
         "description": "灵溪镇司城村野生显齿蛇葡萄嫩芽，杀青揉捻后表面析出白霜（二氢杨梅素），回甘明显。",
         "gtin": _gtin("690123456003")},
     [{"type": "geographical_indication", "number": "AGI02845", "issuer": "农业农村部", "valid_until": (5, 12, 31)}],
     "certified", (90, 140, 110)),
    (4, {"name": "龙山百合 鲜百合", "category": "lily", "unit": "箱", "specification": "2.5公斤/箱", "price_fen": 12_800,
         "description": "里耶镇高山砂壤种植的卷丹百合，鳞片肥厚洁白，微苦回甜，可煲汤、清炒。",
         "bulk": {"moq": 10, "tiers": [{"min_qty": 10, "price_fen": 11_800}]}},
     [{"type": "geographical_indication", "number": "AGI00322", "issuer": "农业农村部", "valid_until": (6, 3, 31)},
      {"type": "green_food", "number": "LB-15-1711196965A", "issuer": "中国绿色食品发展中心", "valid_until": (2, 11, 30)}],
     "certified", (200, 190, 170)),
    (5, {"name": "苗绣 手工刺绣香包", "category": "crafts", "unit": "个", "specification": "约12×9厘米，内装艾草",
         "price_fen": 15_800,
         "description": "山江镇板畔村苗族绣娘手工平绣、锁绣，纹样取自苗族古歌中的蝴蝶妈妈，每件约需两天。"},
     [{"type": "other", "number": "FH-MX-{year}-031", "issuer": "凤凰县文化旅游广电局（非遗工坊认定）",
       "valid_until": (3, 12, 31)}],
     "certified", (170, 40, 60)),
    (6, {"name": "浦市椪柑", "category": "citrus", "unit": "箱", "specification": "10斤/箱", "price_fen": 5_900,
         "description": "浦市镇沅水河谷椪柑，果皮易剥，汁多化渣。"},
     [{"type": "compliance_certificate", "number": "LX-PS-{year}-1102", "issuer": "泸溪县浦市镇黄家桥村椪柑专业合作社",
       "valid_until": EXPIRED}],
     "rejected", (230, 140, 20)),
)
REJECTION_REASON = "承诺达标合格证已于 {expired} 过期，请补充本季有效的合格证及农残自检记录后重新申请。"


def _user(email: str) -> User:
    return db.session.scalar(sa.select(User).where(User.email == email))


def _ensure_reviewers() -> int:
    """Create the extra county reviewer accounts that are missing; return how many were created."""
    created = 0
    for email, county, name in EXTRA_REVIEWERS:
        if _user(email) is None:
            user = User(email=email, role=Role.COUNTY_REVIEWER.value, display_name=name, county=county)
            user.set_password(DEMO_PASSWORD)
            db.session.add(user)
            created += 1
    db.session.commit()
    return created


def _picture(name: str, colour: tuple[int, int, int]) -> io.BytesIO:
    """A simple product card picture (colour field and the product's name) as PNG bytes."""
    image = Image.new("RGB", (800, 600), colour)
    draw = ImageDraw.Draw(image)
    for step in range(0, 600, 6):  # a soft vertical gradient
        shade = tuple(min(255, c + step // 8) for c in colour)
        draw.rectangle([0, step, 800, step + 6], fill=shade)
    if FONT.exists():
        font = ImageFont.truetype(str(FONT), 64)
        draw.text((400, 260), name.split(" ")[0], font=font, fill=(255, 255, 255), anchor="mm")
        draw.text((400, 360), "湘西香伴", font=ImageFont.truetype(str(FONT), 40), fill=(255, 255, 255), anchor="mm")
    out = io.BytesIO()
    image.save(out, format="PNG")
    out.seek(0)
    return out


def _evidence(evidence: list[dict], applied: date) -> list[dict]:
    """The evidence as sent on ``applied``: relative dates and numbers made concrete."""
    expired = applied.replace(day=1) - timedelta(days=1)  # the end of the month before
    concrete = []
    for item in evidence:
        until = item["valid_until"]
        if until == EXPIRED:
            until = expired.isoformat()
        elif until is not None:
            years, month, day = until
            until = date(applied.year + years, month, day).isoformat()
        concrete.append({**item, "number": item["number"].format(year=applied.year), "valid_until": until})
    return concrete


def _schedule(timeline: DemoTimeline, number: int, outcome: str) -> tuple[datetime, list[tuple[datetime, str]]]:
    """When demo product ``number`` is applied for, and when each reviewer ("county", "prefecture") decides.

    Certified and rejected ones go through in the first fortnight after ``founded``, long before
    the first batch and sale; the two still waiting were applied for in the last days, so the
    queues show a realistic wait.
    """
    if outcome == "submitted":
        return timeline.days_ago(6, 10, 20), []
    if outcome == "county_approved":
        return timeline.days_ago(9, 9, 40), [(timeline.days_ago(4, 16, 10), "county")]
    applied = timeline.moment(timeline.founded + timedelta(days=1 + number % 3), 9, 30 + number)
    county = applied + timedelta(days=3, hours=1)
    if outcome == "rejected":
        return applied, [(county, "county")]
    return applied, [(county, "county"), (county + timedelta(days=4, hours=5), "prefecture")]


def load(timeline: DemoTimeline | None = None) -> list[str]:
    """Create the demo products and their applications once, along ``timeline``; report what was done."""
    timeline = timeline or DemoTimeline.ending_today()
    names = [entry[0] for entry in DEMO_COOPERATIVES]
    cooperatives = {c.name: c for c in db.session.scalars(sa.select(Cooperative).where(Cooperative.name.in_(names)))}
    if len(cooperatives) != len(names):
        return ["演示合作社缺失，未加载演示产品。"]
    if db.session.scalar(sa.select(sa.func.count(Product.id)).where(
            Product.cooperative_id.in_([c.id for c in cooperatives.values()]))):
        return ["演示产品已存在，未重复加载。"]
    with timeline.clock(timeline.moment(timeline.founded, 9, 10)):
        reviewers = _ensure_reviewers()
    admin = _user("admin@xiangban.test")
    prefecture = _user("prefecture@xiangban.test")
    members = {u.cooperative_id: u for u in db.session.scalars(
        sa.select(User).where(User.role == Role.COOPERATIVE.value, User.cooperative_id.isnot(None)))}
    outcomes: dict[str, int] = {}
    applications: dict[int, int] = {}  # product number → its application id, once applied for

    def apply(number: int, actor: User, cooperative: Cooperative, applied: datetime) -> None:
        """Register product ``number`` with its picture and apply for the brand."""
        _, fields, evidence, _, colour = DEMO_PRODUCTS[number]
        payload = {**fields, "village_ids": [cooperative.village_id]}
        if actor is admin:
            payload["cooperative_id"] = cooperative.id
        product = services.create_product(actor, payload)
        services.add_product_image(actor, product.id, _picture(fields["name"], colour))
        sent = _evidence(evidence, to_shanghai(applied).date())
        applications[number] = services.submit_application(actor, product.id, {"evidence": sent}).id

    def decide(number: int, reviewer: User, decision: dict) -> None:
        """One reviewer's decision on product ``number``'s application."""
        services.decide_application(reviewer, applications[number], decision)

    steps = []
    for number, (index, _, evidence, outcome, _) in enumerate(DEMO_PRODUCTS):
        cooperative = cooperatives[names[index]]
        # Cooperatives without a demo member account are registered by the admin on their behalf.
        actor = members.get(cooperative.id) or admin
        applied, decisions = _schedule(timeline, number, outcome)
        steps.append((applied, partial(apply, number, actor, cooperative, applied)))
        for moment, stage in decisions:
            if stage == "county" and outcome == "rejected":
                expired = _evidence(evidence, to_shanghai(applied).date())[0]["valid_until"]
                decision = {"decision": "reject", "comment": REJECTION_REASON.format(expired=expired)}
            elif stage == "county":
                decision = {"decision": "approve", "comment": "材料齐全，产地核实无误，同意上报州级认定。"}
            else:
                decision = {"decision": "approve", "comment": "符合湘西香伴品牌认定条件，准予认定。"}
            reviewer = _user(COUNTY_REVIEWER_EMAILS[cooperative.county]) if stage == "county" else prefecture
            steps.append((moment, partial(decide, number, reviewer, decision)))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    timeline.run(steps)
    lines = [f"已创建 {len(DEMO_PRODUCTS)} 个演示产品（经真实审核流程）：已认定 {outcomes.get('certified', 0)} 个，"
             f"待县级审核 {outcomes.get('submitted', 0)} 个，待州级认定 {outcomes.get('county_approved', 0)} 个，"
             f"已驳回 {outcomes.get('rejected', 0)} 个。"]
    if reviewers:
        lines.append(f"另建 {reviewers} 个县级审核员账号：" + "、".join(e for e, _, _ in EXTRA_REVIEWERS)
                     + f"（密码 {DEMO_PASSWORD}）。")
    certificates = db.session.scalars(sa.select(Certification).where(
        Certification.id.in_(list(applications.values())), Certification.valid_from.isnot(None))).all()
    if certificates:
        lines.append(f"演示证书于 {min(c.valid_from for c in certificates).isoformat()} 至 "
                     f"{max(c.valid_from for c in certificates).isoformat()} 颁发，"
                     f"有效期至 {max(c.valid_until for c in certificates).isoformat()}。")
    return lines
