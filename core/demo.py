"""Demo data for a newcomer's machine: cooperatives of the region's real industries, a
canteen budget unit and one account per role.

This module is a composition root: after the kernel's own records it asks each domain
package that has demo data to add it (products, certificates, batches, orders), handing each
the same ``DemoTimeline`` so that together they tell one story in time order.
"""
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

import core.timeutil
from core.extensions import db
from core.identifiers import credit_code_check_char
from core.budget_units import create_budget_unit
from core.models import Cooperative, Role, User, Village
from core.timeutil import SHANGHAI, replay_clock, shanghai_today, utcnow

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
    ("approver@xiangban.test", Role.CANTEEN_BUYER, "州机关食堂 审批人", {"budget_unit": True, "approver": True}),
    ("finance@xiangban.test", Role.FINANCE, "平台财务", {}),
    ("consumer@xiangban.test", Role.CONSUMER, "游客 小李", {}),
)

#: The demo canteen's orders above ¥5,000 wait for its approver (its demo orders are below it).
DEMO_APPROVAL_THRESHOLD_FEN = 500_000


# ---------------------------------------------------------------- the story's time

#: The cooperatives join and their products are certified this many months before the month the
#: demo runs in. Why so long before the sales, which cover the last 12 months: a batch can only be
#: registered for a certified product, and each product's first batch waits for its harvest
#: season (tea in spring and autumn, kiwifruit in October); six months of seasons before the
#: first sale give every month of sales some stock.
FOUNDED_MONTHS_AGO = 18
#: Online sales are spread over this many months back, the current one included.
SALES_MONTHS = 12


