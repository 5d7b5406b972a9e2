"""Stripe Checkout (test mode) and the offline sandbox that imitates it.

Only this module talks to Stripe. With ``STRIPE_SECRET_KEY`` set, stripe-python's
``StripeClient`` creates Checkout Sessions, expires them and refunds payments (pointed at
``STRIPE_API_BASE`` when set, as the tests do with a loopback server). Without a key, the
sandbox hands out ``cs_sandbox_…`` sessions whose checkout page signs a
``checkout.session.completed`` event exactly as Stripe does, for the same webhook handler.
"""
import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import datetime

import stripe
from flask import current_app

from core.errors import AppError, BadRequest
from core.http import json_problems
from shop.settings import wallet_methods

log = logging.getLogger(__name__)

SANDBOX_PREFIX = "cs_sandbox_"
#: Stripe refuses events older than this by default; we do the same.
SIGNATURE_TOLERANCE_SECONDS = 300
#: Stripe allows a Checkout Session to live between 30 minutes and 24 hours.
STRIPE_MIN_SESSION_SECONDS = 30 * 60 + 60
STRIPE_MAX_SESSION_SECONDS = 24 * 3600 - 60


class PaymentProviderError(AppError):
    """Stripe could not be reached or refused the request; nothing was changed here."""

    status, code, message = 502, "payment_provider_error", "支付服务暂时不可用，请稍后再试"


class RefundRefused(PaymentProviderError):
    """Stripe definitely did not refund (it refused the request: 4xx other than 409/429)."""

    message = "支付服务拒绝了该退款，未做任何更改"


class RefundUnconfirmed(PaymentProviderError):
    """Stripe may or may not have refunded: the connection dropped, timed out, or Stripe answered
    5xx or 429 after stripe-python's retries. The intent stays pending with its amount reserved
    and the same idempotency key; ``payments resume-refunds`` asks again and finishes it once."""

    status, code = 502, "refund_unconfirmed"
    message = "退款已提交，但支付服务尚未确认结果：金额已预留，系统会用同一退款单号自动核实，请勿重复退款，稍后刷新查看"


class RefundInProgress(RefundUnconfirmed):
    """Stripe is still working on a request with the same idempotency key (another worker is
    carrying out the same refund intent): its outcome is unknown here, so nothing is decided."""

    status, code, message = 409, "refund_in_progress", "该退款正在由支付服务处理中，请稍后刷新查看结果"


class PaymentsUnavailable(AppError):
    """Neither Stripe nor the demo's simulated checkout is configured: nobody can pay online."""

    status, code, message = 503, "payments_unavailable", "在线支付暂未开通，请稍后再试或联系平台工作人员"


def stripe_enabled() -> bool:
    """True when a Stripe secret key is configured."""
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def sandbox_enabled() -> bool:
    """True when the offline simulated checkout is on: asked for (``SANDBOX_PAYMENTS``, the demo
    turns it on) and no Stripe key configured. Off, nobody can mark an order paid without money."""
    return not stripe_enabled() and bool(current_app.config.get("SANDBOX_PAYMENTS"))


def ensure_online_payments() -> None:
    """:raise PaymentsUnavailable: no way to pay online is configured (503)."""
    if not stripe_enabled() and not sandbox_enabled():
        raise PaymentsUnavailable()


def sandbox_secret() -> str:
    """A per-instance webhook secret for the sandbox, derived from SECRET_KEY.

    Derived rather than random so every worker process of one deployment agrees on it.
    """
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), b"stripe-sandbox-webhook", hashlib.sha256)
    return "whsec_sandbox_" + digest.hexdigest()[:40]


def webhook_secret() -> str:
    """The secret webhook signatures are checked against."""
    return current_app.config.get("STRIPE_WEBHOOK_SECRET") or sandbox_secret()


def _client() -> stripe.StripeClient:
    """A Stripe client for the configured key, aimed at STRIPE_API_BASE when set."""
    base = current_app.config.get("STRIPE_API_BASE")
    kwargs = {"base_addresses": {"api": base}} if base else {}
    return stripe.StripeClient(current_app.config["STRIPE_SECRET_KEY"], max_network_retries=2, **kwargs)


