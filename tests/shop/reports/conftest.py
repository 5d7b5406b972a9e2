"""Fixtures for report tests: the scenario built through the shop's real flows, and report readers."""
import pytest

from core.models import Role
from tests.shop.reports import scenario as scenario_module


@pytest.fixture
def scenario(client, make):
    """Orders placed, paid, refunded and cancelled through the API (see scenario.py)."""
    return scenario_module.build(client, make)


@pytest.fixture
def official(make):
    """A signed-up official (the dashboard's audience)."""
    return make.user(Role.OFFICIAL)
