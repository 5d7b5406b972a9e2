"""A realistic sales scenario built through the shop's real flows, and an independent expectation.

Orders are placed, paid (simulated Stripe webhook with a chosen payment time, or a bank
transfer confirmed by finance), refunded and cancelled through the public API, so the rows the
reports read are the ones production writes. The expected figures are then computed here in
plain Python from the scenario's own inputs (prices, quantities, which batch's village the
units come from, refunds, payment times) — never from the database.

Years: R is the current Asia/Shanghai year (payments "now" land in it), P = R - 1. One order is
paid at 23:30 on 31 December of P (Shanghai) and counts in P; one at 00:30 on 1 January of R
and counts in R.
"""
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from certification.models import BulkTier
from core.extensions import db
from core.models import Role, Village, VillageSalesTarget
from core.timeutil import SHANGHAI, shanghai_today, to_shanghai
from tests.certification.factories import certified_product
from tests.shop.helpers import completed_event, deliver, place
from tests.traceability.factories import batch

TEA, KIWI, RICE = 10_000, 4_000, 2_500          # list prices (fen)
KIWI_TIER = 3_500                                # canteen price from 20 units


@dataclass
class Fact:
    """One allocation of a paid order, as the scenario knows it (not as the database says)."""

    order: str
    village_id: int
    channel: str
    category: str
    paid_at: datetime
    amount_fen: int
    refunded_fen: int = 0

    @property
    def net_fen(self) -> int:
        """What this allocation still contributes."""
        return self.amount_fen - self.refunded_fen


@dataclass
class Scenario:
    """Who and what the scenario made, the facts it knows, and the expected figures derived from them."""

    R: int
    P: int
    villages: dict
    users: dict
    orders: dict
    unit: object
    facts: list = field(default_factory=list)
    targets: dict = field(default_factory=dict)  # {(village_id, year): target_fen} overrides

    # ------------------------------------------------------------ the independent computation

    def target(self, village_id: int, year: int) -> int:
        """The target the scenario set: an override, or the ¥150,000 default."""
        return self.targets.get((village_id, year), 15_000_000)

    def expected_villages(self, year, *, channel=None, category=None, place=lambda village: True) -> dict:
        """{village_id: (sales_fen, orders, target_fen)} for every registry village matching ``place``."""
        villages = {v.id: v for v in db.session.scalars(sa.select(Village))}
        result = {vid: [0, set(), self.target(vid, year)] for vid, v in villages.items() if place(v)}
        for fact in self.facts:
            if to_shanghai(fact.paid_at).year != year or fact.village_id not in result:
                continue
            if (channel and fact.channel != channel) or (category and fact.category != category):
                continue
            entry = result[fact.village_id]
            entry[0] += fact.net_fen
        # An order counts for a village when its net contribution there is still positive.
        for vid, entry in result.items():
            per_order = {}
            for fact in self.facts:
                if fact.village_id == vid and to_shanghai(fact.paid_at).year == year \
                        and (not channel or fact.channel == channel) and (not category or fact.category == category):
                    per_order[fact.order] = per_order.get(fact.order, 0) + fact.net_fen
            entry[1] = sum(1 for net in per_order.values() if net > 0)
        return {vid: (sales, orders, target) for vid, (sales, orders, target) in result.items()}

    def expected_months(self, year, place=lambda village: True) -> dict:
        """{month: sales_fen} of ``year`` for villages matching ``place``."""
        villages = {v.id: v for v in db.session.scalars(sa.select(Village))}
        months = dict.fromkeys(range(1, 13), 0)
        for fact in self.facts:
            local = to_shanghai(fact.paid_at)
            if local.year == year and place(villages[fact.village_id]):
                months[local.month] += fact.net_fen
        return months