def session_expiry(reserved_until: datetime, now: datetime) -> datetime:
    """Clamp a reservation deadline into the window Stripe accepts for ``expires_at``."""
    seconds = (reserved_until - now).total_seconds()
    seconds = min(max(seconds, STRIPE_MIN_SESSION_SECONDS), STRIPE_MAX_SESSION_SECONDS)
    return datetime.fromtimestamp(int(now.timestamp() + seconds), tz=now.tzinfo)


def sandbox_checkout_session(base_url: str) -> tuple[str, str]:
    """A simulated Checkout Session (offline demo): (session id, its page on this site)."""
    session_id = SANDBOX_PREFIX + secrets.token_urlsafe(24)
    return session_id, f"{base_url}/pay/sandbox/{session_id}"


def create_checkout_session(order, *, expires_at: datetime, base_url: str) -> tuple[str, str]:
    """Create a Checkout Session for ``order``; return (session id, checkout URL).

    :raise PaymentProviderError: Stripe refused or could not be reached.
    """
    if not stripe_enabled():
        return sandbox_checkout_session(base_url)
    methods = ["card", *wallet_methods()]
    params = {
        "mode": "payment",
        "currency": "cny",
        "client_reference_id": str(order.id),
        "metadata": {"order_id": str(order.id), "order_number": order.number},
        "payment_intent_data": {"metadata": {"order_id": str(order.id), "order_number": order.number}},
        "line_items": [
            {
                "quantity": line.quantity,
                "price_data": {
                    "currency": "cny",
                    "unit_amount": line.unit_price_fen,
                    "product_data": {"name": line.product_name, "metadata": {"product_id": str(line.product_id)}},
                },
            }
            for line in order.lines
        ],
        "payment_method_types": methods,
        "success_url": f"{base_url}/orders/{order.id}?paid=1",
        "cancel_url": f"{base_url}/orders/{order.id}",
        "expires_at": int(expires_at.timestamp()),
    }
    if "wechat_pay" in methods:
        params["payment_method_options"] = {"wechat_pay": {"client": "web"}}
    try:
        session = _client().v1.checkout.sessions.create(
            params=params, options={"idempotency_key": f"xiangban-checkout-{order.number}"})
    except stripe.StripeError as exc:
        log.warning("stripe checkout session for order %s failed: %s", order.id, exc)
        raise PaymentProviderError() from exc
    return session.id, session.url


def expire_checkout_session(session_id: str) -> str:
    """Ask Stripe to expire an open Checkout Session; return its resulting status.

    Returns ``"complete"`` when Stripe says the buyer already paid (the session cannot be
    expired), so the caller must not cancel. Sandbox sessions need no call.

    :raise PaymentProviderError: Stripe could not be reached.
    """
    if not stripe_enabled() or session_id.startswith(SANDBOX_PREFIX):
        return "expired"
    client = _client()
    try:
        return client.v1.checkout.sessions.expire(session_id).status
    except stripe.InvalidRequestError:
        # Stripe refuses to expire a session that is not open: find out whether it was paid.
        try:
            session = client.v1.checkout.sessions.retrieve(session_id)
        except stripe.StripeError as exc:
            raise PaymentProviderError() from exc
        return session.status
    except stripe.StripeError as exc:
        raise PaymentProviderError() from exc


def refund_refused(exc: stripe.StripeError) -> bool:
    """True only when ``exc`` proves Stripe did not refund: a 4xx answer other than 409 (the key
    is busy) and 429 (rate limited), and not an idempotency error (a request with this key was
    seen before). A dropped connection, a timeout, 5xx or no status at all leave it unknown."""
    if isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError, stripe.IdempotencyError)):
        return False
    status = exc.http_status
    return isinstance(status, int) and 400 <= status < 500 and status not in (409, 429)


