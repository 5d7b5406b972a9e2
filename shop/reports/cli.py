"""``flask --app wsgi reports reconcile --year 2026`` and ``reports rebuild``."""
import click
from flask.cli import AppGroup

from core.money import format_yuan

reports_group = AppGroup("reports", help="Sales reports: reconcile with the raw orders, rebuild the summary.")

_CHANNELS = {"online": "线上", "canteen": "食堂"}


@reports_group.command("reconcile")
@click.option("--year", type=click.IntRange(2000, 2100), default=None,
              help="Asia/Shanghai year (default: this year).")
def reconcile_command(year):
    """Recompute every village's sales from raw order lines; list differences; exit 1 if any."""
    from shop.reports.services import default_year, reconcile_village_sales

    year = year or default_year()
    result = reconcile_village_sales(year)
    for difference in result.differences:
        place = "".join(part for part in (difference["county"], difference["township"], difference["village"]) if part) \
            or "（不在名录中的村）"
        click.echo(f"差异  村#{difference['village_id']} {place}：报表 {format_yuan(difference['report_sales_fen'])}"
                   f"（{difference['report_orders']} 单），重算 {format_yuan(difference['recomputed_sales_fen'])}"
                   f"（{difference['recomputed_orders']} 单），相差 "
                   f"{format_yuan(difference['report_sales_fen'] - difference['recomputed_sales_fen'])}")
        for cell in difference["months"]:
            click.echo(f"      {year}年{cell['month']}月 {_CHANNELS.get(cell['channel'], cell['channel'])}：汇总 "
                       f"{format_yuan(cell['summary'][0])}（{cell['summary'][1]} 单），重算 "
                       f"{format_yuan(cell['recomputed'][0])}（{cell['recomputed'][1]} 单）")
    for anomaly in result.anomalies:
        kind = "分配行" if anomaly["kind"] == "allocation" else "订单行"
        click.echo(f"异常  {kind}#{anomaly['id']}（订单#{anomaly['order_id']}）与原始数据不符："
                   f"{', '.join(anomaly['problems'])}")
    if result.anomaly_count > len(result.anomalies):
        click.echo(f"……另有 {result.anomaly_count - len(result.anomalies)} 条异常未列出")
    for problem in result.settlement_problems:
        click.echo(f"结算  {problem['problem']}")
    summary = (f"{year} 年对账：核对 {result.villages} 个村，销售额差异 {len(result.differences)} 个村，"
               f"数据异常 {result.anomaly_count} 条，结算单差异 {len(result.settlement_problems)} 处。")
    if result.ok:
        click.echo(summary + "报表、结算单与原始订单完全一致。")
        return
    click.echo(summary + "请核查；确认原始订单无误后可运行 `flask --app wsgi reports rebuild` 重建汇总。", err=True)
    raise SystemExit(1)


@reports_group.command("rebuild")
def rebuild_command():
    """Recreate the monthly village sales summary from the order allocations (one transaction)."""
    from shop.reports.summary import rebuild_summary

    counts = rebuild_summary()
    click.echo(f"已重建销售汇总：{counts['contributions']} 条订单-村贡献，{counts['cells']} 条村·月·渠道汇总。")
