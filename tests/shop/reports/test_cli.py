"""``flask reports reconcile`` finds no difference on real data and catches corrupted rows; ``reports rebuild``."""
import sqlalchemy as sa

from core.extensions import db
from shop.models import OrderAllocation
from shop.reports.services import reconcile_village_sales


def _reconcile(runner, year):
    """Run ``flask reports reconcile --year``."""
    return runner.invoke(args=["reports", "reconcile", "--year", str(year)])


def test_reconcile_reports_no_difference_on_the_scenario(runner, scenario):
    for year in (scenario.R, scenario.P):
        result = _reconcile(runner, year)
        assert result.exit_code == 0, result.output
        assert f"{year} 年对账：核对 1110 个村，销售额差异 0 个村，数据异常 0 条" in result.output


def test_reconcile_catches_a_corrupted_allocation_amount(runner, scenario):
    s = scenario
    # Through the ORM, so the summary (and the report) follow the corrupted amount.
    allocation = db.session.scalars(sa.select(OrderAllocation).where(
        OrderAllocation.order_id == s.orders["O3"]["id"])).one()
    allocation.amount_fen += 100
    db.session.commit()
    result = _reconcile(runner, s.R)
    assert result.exit_code == 1
    assert f"差异  村#{s.villages['D'].id}" in result.output
    assert "报表 ¥2,021.00（3 单），重算 ¥2,020.00（3 单），相差 ¥1.00" in result.output
    assert f"分配行#{allocation.id}（订单#{s.orders['O3']['id']}）与原始数据不符：amount_fen" in result.output
    assert "订单行" in result.output and "line_total_fen" in result.output
    assert "销售额差异 1 个村，数据异常 2 条" in result.output


def test_reconcile_catches_a_row_changed_behind_the_sessions_back(runner, scenario):
    s = scenario
    allocation_id = db.session.scalar(sa.select(OrderAllocation.id).where(
        OrderAllocation.order_id == s.orders["O3"]["id"]))
    db.session.execute(sa.text("UPDATE order_allocations SET refunded_fen = 0 WHERE id = :id"), {"id": allocation_id})
    db.session.commit()
    result = _reconcile(runner, s.R)
    assert result.exit_code == 1
    assert f"分配行#{allocation_id}" in result.output and "refunded_fen" in result.output


def test_reconcile_catches_an_allocation_credited_to_the_wrong_village(runner, scenario):
    s = scenario
    # Through the ORM, so the summary follows the corruption: only the raw recomputation can tell.
    allocation = db.session.scalars(sa.select(OrderAllocation).where(
        OrderAllocation.order_id == s.orders["O2"]["id"], OrderAllocation.village_id == s.villages["D"].id)).one()
    allocation.village_id = s.villages["A"].id
    db.session.commit()
    outcome = reconcile_village_sales(s.R)
    assert not outcome.ok
    moved = {d["village_id"]: (d["report_sales_fen"], d["recomputed_sales_fen"]) for d in outcome.differences}
    assert moved == {s.villages["A"].id: (10_000, 0), s.villages["D"].id: (192_000, 202_000)}
    assert [(a["id"], a["problems"]) for a in outcome.anomalies] == [(allocation.id, ["village_id"])]
    assert _reconcile(runner, s.R).exit_code == 1


def test_reconcile_catches_a_refund_recorded_on_the_allocation_only(runner, scenario):
    s = scenario
    allocation = db.session.scalars(sa.select(OrderAllocation).where(
        OrderAllocation.order_id == s.orders["O2"]["id"], OrderAllocation.village_id == s.villages["B"].id)).one()
    allocation.refunded_fen = 1_000
    db.session.commit()
    outcome = reconcile_village_sales(s.R)
    assert [(d["village_id"], d["report_sales_fen"], d["recomputed_sales_fen"]) for d in outcome.differences] == \
           [(s.villages["B"].id, 19_000, 20_000)]
    assert {a["kind"] for a in outcome.anomalies} == {"allocation", "line"}


def test_rebuild_repairs_a_summary_that_missed_a_raw_write(runner, scenario):
    s = scenario
    db.session.execute(sa.text("DELETE FROM report_village_month_sales"))
    db.session.commit()
    assert _reconcile(runner, s.R).exit_code == 1
    result = runner.invoke(args=["reports", "rebuild"])
    assert result.exit_code == 0 and "已重建销售汇总" in result.output
    assert _reconcile(runner, s.R).exit_code == 0
