"""Demo batches through the real traceability code, along the demo's timeline.

Every sellable demo product gets a batch on each of its harvest or production days since it was
certified, up to yesterday, registered (生产赋码) that evening; every third batch is shipped to the
hub two days after production and received the day after; some get item serials. Last, a few
scans just before now, one item label scanned often enough to warn.
"""
from datetime import date, timedelta
from functools import partial

import sqlalchemy as sa

from certification.gate import sellable_clause
from certification.models import Product
from core.demo import DemoTimeline
from core.extensions import db
from core.models import Role, User
from traceability import codes, services
from traceability.models import Batch

# Lot prefixes by category (pinyin initials, as cooperatives write them on their cartons).
LOT_PREFIX = {"tea": "CY", "berry_tea": "MC", "kiwifruit": "MHT", "citrus": "GJ", "camellia_oil": "YC", "rice": "DM",
              "vegetables": "SC", "herbs": "ZYC", "pork": "HZ", "beef": "HN", "lily": "BH", "buckwheat": "KQ",
              "crafts": "SG"}
# (harvest or production days as (month, day) of any year, shelf life in days or None) by category.
SEASONS = {
    "tea": (((3, 28), (4, 18), (9, 20)), 540),
    "berry_tea": (((5, 12), (8, 6)), 720),
    "kiwifruit": (((10, 22), (11, 16)), 75),
    "citrus": (((11, 6), (11, 24)), 60),
    "lily": (((7, 26), (8, 14)), 365),
    "crafts": (((5, 30), (9, 1)), None),
}
DEFAULT_SEASON = (((6, 15), (10, 10)), 365)
HUB = "吉首市经开区 湘西香伴消费帮扶集配中心"
# Registered on the production day's evening; shipped and received (Beijing time) days later.
COMMISSIONED_AT = (18, 0)
SHIPPED_AFTER_DAYS, SHIPPED_AT = 2, (9, 30)
RECEIVED_AFTER_DAYS, RECEIVED_AT = 3, (15, 30)
# A cooperative records an event on its phone a few minutes after it happened.
RECORDED_AFTER = timedelta(minutes=10)


def _actor(cooperative_id: int) -> User | None:
    """The cooperative's own demo account if it has one, else the demo admin."""
    member = db.session.scalar(sa.select(User).where(User.role == Role.COOPERATIVE.value,
                                                     User.cooperative_id == cooperative_id).order_by(User.id))
    return member or db.session.scalar(sa.select(User).where(User.email == "admin@xiangban.test"))


def production_days(season_days, first: date, last: date) -> list[date]:
    """Every season day ((month, day) pairs) from ``first`` to ``last``, in order."""
    days = (date(year, month, day) for year in range(first.year, last.year + 1) for month, day in season_days)
    return sorted(day for day in days if first <= day <= last)


def stock_produced_before(product_ids, day: date) -> dict[int, int]:
    """Units left per product in batches produced before ``day`` and not expired on it.

    Every demo batch exists before the first demo order is placed (this hook runs first), so an
    order dated ``day`` must be covered by these alone; the shop allocates the oldest production
    first, so such an order never takes stock from a batch produced after it.
    """
    ids = list(product_ids)
    totals = dict.fromkeys(ids, 0)
    rows = db.session.execute(
        sa.select(Batch.product_id, sa.func.sum(Batch.available_quantity))
        .where(Batch.product_id.in_(ids), Batch.produced_on < day, Batch.available_quantity > 0,
               sa.or_(Batch.expires_on.is_(None), Batch.expires_on >= day))
        .group_by(Batch.product_id))
    totals.update({product_id: int(units) for product_id, units in rows})
    return totals


def _batch_fields(product: Product, village, produced_on: date, shelf_days: int | None, number: int,
                  sequence: int) -> dict:
    """What the cooperative enters for its ``sequence``-th batch of demo product ``number``."""
    prefix = LOT_PREFIX.get(product.category, "XB")
    return {
        "lot": f"{prefix}-{produced_on:%Y%m%d}-{product.id:02d}{sequence + 1}", "village_id": village.id,
        "produced_on": produced_on.isoformat(),
        "expires_on": (produced_on + timedelta(days=shelf_days)).isoformat() if shelf_days else None,
        "quantity": 150 + 50 * ((number + sequence) % 6),
        "commitment_basis": ("quality_control", "self_test", "entrusted_test")[(number + sequence) % 3],
    }