def _shanghai(year, month, day, hour, minute) -> datetime:
    """A Shanghai wall-clock time as an aware UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(timezone.utc)


def _pay_by_webhook(client, order: dict, when: datetime) -> None:
    """Deliver the signed checkout.session.completed event Stripe would send, dated ``when``."""
    response = deliver(client, completed_event(order, created=int(when.timestamp())))
    assert response.status_code == 200, response.get_json()


def _other_township_village(county: str, township: str) -> Village:
    """A village of ``county`` in another township than ``township``."""
    return db.session.scalars(sa.select(Village).where(Village.county == county, Village.township != township)
                              .order_by(Village.id).limit(1)).one()


def build(client, make) -> Scenario:
    """Place, pay, refund and cancel the scenario's orders through the API; return what is known."""
    today = shanghai_today()
    R, P = today.year, today.year - 1
    vA = make.village("古丈县")
    vB = _other_township_village("古丈县", vA.township)
    vC = make.village("花垣县")
    vD = make.village("凤凰县")
    coop1, coop2, coop3 = make.cooperative(village=vA), make.cooperative(village=vC), make.cooperative(village=vD)
    # Multi-village products: tea from vA and vB, rice from vD and vC; batches sold oldest first.
    tea = certified_product(make, cooperative=coop1, villages=[vA, vB], price_fen=TEA, name="古丈毛尖", category="tea")
    kiwi = certified_product(make, cooperative=coop2, villages=[vC], price_fen=KIWI, name="十八洞猕猴桃",
                             category="kiwifruit", bulk_moq=10)
    db.session.add(BulkTier(product=kiwi, min_qty=20, price_fen=KIWI_TIER))
    db.session.commit()
    rice = certified_product(make, cooperative=coop3, villages=[vD, vC], price_fen=RICE, name="凤凰红米", category="rice")
    old, newer = today - timedelta(days=30), today - timedelta(days=5)
    batch(tea, village=vA, quantity=5, produced_on=old)
    batch(tea, village=vB, quantity=50, produced_on=newer)
    batch(kiwi, village=vC, quantity=200, produced_on=old)
    batch(rice, village=vD, quantity=100, produced_on=old)
    batch(rice, village=vC, quantity=100, produced_on=newer)

    unit = make.budget_unit(annual_canteen_budget_fen=10_000_000, reserved_share="0.10")
    consumer1, consumer2 = make.user(Role.CONSUMER), make.user(Role.CONSUMER)
    canteen = make.user(Role.CANTEEN_BUYER, budget_unit=unit)
    finance = make.user(Role.FINANCE)
    fin = make.headers(finance)
    invoice = {"purchase_order_no": "CG-2026-001", "invoice": {"title": "湘西州机关事务服务中心", "tax_id": "11433100MB1234567X"}}

    s = Scenario(R=R, P=P, villages={"A": vA, "B": vB, "C": vC, "D": vD},
                 users={"consumer1": consumer1, "consumer2": consumer2, "canteen": canteen, "finance": finance},
                 orders={}, unit=unit)
    # Per-year target overrides: vD has a lower target in R (reached), vB none at all (0: met).
    db.session.add_all([VillageSalesTarget(village_id=vD.id, year=R, target_fen=100_000),
                        VillageSalesTarget(village_id=vB.id, year=R, target_fen=0)])
    db.session.commit()
    s.targets = {(vD.id, R): 100_000, (vB.id, R): 0}

    # O1: tea ×8 = 5 from vA's batch + 3 from vB's, paid 23:30 on 31 December of P (Shanghai) → P.
    o1 = place(client, make, consumer1, (tea, 8))
    t1 = _shanghai(P, 12, 31, 23, 30)
    _pay_by_webhook(client, o1, t1)
    s.facts += [Fact("O1", vA.id, "online", "tea", t1, 5 * TEA), Fact("O1", vB.id, "online", "tea", t1, 3 * TEA)]

    # O2: tea ×2 (vB) + rice ×4 (vD), paid 00:30 on 1 January of R (Shanghai) → R.
    o2 = place(client, make, consumer1, (tea, 2), (rice, 4))
    t2 = _shanghai(R, 1, 1, 0, 30)
    _pay_by_webhook(client, o2, t2)
    s.facts += [Fact("O2", vB.id, "online", "tea", t2, 2 * TEA), Fact("O2", vD.id, "online", "rice", t2, 4 * RICE)]

    # O3: rice ×10 (vD) paid now, then a partial refund of ¥50.
    o3 = place(client, make, consumer2, (rice, 10))
    now3 = datetime.now(timezone.utc).replace(microsecond=0)
    _pay_by_webhook(client, o3, now3)
    _refund(client, fin, o3["id"], 5_000)
    s.facts += [Fact("O3", vD.id, "online", "rice", now3, 10 * RICE, 5_000)]

    # O4: tea ×3 (vB) + kiwi ×2 (vC), paid now, then refunded in full: counts nowhere.
    o4 = place(client, make, consumer2, (tea, 3), (kiwi, 2))
    now4 = datetime.now(timezone.utc).replace(microsecond=0)
    _pay_by_webhook(client, o4, now4)
    _refund(client, fin, o4["id"], o4["total_fen"])
    s.facts += [Fact("O4", vB.id, "online", "tea", now4, 3 * TEA, 3 * TEA),
                Fact("O4", vC.id, "online", "kiwifruit", now4, 2 * KIWI, 2 * KIWI)]

    # O5: canteen, bank transfer: kiwi ×20 at the tier price (vC) + rice ×90 = 86 from vD + 4 from vC;
    # confirmed by finance now; then ¥590 refunded, split in proportion 14:43:2 (70,000 : 215,000 : 10,000).
    o5 = place(client, make, canteen, (kiwi, 20), (rice, 90), payment_method="bank_transfer", **invoice)
    before = datetime.now(timezone.utc)
    _confirm(client, fin, o5)
    after = datetime.now(timezone.utc)
    assert (to_shanghai(before).year, to_shanghai(before).month) == (to_shanghai(after).year, to_shanghai(after).month)
    assert to_shanghai(after).year == R
    _refund(client, fin, o5["id"], 59_000)
    s.facts += [Fact("O5", vC.id, "canteen", "kiwifruit", after, 20 * KIWI_TIER, 14_000),
                Fact("O5", vD.id, "canteen", "rice", after, 86 * RICE, 43_000),
                Fact("O5", vC.id, "canteen", "rice", after, 4 * RICE, 2_000)]

    # O6: kiwi ×1 cancelled by the buyer before paying; O7: rice ×3 never paid;
    # O8: a canteen bank-transfer order never confirmed. None of them is a sale.
    o6 = place(client, make, consumer1, (kiwi, 1))
    assert client.post(f"/api/v1/orders/{o6['id']}/cancel", headers=make.headers(consumer1)).status_code == 200
    o7 = place(client, make, consumer2, (rice, 3))
    o8 = place(client, make, canteen, (kiwi, 10), payment_method="bank_transfer", **invoice)

    # O9: the canteen pays by (simulated) Stripe at 23:30 on 31 December of P: kiwi ×10 at list price → P.
    o9 = place(client, make, canteen, (kiwi, 10))
    t9 = _shanghai(P, 12, 31, 23, 30)
    _pay_by_webhook(client, o9, t9)
    s.facts += [Fact("O9", vC.id, "canteen", "kiwifruit", t9, 10 * KIWI)]

    s.orders = {"O1": o1, "O2": o2, "O3": o3, "O4": o4, "O5": o5, "O6": o6, "O7": o7, "O8": o8, "O9": o9}
    db.session.expire_all()
    return s


def _refund(client, headers, order_id: int, amount: int) -> None:
    """Finance refunds ``amount`` fen of an order through the API."""
    response = client.post(f"/api/v1/orders/{order_id}/refund", json={"amount_fen": amount, "reason": "质量问题"},
                           headers=headers)
    assert response.status_code == 200, response.get_json()


def _confirm(client, headers, order: dict) -> None:
    """Finance confirms a bank transfer of the order's exact total through the API."""
    response = client.post(f"/api/v1/orders/{order['id']}/confirm-transfer",
                           json={"amount_fen": order["total_fen"], "reference": "BANK-20261129-001"}, headers=headers)
    assert response.status_code == 200, response.get_json()
