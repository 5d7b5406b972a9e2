"""Shop settings: read from the app config (tests) or the environment, with documented defaults."""
import os
from dataclasses import dataclass

from flask import current_app

#: name → default. See the report/README for what each means.
DEFAULTS = {
    # A pending online order holds its stock this long, then is released.
    "ORDER_RESERVATION_MINUTES": 30,
    # Canteen orders paid by 对公转账 take days to arrive; their stock is held longer.
    "BANK_TRANSFER_RESERVATION_HOURS": 72,
    # Orders paid through real Stripe are released locally only this long after the Checkout
    # Session expired, so Stripe's own checkout.session.expired (or a late completion) wins.
    "STRIPE_EXPIRY_GRACE_MINUTES": 10,
    # Extra Checkout payment methods besides card, comma-separated: "alipay,wechat_pay".
    "STRIPE_WALLET_METHODS": "",
    # Shipped orders the buyer never confirms are completed after this many days (CLI).
    "ORDER_AUTO_COMPLETE_DAYS": 15,
    # The platform's 对公收款账户 that canteen buyers transfer to. No default on purpose: an
    # invented account in production would send public money astray; unset, pages say so.
    "BANK_TRANSFER_PAYEE": "",
    "BANK_TRANSFER_BANK": "",
    "BANK_TRANSFER_ACCOUNT": "",
}


def setting(name: str):
    """Return a shop setting, coerced to the type of its default."""
    default = DEFAULTS[name]
    value = current_app.config.get(name)
    if value is None:
        value = os.environ.get(name, default)
    return type(default)(value)


def wallet_methods() -> list[str]:
    """Return the configured extra Checkout payment methods, known ones only."""
    raw = setting("STRIPE_WALLET_METHODS")
    return [m for m in (part.strip() for part in raw.split(",")) if m in ("alipay", "wechat_pay")]


@dataclass(frozen=True)
class BankAccount:
    """The payee details a buyer needs for a 对公转账."""

    payee: str
    bank: str
    account: str


def bank_transfer_account() -> BankAccount | None:
    """Return the configured 对公收款账户, or None unless payee, bank and account are all set.

    Why all or nothing: a payee without an account number (or the reverse) cannot be paid
    correctly, so the pages treat it as not configured and tell buyers whom to ask.
    """
    parts = [setting(name).strip() for name in ("BANK_TRANSFER_PAYEE", "BANK_TRANSFER_BANK", "BANK_TRANSFER_ACCOUNT")]
    return BankAccount(*parts) if all(parts) else None
