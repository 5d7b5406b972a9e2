"""Traceability tests start with empty per-worker scan caches (ids restart between tests)."""
import pytest

from traceability import services


@pytest.fixture(autouse=True)
def _fresh_scan_caches():
    services.clear_scan_caches()
    yield
    services.clear_scan_caches()
