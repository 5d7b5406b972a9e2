"""Shared helpers for shop tests: an order request body, a placed order, signed webhook calls,
and a loopback HTTP server standing in for Stripe's API."""
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from shop import payments

SHIPPING = {"name": "张三", "phone": "13800000000", "address": "湖南省吉首市人民北路 1 号"}


def order_body(*lines, payment_method="stripe", **extra) -> dict:
    """An order request for [(product, quantity)]."""
    return {"lines": [{"product_id": p.id, "quantity": q} for p, q in lines], "payment_method": payment_method,
            "shipping": SHIPPING, **extra}


def place(client, make, user, *lines, status=201, **extra) -> dict:
    """POST an order as ``user`` and return its JSON body."""
    response = client.post("/api/v1/orders", json=order_body(*lines, **extra), headers=make.headers(user))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def completed_event(order: dict, **overrides) -> dict:
    """The checkout.session.completed event Stripe sends for a placed order (JSON from the API)."""
    session = {"id": order["payment"]["checkout_session_id"], "object": "checkout.session",
               "client_reference_id": str(order["id"]), "payment_status": "paid", "status": "complete",
               "currency": "cny", "amount_total": order["total_fen"], "payment_intent": "pi_test_123"}
    session.update(overrides.pop("session", {}))
    event = {"id": "evt_" + secrets.token_hex(8), "object": "event", "type": "checkout.session.completed",
             "created": int(time.time()), "data": {"object": session}}
    event.update(overrides)
    return event


def deliver(client, event: dict, secret="whsec_test_secret", timestamp=None, signature=None):
    """POST a webhook event signed as Stripe would (or with the given signature header)."""
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    header = signature or payments.sign_payload(body, secret, timestamp)
    return client.post("/api/v1/payments/stripe/webhook", data=body.encode(),
                       headers={"Stripe-Signature": header, "Content-Type": "application/json"})


def _line_items_total(form: dict) -> int:
    """Sum of quantity × unit_amount over the form-encoded line items."""
    total, index = 0, 0
    while f"line_items[{index}][quantity]" in form:
        total += int(form[f"line_items[{index}][quantity]"]) * int(form[f"line_items[{index}][price_data][unit_amount]"])
        index += 1
    return total


class FakeStripe:
    """A loopback HTTP server answering the few Stripe endpoints the shop calls, recording requests."""

    def __init__(self):
        self.requests: list[dict] = []
        self.session_status = "open"
        self.fail_with: int | None = None
        self.fail_type = "api_error"
        self.fail_code: str | None = None  # Stripe's error ``code`` in failed answers, when set
        #: Set to an Event to hold refund requests until it is set (``refund_entered`` tells when one waits).
        self.hold_refunds: threading.Event | None = None
        self.refund_entered = threading.Event()
        #: Refunds made, by idempotency key: a repeated key gets the first refund back, as at Stripe.
        self.refunds_by_key: dict[str, dict] = {}
        #: Every refund made, newest last (what listing a payment's refunds returns); unlike the keys,
        #: never forgotten (``forget_idempotency_keys``).
        self.refunds: list[dict] = []
        #: Set to ``"drop"`` (close the connection unanswered) or a status such as 500: refund
        #: requests are carried out, then answered that way, so the caller cannot know the outcome.
        self.break_refunds: str | int | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", "req_" + secrets.token_hex(6))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                form = dict(parse_qsl(raw, keep_blank_values=True))
                fake.requests.append({"method": self.command, "path": self.path, "form": form,
                                      "headers": dict(self.headers)})
                if fake.fail_with:
                    error = {"type": fake.fail_type, "message": "boom"}
                    if fake.fail_code:
                        error["code"] = fake.fail_code
                    return self._answer(fake.fail_with, {"error": error})
                if self.path == "/v1/checkout/sessions" and self.command == "POST":
                    session_id = "cs_test_" + secrets.token_hex(12)
                    return self._answer(200, {"id": session_id, "object": "checkout.session",
                                              "url": f"https://checkout.stripe.com/c/pay/{session_id}",
                                              "status": "open", "currency": "cny",
                                              "amount_total": _line_items_total(form)})
                if self.path.startswith("/v1/checkout/sessions/") and self.path.endswith("/expire"):
                    if fake.session_status != "open":
                        return self._answer(400, {"error": {"type": "invalid_request_error",
                                                            "message": "Only open sessions can be expired."}})
                    return self._answer(200, {"id": self.path.split("/")[4], "object": "checkout.session",
                                              "status": "expired"})
                if self.path.startswith("/v1/checkout/sessions/") and self.command == "GET":
                    return self._answer(200, {"id": self.path.split("/")[4], "object": "checkout.session",
                                              "status": fake.session_status})
                if self.path == "/v1/refunds" and self.command == "POST":
                    if fake.hold_refunds is not None:
                        fake.refund_entered.set()
                        fake.hold_refunds.wait(60)
                    key = self.headers.get("Idempotency-Key") or secrets.token_hex(8)
                    refund = fake.refunds_by_key.get(key)
                    if refund is None:
                        refund = fake.refunds_by_key[key] = {
                            "id": "re_" + secrets.token_hex(10), "object": "refund", "amount": int(form["amount"]),
                            "status": "succeeded", "payment_intent": form["payment_intent"],
                            "metadata": {k[len("metadata["):-1]: v for k, v in form.items() if k.startswith("metadata[")}}
                        fake.refunds.append(refund)
                    if fake.break_refunds == "drop":
                        self.close_connection = True
                        return None
                    if fake.break_refunds:
                        return self._answer(int(fake.break_refunds), {"error": {"type": "api_error",
                                                                                "message": "internal"}})
                    return self._answer(200, refund)
                if self.path.startswith("/v1/refunds?") and self.command == "GET":
                    query = dict(parse_qsl(urlsplit(self.path).query))
                    found = [r for r in fake.refunds if r["payment_intent"] == query.get("payment_intent")]
                    return self._answer(200, {"object": "list", "url": "/v1/refunds", "has_more": False,
                                              "data": found[::-1]})
                return self._answer(404, {"error": {"type": "invalid_request_error", "message": "unknown"}})

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def forget_idempotency_keys(self) -> None:
        """What Stripe does 24 hours after a request: a repeated key is a new request again."""
        self.refunds_by_key.clear()

    def calls(self, path: str) -> list[dict]:
        """Recorded requests to ``path`` (exact, or a prefix ending in '/')."""
        return [r for r in self.requests if r["path"] == path or (path.endswith("/") and r["path"].startswith(path))]