@dataclass(frozen=True)
class DemoTimeline:
    """When the demo's story happens, always relative to the day the demo runs.

    - The cooperatives, accounts and the canteen's budget unit appear on ``founded`` (the first
      day of the month ``FOUNDED_MONTHS_AGO`` months back); most products are certified within
      the following fortnight, so every certificate (its application, the county and prefecture
      decisions and their audit events) predates every batch and every sale.
    - Batches are produced in their real seasons after certification, up to yesterday, each
      registered (生产赋码) on its production day; shipments to the hub follow it.
    - Online sales are spread over the last ``SALES_MONTHS`` months rather than "this year": in
      January this year has a few days only, and a year of history gives the monthly reports
      something to show on any day. Some sales always fall in the current year (one in this
      month's days so far, the canteen's transfer paid in this year's days so far), so this
      year's reports are never empty, even on 1 January.
    - Nothing happens after ``now``: ``clock`` refuses a moment in the future.

    The services read the time themselves (``core.timeutil.utcnow``), so each step of the story
    runs through them under ``clock(moment)``: every row, order number and audit event is written
    with the time it happened, and the audit chain hashes that time as it would any other.
    """

    today: date
    now: datetime

    @classmethod
    def ending_today(cls) -> "DemoTimeline":
        """The story ending now; if ``today`` is not the real today (a frozen test day), at its 23:59."""
        today = shanghai_today()
        start = datetime.combine(today, time.min, SHANGHAI)
        return cls(today=today, now=min(max(utcnow(), start), start + timedelta(hours=23, minutes=59)))

    @property
    def founded(self) -> date:
        """The day the story starts (the cooperatives join the brand)."""
        return self.month_start(FOUNDED_MONTHS_AGO)

    @property
    def year_start(self) -> datetime:
        """Midnight of 1 January of the current Shanghai year."""
        return datetime(self.today.year, 1, 1, tzinfo=SHANGHAI)

    def month_start(self, months_ago: int) -> date:
        """The first day of the month ``months_ago`` months before the current one."""
        index = self.today.year * 12 + self.today.month - 1 - months_ago
        return date(index // 12, index % 12 + 1, 1)

    def moment(self, day: date, hour: int, minute: int = 0) -> datetime:
        """Beijing wall-clock time ``hour:minute`` on ``day``."""
        return datetime.combine(day, time(hour, minute), SHANGHAI)

    def days_ago(self, days: int, hour: int, minute: int = 0) -> datetime:
        """Beijing wall-clock time on the day ``days`` (at least 1) before today."""
        return self.moment(self.today - timedelta(days=days), hour, minute)

    def so_far(self, since: datetime, fraction: float) -> datetime:
        """The moment ``fraction`` of the way from ``since`` to now (within today's first minutes too)."""
        return since + (self.now - since) * fraction

    @contextmanager
    def clock(self, moment: datetime):
        """Run the block as if it were ``moment`` (``core.timeutil.replay_clock``). The demo is a
        one-shot command; the search indexer's background thread, if it reads the time meanwhile,
        sees the story's too, which is harmless as the search hook rebuilds the index last.

        :raise ValueError: ``moment`` is after the story's present.
        """
        if moment > self.now:
            raise ValueError(f"demo step at {moment.isoformat()} is after the story's present {self.now.isoformat()}")
        with replay_clock(moment):
            yield

    def run(self, steps: Iterable[tuple[datetime, Callable[[], None]]]) -> None:
        """Run ``(moment, step)`` pairs in time order (ties in the given order), each at its moment.

        A step due while the one before was still running on the replayed clock starts when that
        one ended, so the records of two steps never interleave in time.
        """
        ended = None
        for moment, step in sorted(steps, key=lambda pair: pair[0]):
            if ended is not None and ended > moment:
                moment = min(ended, self.now)
            with self.clock(moment):
                step()
                ended = core.timeutil.utcnow()


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
    """Create the demo records once, dated along one timeline ending now; report what was done, line by line."""
    if db.session.scalar(sa.select(User.id).where(User.email == DEMO_ACCOUNTS[0][0])) is not None:
        return ["演示数据已存在，未重复加载。"]
    timeline = DemoTimeline.ending_today()
    with timeline.clock(timeline.moment(timeline.founded, 9)):
        cooperatives = _load_kernel_records()
    lines = [f"已创建 {len(cooperatives)} 个合作社、1 个预算单位、{len(DEMO_ACCOUNTS)} 个演示账号（密码 {DEMO_PASSWORD}）。",
             f"演示故事：{timeline.founded.isoformat()} 合作社加入并申请认定，"
             f"销售分布在截至 {timeline.today.isoformat()} 的 {SALES_MONTHS} 个月。"]
    for hook in _domain_demo_hooks():
        lines.extend(hook(timeline))
    return lines


def _load_kernel_records() -> list[Cooperative]:
    """The cooperatives, the canteen's budget unit and the demo accounts (at the clock's time)."""
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
                                     "approval_threshold_fen": DEMO_APPROVAL_THRESHOLD_FEN, "reason": "演示数据"})
    for email, role, display_name, scope in DEMO_ACCOUNTS:
        user = User(email=email, role=role.value, display_name=display_name,
                    county=scope.get("county"),
                    cooperative_id=cooperatives[scope["cooperative"]].id if "cooperative" in scope else None,
                    budget_unit_id=unit.id if scope.get("budget_unit") else None,
                    is_approver=bool(scope.get("approver")))
        user.set_password(DEMO_PASSWORD)
        db.session.add(user)
    db.session.commit()
    return cooperatives


def _domain_demo_hooks():
    """Demo loaders of the domain packages, in dependency order; each takes the ``DemoTimeline``.

    Each runs its own steps in time order, so a subject's records (and audit events) are in time
    order; across packages the audit ids follow the call order, not the time (the two applications
    still waiting, made in the last days, are recorded before the batches of months ago).
    """
    from certification import demo as certification_demo
    from search import demo as search_demo  # after everything: indexes the final catalogue and stock
    from shop import demo as shop_demo  # last: orders need certified products and their batches
    from traceability import demo as traceability_demo  # batches (stock) of the certified products

    return [certification_demo.load, traceability_demo.load, shop_demo.load, search_demo.load]
