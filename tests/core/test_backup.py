"""Backup and restore (issue #13, operations), run as an operator would: the demo database and its
uploads backed up with ``backup create``, restored into a fresh database with ``backup restore``,
after which ``audit verify`` and ``reports reconcile`` pass and the rows are all there. On
PostgreSQL through pg_dump/pg_restore; on SQLite through its online backup."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _flask(env: dict, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True, capture_output=True)


@pytest.fixture
def databases(tmp_path):
    """A source and an empty target database of the kind the suite runs on."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgresql"):
        if shutil.which("pg_dump") is None:
            pytest.skip("pg_dump is not installed")
        names = [f"xb_backup_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("source", "target")]
        for name in names:
            _psql(f"CREATE DATABASE {name}")
        base = url.rsplit("/", 1)[0]
        yield [f"{base}/{name}" for name in names]
        for name in names:
            _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        yield [f"sqlite:///{tmp_path / 'source.sqlite3'}", f"sqlite:///{tmp_path / 'target.sqlite3'}"]


def _env(url: str, tmp_path: Path, name: str) -> dict:
    return {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "backup-test", "SANDBOX_PAYMENTS": "1",
            "UPLOAD_DIR": str(tmp_path / f"uploads-{name}"), "SEARCH_INDEX_DIR": str(tmp_path / f"index-{name}"),
            "REDIS_URL": ""}


def test_a_backup_restores_into_a_fresh_database_that_verifies_and_reconciles(databases, tmp_path):
    source_url, target_url = databases
    source, target = _env(source_url, tmp_path, "source"), _env(target_url, tmp_path, "target")
    _flask(source, "setup")
    _flask(source, "demo")
    photo = tmp_path / "uploads-source" / "products" / "kept.jpg"
    photo.parent.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(b"\xff\xd8 a product photo")
    archive = tmp_path / "xiangban.backup.tar"
    created = _flask(source, "backup", "create", str(archive))
    assert "已备份到" in created.stdout

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert "uploads/products/kept.jpg" in names and manifest["rows"]["orders"] > 0
    assert manifest["rows"]["audit_events"] > 0

    refused = _flask(target, "backup", "restore", str(archive), check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    _flask(target, "backup", "restore", str(archive), "--yes")
    assert (tmp_path / "uploads-target" / "products" / "kept.jpg").read_bytes() == photo.read_bytes()
    assert "审计链完整" in _flask(target, "audit", "verify").stdout
    _flask(target, "reports", "reconcile")
    # The restored database is the backed-up one, row for row.
    again = tmp_path / "restored.backup.tar"
    _flask(target, "backup", "create", str(again))
    with tarfile.open(again) as tar:
        assert json.load(tar.extractfile("manifest.json"))["rows"] == manifest["rows"]


def test_a_damaged_backup_is_refused_and_changes_nothing(databases, tmp_path):
    source_url, target_url = databases
    source, target = _env(source_url, tmp_path, "source"), _env(target_url, tmp_path, "target")
    _flask(source, "setup")
    archive = tmp_path / "b.tar"
    _flask(source, "backup", "create", str(archive))
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(archive) as tar, tarfile.open(damaged, "w") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else None
            if member.name.startswith("database."):
                data = data[:-10] + b"0" * 10
                member.size = len(data)
            out.addfile(member, __import__("io").BytesIO(data) if data is not None else None)
    result = _flask(target, "backup", "restore", str(damaged), "--yes", check=False)
    assert result.returncode != 0 and "SHA-256" in result.stderr
