"""Command line: ``flask --app wsgi setup | demo | users create | audit verify | backup create|restore | targets export|import``."""
from pathlib import Path

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
    @click.option("--checkpoint", "checkpoint_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="A signed checkpoint (audit checkpoint): the history up to it must be unchanged.")
    @click.option("--public-key", "public_key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  envvar="AUDIT_PUBLIC_KEY_FILE", help="The checkpoint key's public half (PEM).")
    def audit_verify(checkpoint_file, public_key_file):
        """Verify the audit hash chain (and a signed checkpoint); report the first broken link."""
        import json

        from core.audit import seal_pending, verify_chain, verify_checkpoint

        # What committed but was not linked yet (a process died first) is linked, then checked too.
        sealed = seal_pending()
        if sealed:
            click.echo(f"先封存了 {sealed} 条已提交但尚未链接的审计记录。")
        report = verify_chain()
        if not report.ok:
            click.echo(f"审计链在记录 #{report.broken_at} 处断裂：{report.reason}（此前 {report.checked} 条完好）。",
                       err=True)
            raise SystemExit(1)
        if checkpoint_file:
            if public_key_file is None:
                raise click.ClickException("校验检查点需要公钥：--public-key 或 AUDIT_PUBLIC_KEY_FILE")
            try:
                checkpoint = json.loads(checkpoint_file.read_text())
            except ValueError:
                raise click.ClickException("检查点文件不是有效的 JSON") from None
            problem = verify_checkpoint(checkpoint, public_key_file.read_bytes())
            if problem:
                click.echo(f"审计链与检查点不符：{problem}。", err=True)
                raise SystemExit(1)
            click.echo(f"审计链完整：已校验 {report.checked} 条记录，与 {checkpoint['at']} 的签名检查点"
                       f"（截至第 {checkpoint['last_seq']} 条）一致。")
            return
        click.echo(f"审计链完整：已校验 {report.checked} 条记录。")

    @audit_group.command("seal")
    def audit_seal():
        """Link committed events that are not in the chain yet (normally done right after each commit)."""
        from core.audit import seal_pending

        click.echo(f"已封存 {seal_pending()} 条审计记录。")

    @audit_group.command("checkpoint")
    @click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  envvar="AUDIT_SIGNING_KEY_FILE", required=True, help="Ed25519 private key (PEM), kept outside the database.")
    @click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
    def audit_checkpoint(key_file, out_file):
        """Sign the chain's current head into OUT (file it away from the database server)."""
        import json

        from core.audit import make_checkpoint

        checkpoint = make_checkpoint(key_file.read_bytes())
        out_file.write_text(json.dumps(checkpoint, indent=2))
        click.echo(f"已签发检查点：截至第 {checkpoint['last_seq']} 条，共 {checkpoint['count']} 条 → {out_file}")

    @audit_group.command("keygen")
    @click.option("--private", "private_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
    @click.option("--public", "public_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
    def audit_keygen(private_file, public_file):
        """Make an Ed25519 key pair for checkpoints (the private file is written owner-only)."""
        import os

        from core.audit import new_signing_key

        private, public = new_signing_key()
        descriptor = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(private)
        public_file.write_bytes(public)
        click.echo(f"已生成签名密钥：私钥 {private_file}（请保存在数据库服务器之外），公钥 {public_file}")

    app.cli.add_command(audit_group)

    backup_group = AppGroup("backup", help="Back up or restore the database and the uploaded files.")

    @backup_group.command("create")
    @click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
    def backup_create(target):
        """Write the database and uploads to TARGET (a tar file)."""
        from core.backup import BackupError, create_backup

        try:
            manifest = create_backup(app, target)
        except BackupError as exc:
            raise click.ClickException(str(exc)) from None
        rows = "，".join(f"{table} {count}" for table, count in manifest["rows"].items())
        click.echo(f"已备份到 {target}（结构版本 {manifest['schema_revision']}；{rows}）。")

    @backup_group.command("restore")
    @click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--yes", is_flag=True, help="Confirm: the configured database and uploads are replaced.")
    def backup_restore(source, yes):
        """Replace the configured database and uploads with SOURCE's."""
        from core.backup import BackupError, restore_backup

        if not yes:
            raise click.ClickException("恢复会覆盖当前数据库和上传文件；确认请加 --yes")
        try:
            manifest = restore_backup(app, source)
        except BackupError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"已从 {source} 恢复（备份于 {manifest['created_at']}，结构版本 {manifest['schema_revision']}）。"
                   "请运行 flask --app wsgi db upgrade、audit verify、reports reconcile 和 search rebuild。")

    app.cli.add_command(backup_group)

    targets_group = AppGroup("targets", help="Villages' yearly sales targets (CSV as on the 销售目标 page).")

    @targets_group.command("export")
    @click.option("--year", type=int, required=True)
    @click.option("--county", default=None)
    @click.argument("output", type=click.File("w", encoding="utf-8", lazy=True), default="-")
    def targets_export(year, county, output):
        """Write every village (of a county) with its target for YEAR as CSV, to fill in."""
        from core.village_targets import export_csv

        try:
            output.write(export_csv(year, county))
        except AppError as exc:
            raise click.ClickException(exc.message) from None

    @targets_group.command("import")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    @click.option("--reason", default="", help="recorded on the audit trail with every change")
    def targets_import(path, reason):
        """Set targets from a filled-in CSV, all or nothing (exit 1 and change nothing on any error)."""
        from pathlib import Path as _Path

        from core.village_targets import import_csv

        try:
            report = import_csv(None, _Path(path).read_bytes(), reason=reason)
        except AppError as exc:
            raise click.ClickException(exc.message) from None
        if not report.ok:
            for error in report.errors:
                click.echo(error, err=True)
            raise SystemExit(1)
        click.echo(f"已导入 {report.rows} 行：{report.changed} 个村的目标有变化，{report.unchanged} 个未变。")

    app.cli.add_command(targets_group)
    app.cli.add_command(notifications_group)


notifications_group = AppGroup("notifications", help="Deliver the notifications outbox and write daily reminders.")


@notifications_group.command("send")
@click.option("--loop", is_flag=True, help="Keep running, one pass every --interval seconds.")
@click.option("--interval", type=float, default=30.0, show_default=True)
@click.option("--batch", "batch_size", type=click.IntRange(1, 1000), default=50, show_default=True)
def notifications_send(loop, interval, batch_size):
    """Send due e-mail deliveries once (cron: every minute), retrying failures with backoff."""
    from core.notifications import run_worker, send_pending

    if loop:
        run_worker(interval=interval, echo=click.echo)
        return
    report = send_pending(limit=batch_size)
    click.echo(f"已发送 {report.sent} 条，稍后重试 {report.retried} 条，放弃 {report.failed} 条。")
    if report.scrubbed:
        click.echo(f"已清除 {report.scrubbed} 条不再发送的一次性链接。")
    for name in report.waiting_channels:
        click.echo(f"渠道 {name} 未配置（如 SMTP_HOST），待发送的消息保留在发件箱中。")


@notifications_group.command("remind")
def notifications_remind():
    """Write today's reminders (certificates and evidence expiring, canteens behind their share);
    safe to run more than once a day: nothing is reminded twice for one period."""
    from core.notifications import run_reminders

    for name, count in run_reminders().items():
        click.echo(f"{name}: {count}")
