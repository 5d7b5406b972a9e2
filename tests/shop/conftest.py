"""Fixtures shared by the shop's tests."""
import pytest

from tests.shop.helpers import FakeStripe


@pytest.fixture
def fake_stripe(app):
    """Real Stripe mode, with the client aimed at a loopback server (``tests.shop.helpers.FakeStripe``)."""
    with FakeStripe() as fake:
        app.config.update(STRIPE_SECRET_KEY="sk_test_loopback", STRIPE_API_BASE=fake.url)
        try:
            yield fake
        finally:
            if fake.hold_refunds is not None:  # never leave a held request waiting on the server
                fake.hold_refunds.set()
            app.config.update(STRIPE_SECRET_KEY="", STRIPE_API_BASE="", STRIPE_WALLET_METHODS=None)
