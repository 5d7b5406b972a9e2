"""Startup refuses what it cannot run with, in one line (issue #14 items 6 and 7)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, ConfigError, check_config, load_config

PYTHON = sys.executable


def _start(command: list[str], **env) -> subprocess.CompletedProcess:
    """Run ``command`` in the project with only these settings changed."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DATABASE_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET")}
    environment.update(env)
    return subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120)


def _assert_one_clear_line(result, *needles):
    assert result.returncode == 1, (result.returncode, result.stderr[-500:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("湘西香伴无法启动")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("url, needle", [
    ("nonsense://x", "DATABASE_URL 无法使用"),
    ("postgresql://postgres@127.0.0.1:1/nope", "无法连接数据库"),
    ("sqlite:////nonexistent-dir/x.sqlite3", "无法连接数据库"),
    ("not a url at all", "DATABASE_URL 无法使用"),
])
def test_a_bad_database_url_stops_wsgi_with_one_line(url, needle):
    _assert_one_clear_line(_start([PYTHON, "-c", "import wsgi"], DATABASE_URL=url), needle)


def test_a_bad_database_url_stops_the_flask_command_line():
    result = _start([PYTHON, "-m", "flask", "--app", "wsgi", "routes"], DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")
    _assert_one_clear_line(result, "无法连接数据库")


def test_gunicorn_refuses_to_start_on_a_bad_database_instead_of_restarting_workers():
    gunicorn = str(Path(PYTHON).with_name("gunicorn"))
    result = _start([gunicorn, "-w", "1", "-b", "127.0.0.1:0", "wsgi:app"],
                    DATABASE_URL="postgresql://postgres@127.0.0.1:1/nope")
    _assert_one_clear_line(result, "无法连接数据库")


def test_a_password_is_not_printed():
    result = _start([PYTHON, "-c", "import wsgi"], DATABASE_URL="postgresql://postgres:s3cret-pw@127.0.0.1:1/x")
    assert "s3cret-pw" not in result.stderr and "***" in result.stderr


def test_a_stripe_key_without_the_webhook_secret_refuses_to_start():
    result = _start([PYTHON, "-c", "import wsgi"], STRIPE_SECRET_KEY="sk_test_x",
                    DATABASE_URL="sqlite:///:memory:")
    _assert_one_clear_line(result, "STRIPE_WEBHOOK_SECRET")
    with pytest.raises(ConfigError):
        check_config({"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "",
                      "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    check_config({"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x",
                  "SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_a_good_configuration_starts(tmp_path):
    result = _start([PYTHON, "-c", "import wsgi; print(wsgi.app.name)"],
                    DATABASE_URL=f"sqlite:///{tmp_path}/ok.sqlite3", SECRET_KEY="k")
    assert result.returncode == 0, result.stderr


def test_instance_folder_is_made_for_the_default_database_even_with_a_secret_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "set-by-the-operator")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    instance = tmp_path / "fresh" / "instance"
    config = load_config(instance)
    assert instance.is_dir()
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'xiangban.sqlite3'}"
    assert not (instance / "secret_key").exists()  # the operator's key is used, none generated


def test_sandbox_payments_are_off_unless_asked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("SANDBOX_PAYMENTS", raising=False)
    assert load_config(tmp_path)["SANDBOX_PAYMENTS"] is False
    monkeypatch.setenv("SANDBOX_PAYMENTS", "1")
    assert load_config(tmp_path)["SANDBOX_PAYMENTS"] is True
