"""Helpers for browser tests."""
PHONE_WIDTH = 390  # the browser context's viewport (tests/conftest.py)


def sign_in(page, email, password="password123"):
    """Sign in through the login form."""
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def sign_in_as(page, user):
    """Forget whoever was signed in, then sign ``user`` in (one page, several people in turn)."""
    page.context.clear_cookies()
    sign_in(page, user.email)


def assert_fits_phone(page):
    """No sideways scrolling on a phone."""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
