"""Demo batches through the real traceability code: every sellable demo product gets two or
three batches with realistic lots and harvest dates, item serials on some, a shipping and
receiving history on some, and a few scans — one item label scanned often enough to warn.
"""
from datetime import date, timedelta

import sqlalchemy as sa

from certification.gate import sellable_clause
from certification.models import Product
from core.extensions import db
from core.models import Role, User
from core.timeutil import shanghai_today
from traceability import codes, services
from traceability.models import Batch

# Lot prefixes by category (pinyin initials, as cooperatives write them on their cartons).
LOT_PREFIX = {"tea": "CY", "berry_tea": "MC", "kiwifruit": "MHT", "citrus": "GJ", "camellia_oil": "YC", "rice": "DM",
              "vegetables": "SC", "herbs": "ZYC", "pork": "HZ", "beef": "HN", "lily": "BH", "buckwheat": "KQ",
              "crafts": "SG"}
# (harvest or production dates, shelf life in days or None) by category; dates are 2026's seasons.
SEASONS = {
    "tea": ((date(2026, 3, 28), date(2026, 4, 18), date(2026, 9, 20)), 540),
    "berry_tea": ((date(2026, 5, 12), date(2026, 8, 6)), 720),
    "kiwifruit": ((date(2026, 10, 22), date(2026, 11, 16)), 75),
    "citrus": ((date(2026, 11, 6), date(2026, 11, 24)), 60),
    "lily": ((date(2026, 7, 26), date(2026, 8, 14)), 365),
    "crafts": ((date(2026, 5, 30), date(2026, 9, 1)), None),
}
DEFAULT_SEASON = ((date(2026, 6, 15), date(2026, 10, 10)), 365)
HUB = "吉首市经开区 湘西香伴消费帮扶集配中心"


def _actor(cooperative_id: int) -> User | None:
    """The cooperative's own demo account if it has one, else the demo admin."""
    member = db.session.scalar(sa.select(User).where(User.role == Role.COOPERATIVE.value,
                                                     User.cooperative_id == cooperative_id).order_by(User.id))
    return member or db.session.scalar(sa.select(User).where(User.email == "admin@xiangban.test"))


def load() -> list[str]:
    """Create the demo batches once; report what was done and a few URLs to scan."""
    if db.session.scalar(sa.select(sa.func.count()).select_from(Batch)):
        return ["已有批次，未重复加载演示批次。"]
    products = list(db.session.scalars(sa.select(Product).where(sellable_clause()).order_by(Product.id)))
    if not products:
        return ["没有已认定的产品，未创建演示批次。"]
    today = shanghai_today()
    batches, serial_count, example_urls = [], 0, []
    for number, product in enumerate(products):
        actor = _actor(product.cooperative_id)
        if actor is None:
            continue
        dates, shelf_days = SEASONS.get(product.category, DEFAULT_SEASON)
        prefix = LOT_PREFIX.get(product.category, "XB")
        for sequence, produced_on in enumerate(d for d in dates if d <= today):
            village = product.villages[sequence % len(product.villages)]
            batch = services.create_batch(actor, product.id, {
                "lot": f"{prefix}-{produced_on:%Y%m%d}-{product.id:02d}{sequence + 1}",
                "village_id": village.id, "produced_on": produced_on.isoformat(),
                "expires_on": (produced_on + timedelta(days=shelf_days)).isoformat() if shelf_days else None,
                "quantity": 150 + 50 * ((number + sequence) % 6),
                "commitment_basis": ("quality_control", "self_test", "entrusted_test")[(number + sequence) % 3],
            })
            batches.append((batch, actor))
    for index, (batch, actor) in enumerate(batches):
        if index % 3 == 0:
            services.record_trace_event(actor, batch.id, {
                "type": "shipping", "location": f"{batch.village.township}{batch.village.name} 合作社仓库",
                "partner": HUB, "quantity": batch.quantity // 2,
                "occurred_at": _after(batch.produced_on, 2, today), "note": "冷链车 湘U·3A217"})
            services.record_trace_event(actor, batch.id, {
                "type": "receiving", "location": HUB, "partner": batch.product.cooperative.name,
                "quantity": batch.quantity // 2, "occurred_at": _after(batch.produced_on, 3, today)})
        if index % 4 == 0:
            issued = services.issue_serials(actor, batch.id, {"count": 12})
            serial_count += len(issued)
            if not example_urls:
                example_urls.append(("单品码", issued[0][1]))
                # One label scanned like a copied one, so the scan pages show the warning.
                code = _code_of(batch, issued[1][0])
                for _ in range(services.scan_warning_threshold() + 5):
                    services.resolve_scan(code, user_agent="Mozilla/5.0 (Linux; Android 13) Mobile Safari")
    for batch, _ in batches[:5]:
        for _ in range(3):
            services.resolve_scan(_code_of(batch), user_agent="Mozilla/5.0 (iPhone) MicroMessenger/8.0.47")
    if batches:
        example_urls.insert(0, ("批次码", services.batch_trace_url(batches[0][0])))
    services.flush_scans()
    services.clear_scan_caches()
    lines = [f"已为 {len({b.product_id for b, _ in batches})} 个认定产品登记 {len(batches)} 个批次"
             f"（承诺达标合格证、流通记录），生成 {serial_count} 个单品码。"]
    lines += [f"扫码体验（{label}）：{url}" for label, url in example_urls]
    return lines


def _after(produced_on: date, days: int, today: date) -> str:
    """An event time ``days`` after production at 09:30 Beijing time, at the latest yesterday's."""
    day = min(produced_on + timedelta(days=days), today - timedelta(days=1))
    return f"{day.isoformat()}T09:30:00+08:00"


def _code_of(batch: Batch, serial: str | None = None) -> codes.TraceCode:
    """The code a phone would send for a batch label (or one of its item labels)."""
    return codes.code_for(batch.id, batch.lot, batch.product.gtin, serial)
