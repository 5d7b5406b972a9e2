"""Daily reminder of the canteens' reserved share (``flask --app wsgi notifications remind``).

A unit is *behind* when what it has bought this Shanghai year is less than its reserved target
pro rata to the days gone (the figures of ``shop.reports``: the same target and purchases the
reports show). Its canteen buyers are told at most once a month (``dedupe_key`` per unit and
month), with how much is left to buy.
"""
from datetime import date

from core.models import Role
from core.money import format_yuan
from core.notifications import active_users, notify
from core.timeutil import shanghai_today
from shop.reports.services import reserved_share_items


def expected_by_now(target_fen: int, today) -> int:
    """The part of a yearly target that should be bought by ``today`` (days gone, today included)."""
    days_in_year = (date(today.year + 1, 1, 1) - date(today.year, 1, 1)).days
    return target_fen * today.timetuple().tm_yday // days_in_year


def remind_canteens_behind() -> int:
    """Tell each behind unit's canteen buyers, once per month."""
    today = shanghai_today()
    written = 0
    for item in reserved_share_items(today.year):
        if not item["has_quota"]:
            continue
        expected = expected_by_now(item["reserved_target_fen"], today)
        if item["purchased_fen"] >= expected:
            continue
        buyers = active_users(Role.CANTEEN_BUYER, budget_unit_id=item["budget_unit_id"])
        written += len(notify(
            buyers, "canteen_share_behind", f"{item['name']}：消费帮扶预留份额进度落后",
            f"{today.year} 年预留份额目标 {format_yuan(item['reserved_target_fen'])}，截至 {today.isoformat()} "
            f"已采购 {format_yuan(item['purchased_fen'])}，按时间进度应达到 {format_yuan(expected)}，"
            f"全年还差 {format_yuan(item['remaining_fen'])}。请尽快安排采购脱贫地区农副产品。",
            "/reports/canteen", dedupe_key=f"canteen_share_behind:{item['budget_unit_id']}:{today:%Y-%m}"))
    return written