def load(timeline: DemoTimeline | None = None) -> list[str]:
    """Create the demo batches once, along ``timeline``; report what was done and a few URLs to scan."""
    timeline = timeline or DemoTimeline.ending_today()
    if db.session.scalar(sa.select(sa.func.count()).select_from(Batch)):
        return ["已有批次，未重复加载演示批次。"]
    products = list(db.session.scalars(
        sa.select(Product).where(sellable_clause(timeline.today)).order_by(Product.id)))
    if not products:
        return ["没有已认定的产品，未创建演示批次。"]
    yesterday = timeline.today - timedelta(days=1)
    plan = []  # one entry per batch to make: product, who makes it, production day, village, fields
    for number, product in enumerate(products):
        actor = _actor(product.cooperative_id)
        if actor is None:
            continue
        season_days, shelf_days = SEASONS.get(product.category, DEFAULT_SEASON)
        # The day after certification at the earliest: no batch before the brand was granted.
        first = product.certificate.valid_from + timedelta(days=1)
        for sequence, produced_on in enumerate(production_days(season_days, first, yesterday)):
            village = product.villages[sequence % len(product.villages)]
            plan.append({"product": product, "actor": actor, "produced_on": produced_on, "village": village,
                         "fields": _batch_fields(product, village, produced_on, shelf_days, number, sequence)})
    if not plan:
        return ["认定产品自认定以来尚无产季生产日，未创建演示批次。"]
    plan.sort(key=lambda entry: (entry["produced_on"], entry["product"].id))

    made: dict[int, tuple[Batch, User]] = {}  # plan index → the batch made and who made it
    issued: dict[int, list[tuple[str, str]]] = {}  # batch id → its serials and their URLs

    def commission(index: int) -> None:
        """Register planned batch ``index`` (and issue its serials if it gets some)."""
        entry = plan[index]
        actor = entry["actor"]
        batch = services.create_batch(actor, entry["product"].id, entry["fields"])
        made[index] = (batch, actor)
        if index % 4 == 0:
            issued[batch.id] = services.issue_serials(actor, batch.id, {"count": 12})

    def record(index: int, event: dict) -> None:
        """Record a shipping or receiving event of planned batch ``index``."""
        batch, actor = made[index]
        services.record_trace_event(actor, batch.id, event)

    steps = []
    for index, entry in enumerate(plan):
        produced_on, village = entry["produced_on"], entry["village"]
        steps.append((timeline.moment(produced_on, *COMMISSIONED_AT), partial(commission, index)))
        received_on = produced_on + timedelta(days=RECEIVED_AFTER_DAYS)
        if index % 3 == 0 and received_on <= yesterday:
            shipped = timeline.moment(produced_on + timedelta(days=SHIPPED_AFTER_DAYS), *SHIPPED_AT)
            received = timeline.moment(received_on, *RECEIVED_AT)
            half = entry["fields"]["quantity"] // 2
            steps.append((shipped + RECORDED_AFTER, partial(record, index, {
                "type": "shipping", "location": f"{village.township}{village.name} 合作社仓库", "partner": HUB,
                "quantity": half, "occurred_at": shipped.isoformat(), "note": "冷链车 湘U·3A217"})))
            steps.append((received + RECORDED_AFTER, partial(record, index, {
                "type": "receiving", "location": HUB, "partner": entry["product"].cooperative.name,
                "quantity": half, "occurred_at": received.isoformat()})))
    timeline.run(steps)

    batches = [made[index] for index in sorted(made)]
    example_urls = []
    # Buyers scan what they bought lately: the newest batches, just before now.
    with timeline.clock(timeline.now - timedelta(hours=2)):
        if issued:
            batch_id, serials = max(issued.items())
            example_urls.append(("单品码", serials[0][1]))
            # One label scanned like a copied one, so the scan pages show the warning.
            code = _code_of(db.session.get(Batch, batch_id), serials[1][0])
            for _ in range(services.scan_warning_threshold() + 5):
                services.resolve_scan(code, user_agent="Mozilla/5.0 (Linux; Android 13) Mobile Safari")
        for batch, _ in batches[-5:]:
            for _ in range(3):
                services.resolve_scan(_code_of(batch), user_agent="Mozilla/5.0 (iPhone) MicroMessenger/8.0.47")
        services.flush_scans()
    services.clear_scan_caches()  # they were filled on the story's clock
    example_urls.insert(0, ("批次码", services.batch_trace_url(batches[-1][0])))
    lines = [f"已为 {len({b.product_id for b, _ in batches})} 个认定产品登记 {len(batches)} 个批次"
             f"（{batches[0][0].produced_on.isoformat()} 起按产季生产，承诺达标合格证、流通记录），"
             f"生成 {sum(len(s) for s in issued.values())} 个单品码。"]
    lines += [f"扫码体验（{label}）：{url}" for label, url in example_urls]
    return lines


def _code_of(batch: Batch, serial: str | None = None) -> codes.TraceCode:
    """The code a phone would send for a batch label (or one of its item labels)."""
    return codes.code_for(batch.id, batch.lot, batch.product.gtin, serial)
