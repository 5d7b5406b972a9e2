"""Helpers for browser tests."""
def sign_in(page, email, password="password123"):
    """Sign in through the login form."""
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
