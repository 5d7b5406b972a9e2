"""Backup and restore: the database and the uploaded files, in one tar file.

``flask --app wsgi backup create FILE`` writes a tar holding

- ``database.dump``: ``pg_dump --format=custom`` of a PostgreSQL database (consistent: one
  snapshot, taken while the app keeps running), or ``database.sqlite3``: SQLite's online backup
  of an embedded one;
- ``uploads/``: product photos, evidence PDFs, 验货 photos (the database names them; without
  them pages show broken images and evidence is lost);
- ``manifest.json``: when, which schema revision, row counts, and the SHA-256 of the database part.

``flask --app wsgi backup restore FILE --yes`` puts both back into the configured database and
upload folder (the database's current contents are replaced). Then run ``audit verify`` and
``reports reconcile`` (the restore prints it); the search index is rebuilt with ``search rebuild``.
The Whoosh index and Redis counters are not backed up: both are derived and rebuilt.
"""
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.config import upload_root
from core.extensions import db

#: Tables whose row counts the manifest records (a restore can be compared at a glance).
COUNTED = ("users", "cooperatives", "products", "batches", "orders", "order_allocations", "audit_events")


class BackupError(Exception):
    """A backup or restore that could not be done (message in Chinese, for the operator)."""


def _libpq_url(url) -> str:
    """The SQLAlchemy URL as pg_dump/pg_restore read it (no ``+psycopg`` driver part)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"{command[0]} 失败：{(result.stderr or result.stdout).strip()[:500]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def create_backup(app, target: Path) -> dict:
    """Write the backup tar to ``target``; return its manifest."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if url.get_backend_name() == "postgresql":
            database = work / "database.dump"
            _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(database), _libpq_url(url)])
        elif url.get_backend_name() == "sqlite" and url.database:
            database = work / "database.sqlite3"
            source = sqlite3.connect(url.database)
            copy = sqlite3.connect(database)
            try:
                source.backup(copy)  # an online, consistent copy even while the app writes
            finally:
                copy.close()
                source.close()
        else:
            raise BackupError(f"不支持备份此数据库：{url.get_backend_name()}")
        manifest = {
            "created_at": datetime.now(timezone.utc).isoformat(),
            "dialect": url.get_backend_name(),
            "schema_revision": db.session.scalar(sa.text("SELECT version_num FROM alembic_version")),
            "rows": {table: db.session.scalar(sa.text(f"SELECT count(*) FROM {table}")) for table in COUNTED},
            "database_file": database.name,
            "database_sha256": _sha256(database),
        }
        db.session.rollback()
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w") as archive:
            payload = json.dumps(manifest, ensure_ascii=False, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
            archive.add(database, arcname=database.name)
            uploads = upload_root(app)
            if uploads.is_dir():
                archive.add(uploads, arcname="uploads")
    return manifest


def restore_backup(app, source: Path) -> dict:
    """Replace the configured database and uploads with the backup's; return its manifest.

    :raise BackupError: not a backup of ours, damaged, or of the other kind of database.
    """
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    with tempfile.TemporaryDirectory() as work, tarfile.open(source) as archive:
        work = Path(work)
        archive.extractall(work, filter="data")  # no absolute paths, links out or devices
        try:
            manifest = json.loads((work / "manifest.json").read_text())
        except (OSError, ValueError):
            raise BackupError("这不是湘西香伴的备份文件（缺少 manifest.json）") from None
        database = work / manifest["database_file"]
        if not database.is_file() or _sha256(database) != manifest["database_sha256"]:
            raise BackupError("备份文件已损坏：数据库部分的 SHA-256 与清单不符")
        if manifest["dialect"] != url.get_backend_name():
            raise BackupError(f"备份来自 {manifest['dialect']}，不能恢复到 {url.get_backend_name()}")
        db.session.remove()
        db.engine.dispose()  # no pooled connection may hold the old database open
        if manifest["dialect"] == "postgresql":
            _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
                  "--dbname", _libpq_url(url), str(database)])
        else:
            shutil.copyfile(database, url.database)
        uploads = upload_root(app)
        if (work / "uploads").is_dir():
            if uploads.exists():
                shutil.rmtree(uploads)
            shutil.copytree(work / "uploads", uploads)
    return manifest
