"""``flask --app wsgi orders expire | autocomplete``: housekeeping a cron job may run."""
import click
from flask import Blueprint
from flask.cli import AppGroup

from shop import services

#: Carries the ``orders`` command group only (no routes).
bp = Blueprint("shop_cli", __name__, cli_group="orders")


@bp.cli.command("expire")
def expire_command():
    """Release the stock of pending orders whose reservation lapsed (safe to run any time)."""
    released = services.expire_stale_reservations()
    click.echo(f"已释放 {released} 笔超时未付款订单的库存。")


@bp.cli.command("autocomplete")
def autocomplete_command():
    """Complete shipped orders the buyer has not confirmed within ORDER_AUTO_COMPLETE_DAYS."""
    completed = services.auto_complete_shipped()
    click.echo(f"已自动确认收货 {completed} 笔订单。")


settlements_group = AppGroup("settlements", help="Settlement statements (结算单) of cooperatives.")


@settlements_group.command("issue")
@click.option("--period", required=True, help="Asia/Shanghai month, e.g. 2026-11 (must be over).")
@click.option("--cooperative", "cooperative_id", type=click.IntRange(1, 2_147_483_647), default=None,
              help="Only this cooperative (id).")
def issue_settlements_command(period, cooperative_id):
    """Issue a period's statements for every cooperative with something to settle (audited as the system)."""
    from core.errors import AppError
    from core.money import format_yuan
    from shop import settlements

    try:
        issued = settlements.issue_statements(None, period, cooperative_id)
    except AppError as exc:
        click.echo(f"未出具：{exc.message}", err=True)
        raise SystemExit(1) from None
    for statement in issued:
        click.echo(f"结算单#{statement.id} {statement.cooperative.name}：{statement.line_count} 笔，"
                   f"销售 {format_yuan(statement.gross_fen)}，退款 {format_yuan(statement.refunds_fen)}，"
                   f"应结 {format_yuan(statement.net_fen)}")
    click.echo(f"{settlements.period_label(period.strip())}：出具 {len(issued)} 份结算单。")


payments_group = AppGroup("payments", help="Payments housekeeping: refunds left pending by a crash.")


@payments_group.command("resume-refunds")
@click.option("--older-than", "older_than", type=click.IntRange(0, 10_000), default=None,
              help="Minutes a pending refund must have waited (default: RESUME_REFUNDS_AFTER_MINUTES, 10).")
def resume_refunds_command(older_than):
    """Retry pending refund intents (each with its own idempotency key: money moves at most once)."""
    older_than = services.RESUME_REFUNDS_AFTER_MINUTES if older_than is None else older_than
    outcome = services.resume_pending_refunds(older_than)
    click.echo(f"已完成 {outcome['succeeded']} 笔待处理退款，{outcome['failed']} 笔被支付服务拒绝（已释放预留金额），"
               f"{outcome['in_progress']} 笔仍在支付服务处理中或结果待确认（金额仍预留，下次用同一退款单号再试）。")
    if outcome["failed"]:
        raise SystemExit(1)
