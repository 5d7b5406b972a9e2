"""Command line: ``flask --app wsgi setup | demo | users create | audit verify``."""
import click
from flask import Flask
from flask.cli import AppGroup
from flask_migrate import upgrade
from marshmallow import ValidationError

from core.errors import AppError


def register(app: Flask) -> None:
    """Attach the project's commands to ``app``."""

    @app.cli.command("setup")
    def setup_command():
        """Create or upgrade the schema and load the village registry (safe to run twice)."""
        upgrade()
        from core.villages import load_registry

        added, updated = load_registry()
        click.echo(f"数据库已升级到最新版本；村庄名录新增 {added} 个，更正分区 {updated} 个。")

    @app.cli.command("demo")
    def demo_command():
        """Load demo cooperatives, products, batches, orders and one account per role."""
        from core.demo import load_demo

        for line in load_demo():
            click.echo(line)

    users_group = AppGroup("users", help="Manage accounts.")

    @users_group.command("create")
    @click.argument("email")
    @click.option("--role", required=True)
    @click.option("--password", required=True)
    @click.option("--display-name", default=None)
    @click.option("--county", default=None)
    @click.option("--cooperative", "cooperative_id", type=int, default=None)
    @click.option("--budget-unit", "budget_unit_id", type=int, default=None)
    def users_create(email, role, password, display_name, county, cooperative_id, budget_unit_id):
        """Create an account and print its id."""
        from core.users import create_user

        try:
            user = create_user({
                "email": email, "password": password, "role": role,
                "display_name": display_name or email.split("@")[0],
                "county": county, "cooperative_id": cooperative_id, "budget_unit_id": budget_unit_id,
            })
        except ValidationError as exc:
            raise click.ClickException(f"输入有误：{exc.messages}") from None
        except AppError as exc:
            raise click.ClickException(f"{exc.message}：{exc.fields}") from None
        click.echo(user.id)

    app.cli.add_command(users_group)

    audit_group = AppGroup("audit", help="Check the audit trail.")

    @audit_group.command("verify")
    def audit_verify():
        """Verify the audit hash chain and report the first broken link."""
        from core.audit import verify_chain

        report = verify_chain()
        if report.ok:
            click.echo(f"审计链完整：已校验 {report.checked} 条记录。")
            return
        click.echo(f"审计链在记录 #{report.broken_at} 处断裂：{report.reason}（此前 {report.checked} 条完好）。", err=True)
        raise SystemExit(1)

    app.cli.add_command(audit_group)
