"""``flask --app wsgi orders expire | autocomplete``: housekeeping a cron job may run."""
import click
from flask import Blueprint

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