def refund_payment(payment_intent_id: str, amount_fen: int, *, idempotency_key: str, order_number: str) -> str:
    """Refund ``amount_fen`` of a Stripe payment; return Stripe's refund id.

    :raise RefundInProgress: another request with this idempotency key is still running at Stripe.
    :raise RefundUnconfirmed: Stripe may have refunded (connection dropped, timeout, 5xx, 429):
        ask again with the same idempotency key, never with a new one.
    :raise RefundRefused: Stripe refused the refund (nothing moved).
    """
    try:
        refund = _client().v1.refunds.create(
            params={"payment_intent": payment_intent_id, "amount": amount_fen,
                    # The key travels with the refund, so ``find_refund`` recognises it later.
                    "metadata": {"order_number": order_number, "refund_key": idempotency_key}},
            options={"idempotency_key": idempotency_key},
        )
    except stripe.StripeError as exc:
        if exc.http_status == 409:
            # 409: a request with this idempotency key is still running at Stripe (stripe-python
            # has retried already): its outcome is not known yet, so it is neither done nor failed.
            log.warning("stripe refund for %s is in progress elsewhere: %s", order_number, exc)
            raise RefundInProgress() from exc
        if not refund_refused(exc):
            log.warning("stripe refund for %s has an unknown outcome (%s): %s", order_number,
                        type(exc).__name__, exc)
            raise RefundUnconfirmed() from exc
        log.warning("stripe refund for %s refused: %s", order_number, exc)
        # Stripe's error code (say ``charge_already_refunded``) is what finance can look up.
        reason = f"（Stripe：{exc.code}）" if getattr(exc, "code", None) else ""
        raise RefundRefused(RefundRefused.message + reason) from exc
    return refund.id


def find_refund(payment_intent_id: str, idempotency_key: str) -> str | None:
    """The id of the refund an earlier request with ``idempotency_key`` made on this payment, if
    Stripe holds one (``refund_payment`` writes the key into the refund's metadata); else None.

    Why: Stripe remembers an idempotency key for 24 hours only. A refund whose answer was lost and
    that is asked again later would be made a second time under the same key; looking first, when
    asking again, moves the money once however late the retry.

    :raise RefundUnconfirmed: Stripe could not tell (connection, timeout, 5xx, 429): still pending.
    """
    try:
        refunds = _client().v1.refunds.list(params={"payment_intent": payment_intent_id, "limit": 100})
    except stripe.StripeError as exc:
        if not refund_refused(exc):
            log.warning("stripe refunds of %s could not be listed (%s): %s", payment_intent_id,
                        type(exc).__name__, exc)
            raise RefundUnconfirmed() from exc
        # A definite 4xx (say, an unknown payment): there is nothing to find; the refund request
        # itself gets Stripe's answer.
        log.warning("stripe refunds of %s refused to be listed: %s", payment_intent_id, exc)
        return None
    for refund in refunds.data:
        if (refund.to_dict().get("metadata") or {}).get("refund_key") == idempotency_key:
            return refund.id
    return None


def sign_payload(payload: str, secret: str, timestamp: int | None = None) -> str:
    """Return a ``Stripe-Signature`` header for ``payload``, computed exactly as Stripe does."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def verify_event(raw_body: bytes, signature_header: str | None) -> dict:
    """Check the signature over the raw body and return the event as a dict.

    :raise BadRequest: missing, wrong or stale signature, or a body that is not an event (400).
    """
    try:
        payload = raw_body.decode("utf-8")
        stripe.WebhookSignature.verify_header(payload, signature_header or "", webhook_secret(),
                                              tolerance=SIGNATURE_TOLERANCE_SECONDS)
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest("签名校验失败", code="invalid_signature") from exc
    # Signed is not the same as well formed: nothing Stripe sends nests deep, carries NUL, lone
    # surrogates or integers past 2^53, and such values would fail in the database, not here.
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str) \
            or not isinstance((event.get("data") or {}).get("object"), dict) or json_problems(event) != {}:
        raise BadRequest("不是有效的事件", code="invalid_event")
    return event


def sandbox_completed_event(order) -> str:
    """Build the JSON body of the ``checkout.session.completed`` event Stripe would send."""
    now = int(time.time())
    event = {
        "id": "evt_sandbox_" + secrets.token_hex(12),
        "object": "event",
        "type": "checkout.session.completed",
        "created": now,
        "livemode": False,
        "data": {
            "object": {
                "id": order.checkout_session_id,
                "object": "checkout.session",
                "mode": "payment",
                "status": "complete",
                "payment_status": "paid",
                "client_reference_id": str(order.id),
                "currency": "cny",
                "amount_total": order.total_fen,
                "payment_intent": "pi_sandbox_" + secrets.token_hex(12),
                "metadata": {"order_id": str(order.id), "order_number": order.number},
            }
        },
    }
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
