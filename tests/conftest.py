"""Shared fixtures: one app and schema per test session (SQLite or PostgreSQL), and a clean
database for every test except the village registry, which is loaded once."""
import os
import tempfile

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from core.app import create_app
from core.extensions import db
from tests.factories import Factory

# Tables that survive between tests: the registry is loaded once (1,110 rows).
PERSISTENT_TABLES = {"villages", "alembic_version"}


def _database_url(tmp_dir: str) -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_dir}/test.sqlite3"


@pytest.fixture(scope="session")
def app():
    """The application, migrated to head with the village registry loaded."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        app = create_app({
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": _database_url(tmp_dir).replace("postgresql://", "postgresql+psycopg://", 1),
            "WTF_CSRF_ENABLED": False,
            "PUBLIC_BASE_URL": "https://trace.example.cn",
            "SEARCH_INDEX_DIR": os.path.join(tmp_dir, "search_index"),
            "UPLOAD_DIR": os.path.join(tmp_dir, "uploads"),
            # Fast hashing keeps hundreds of test accounts cheap; production uses scrypt.
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
            "STRIPE_SECRET_KEY": "",
            "STRIPE_WEBHOOK_SECRET": "whsec_test_secret",
            # The offline simulated checkout, as the demo runs it (tests/shop/test_sandbox_checkout.py
            # covers it switched off).
            "SANDBOX_PAYMENTS": True,
            # Seal each audited commit before the test reads the chain (tests/core/test_audit.py
            # covers the background sealer production uses on PostgreSQL).
            "AUDIT_SEAL_MODE": "inline",
        })
        with app.app_context():
            _reset_schema()
            upgrade()
            from core.villages import load_registry

            load_registry()
        yield app
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def _reset_schema() -> None:
    """Drop whatever a previous run left in the test database (PostgreSQL keeps it)."""
    engine = db.engine
    metadata = sa.MetaData()
    metadata.reflect(bind=engine)
    metadata.drop_all(bind=engine)


def _clean_tables() -> None:
    """Empty every table but the persistent ones, after each test."""
    # Background writers fed by signals (the search indexer) must finish first: a reader inside
    # a transaction and this TRUNCATE deadlock on PostgreSQL.
    from search.services import flush_indexing

    flush_indexing()
    db.session.rollback()
    tables = [t for t in reversed(db.metadata.sorted_tables) if t.name not in PERSISTENT_TABLES]
    if db.engine.dialect.name == "postgresql":
        names = ", ".join(f'"{t.name}"' for t in tables)
        db.session.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(table.delete())
    db.session.commit()


@pytest.fixture(autouse=True)
def _app_context(app):
    """Each test runs in an app context over an emptied database."""
    with app.app_context():
        yield
        _clean_tables()
        db.session.remove()
        # Rate-limit counts must not leak from one test into the next.
        app.extensions.pop("rate_limit_counter", None)
        # Nor the scan page's per-worker caches and counts (ids restart after the truncation).
        from traceability.scanning import clear_scan_caches

        clear_scan_caches()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make(app):
    """Factory for users, cooperatives and (as features land) products and orders."""
    return Factory(app)


@pytest.fixture(scope="session")
def live_server(app):
    """The app served over HTTP on a loopback port, for browser and HTTP-client tests."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; skips without it unless CI=true."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (see .ci/run)")
        pytest.skip(f"browser tests need {CHROMIUM} (apt-get install chromium fonts-noto-cjk)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, app):
    """A fresh browser context with CSRF on (as in production), phone-sized by default."""
    app.config["WTF_CSRF_ENABLED"] = True
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN",
                                  base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()
    app.config["WTF_CSRF_ENABLED"] = False

