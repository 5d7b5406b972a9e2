"""Property tests of the whole /api/v1 against its own OpenAPI document (schemathesis, issue #13).

Every operation of ``/api/v1/openapi.json`` gets a handful of generated requests (valid and
invalid: schemathesis' positive and negative modes); each is sent as anonymous and as every role,
once with the generated path ids and once with the ids of a small world (so the calls reach real
products, batches, orders and certificates, not only 404s). Each answer must not be a 5xx, must
have a status code the document lists for the operation, and must match the documented media
type and body schema. Bounded and reproducible: few examples, ``derandomize``, no example database.
"""
import io
import json
import os
from datetime import datetime, timedelta

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from core.auth import issue_token
from core.extensions import db
from core.models import Role
from core.timeutil import SHANGHAI, shanghai_today
from tests.certification.factories import certified_product, member
from tests.shop.factories import paid_order
from tests.traceability.factories import batch, serials

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CALLERS = (None, *Role)
#: Examples per operation; each one is sent by all nine callers, twice (generated ids, world ids).
#: ``OPENAPI_FUZZ_EXAMPLES=50`` digs deeper locally; CI keeps the bounded default.
EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES") or 5)

CONFIG = SchemathesisConfig.from_dict({
    # Only the bounded fuzzing phase: the coverage phase adds dozens of fixed cases per operation.
    "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}, "stateful": {"enabled": False}},
    # Callers bring their own (real) tokens; the document's bearer scheme is not filled with noise.
    "generation": {"with-security-parameters": False, "deterministic": True},
})


def _document() -> dict:
    """The document as the app serves it, built at collection time from an app of its own (the
    session ``app`` fixture does not exist yet, and schemathesis needs the operations to
    parametrize); the calls then go to the session app in-process (``app=`` below)."""
    from core.app import create_app
    from core.openapi import build_document

    return build_document(create_app({"TESTING": True, "SECRET_KEY": "openapi", "STRIPE_WEBHOOK_SECRET": "whsec_x",
                                      "SQLALCHEMY_DATABASE_URI": "sqlite://", "STRIPE_SECRET_KEY": ""}))


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
schema.validate()  # an invalid document stops the module here (tests/core/test_openapi.py says more)


@pytest.fixture
def world(make):
    """A certified product with a batch and a serial, a pending order, and one caller per role."""
    product = certified_product(make)
    item = batch(product, quantity=50)
    serials(item, 1)
    buyer = make.user(Role.CONSUMER)
    order = paid_order(buyer, [(item, 2)], paid_at=None, status="pending_payment")
    unit = make.budget_unit()
    callers = {role: make.user(role) for role in Role}
    callers[Role.CONSUMER] = buyer  # the buyer acts on its own order
    callers[Role.COOPERATIVE] = member(make, product.cooperative)
    callers[Role.COUNTY_REVIEWER] = make.user(Role.COUNTY_REVIEWER, county=product.cooperative.village.county)
    callers[Role.CANTEEN_BUYER] = make.user(Role.CANTEEN_BUYER, budget_unit=unit)
    ids = {"product_id": product.id, "batch_id": item.id, "order_id": order.id, "user_id": buyer.id,
           "cooperative_id": product.cooperative_id, "unit_id": unit.id,
           "village_id": product.cooperative.village_id, "certification_id": product.certificate_id,
           "year": shanghai_today().year, "evidence_id": 1, "image_id": 1, "request_id": 1}
    return {"callers": callers, "ids": ids}


def _headers(world, role) -> dict:
    """A fresh token for the caller (an earlier call may have signed it out everywhere)."""
    if role is None:
        return {}
    user = world["callers"][role]
    db.session.refresh(user)
    return {"Authorization": f"Bearer {issue_token(user)}"}


def _with_world_ids(case, world):
    """The same request aimed at the world's objects (path ids it knows replaced)."""
    known = {name: world["ids"].get(name, value) for name, value in (case.path_parameters or {}).items()}
    return case.operation.Case(path_parameters=known, headers=dict(case.headers or {}), query=case.query,
                               body=case.body, media_type=case.media_type)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented_for_every_caller(app, case, world):
    cases = [case]
    if case.path_parameters:
        cases.append(_with_world_ids(case, world))
    for role in CALLERS:
        for variant in cases:
            variant.call_and_validate(app=app, headers=_headers(world, role), checks=CHECKS)


# ---------------------------------------------------------------- valid requests, end to end

def _documented_fields(method: str, path: str, status: int) -> set[str] | None:
    """The top-level fields the document gives a JSON answer (None where it does not list them).

    The conformance check validates the fields an answer has, not that it has no others: this
    catches a field renamed or added in code but not in the document."""
    answer = DOCUMENT["paths"][path][method.lower()]["responses"].get(str(status), {})
    body = answer.get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in body:
        body = DOCUMENT["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    return set(body["properties"]) if body.get("type") == "object" and "properties" in body else None


class Story:
    """Valid requests through the API, each answer checked against the document like the fuzz's.

    Random bodies rarely get past validation, so the success answers of write operations are
    proven here: every step must succeed (2xx) and conform.
    """

    def __init__(self, app):
        self.app = app
        self.seen: set[str] = set()

    def __call__(self, user, method: str, path: str, *, status: int = 200, body=None, query=None, headers=None,
                 **path_parameters):
        operation = schema[path][method]
        self.seen.add(f"{method} {path}")
        payload = {} if body is None else {"body": body, "media_type": "application/json"}
        case = operation.Case(path_parameters=path_parameters or None, query=query, **payload)
        sent = dict(headers or {})
        if user is not None:
            db.session.refresh(user)  # its token generation, after a sign-out everywhere
            sent["Authorization"] = f"Bearer {issue_token(user)}"
        response = case.call_and_validate(app=self.app, headers=sent, checks=CHECKS)
        assert response.status_code == status, (method, path, response.status_code, response.text[:300])
        json_answer = response.headers.get("content-type", [""])[0].startswith("application/json")
        if not json_answer:
            return response
        answer = response.json()
        documented = _documented_fields(method, path, status)
        if isinstance(answer, dict) and documented is not None:
            assert set(answer) <= documented, (method, path, "undocumented fields", set(answer) - documented)
        return answer

    def check(self, method: str, path: str, response, status: int, **path_parameters):
        """Validate an answer obtained with the test client (multipart uploads, a signed webhook)."""
        self.seen.add(f"{method} {path}")
        schema[path][method].Case(path_parameters=path_parameters or None).validate_response(response, checks=CHECKS)
        assert response.status_code == status, (method, path, response.status_code, response.get_data()[:300])
        return response.get_json()


def test_valid_requests_through_the_whole_api_answer_as_documented(app, make):
    from core.demo import demo_credit_code
    from shop.payments import sign_payload
    from tests.certification.factories import EVIDENCE, image_bytes, prefecture
    from tests.shop.helpers import SHIPPING, completed_event

    story = Story(app)
    admin, official, finance = make.user(Role.ADMIN), make.user(Role.OFFICIAL), make.user(Role.FINANCE)
    village = make.village("古丈县")
    today = shanghai_today()

    # ---- accounts
    story(None, "POST", "/api/v1/auth/register", status=201,
          body={"email": "new@test.cn", "password": "Xiangxi-2026-long", "display_name": "新用户"})
    consumer = make.user(Role.CONSUMER)
    story(None, "POST", "/api/v1/auth/token", body={"email": consumer.email, "password": "password123"})
    story(consumer, "GET", "/api/v1/me")
    cooperative = story(admin, "POST", "/api/v1/cooperatives", status=201, body={
        "name": "测试茶叶专业合作社", "credit_code": demo_credit_code(424242), "village_id": village.id,
        "contact_name": "李四", "contact_phone": "0743-1234567"})
    story(None, "GET", "/api/v1/cooperatives/{cooperative_id}", cooperative_id=cooperative["id"])
    account = story(admin, "POST", "/api/v1/users", status=201, body={
        "email": "coop@test.cn", "password": "Xiangxi-2026-long", "display_name": "社员", "role": "cooperative",
        "cooperative_id": cooperative["id"]})
    story(admin, "PATCH", "/api/v1/users/{user_id}", body={"display_name": "社员甲"}, user_id=account["id"])
    story(admin, "GET", "/api/v1/users/{user_id}", user_id=account["id"])
    story(admin, "GET", "/api/v1/users", query={"role": "cooperative", "is_active": "true"})
    coop = db.session.get(type(admin), account["id"])

    # ---- budget unit and canteen buyer
    unit = story(admin, "POST", "/api/v1/budget-units", status=201,
                 body={"name": "测试机关食堂", "annual_canteen_budget_fen": 100_000_000, "reserved_share": "0.10"})
    story(admin, "PATCH", "/api/v1/budget-units/{unit_id}", body={"reserved_share": "0.12"}, unit_id=unit["id"])
    canteen = make.user(Role.CANTEEN_BUYER, budget_unit_id=unit["id"])
    story(canteen, "GET", "/api/v1/budget-units/{unit_id}", unit_id=unit["id"])

    # ---- a product through certification
    product = story(coop, "POST", "/api/v1/products", status=201, body={
        "name": "古丈毛尖", "category": "茶叶", "description": "明前茶", "unit": "盒", "price_fen": 12_800,
        "village_ids": [village.id], "bulk": {"moq": 2, "tiers": [{"min_qty": 5, "price_fen": 12_000}]}})
    assert product["category"] == "tea"
    story(coop, "PATCH", "/api/v1/products/{product_id}", body={"description": "明前一芽一叶"},
          product_id=product["id"])
    client = app.test_client()
    image = story.check("POST", "/api/v1/products/{product_id}/images", client.post(
        f"/api/v1/products/{product['id']}/images", data={"file": (io.BytesIO(image_bytes()), "a.png")},
        headers={"Authorization": f"Bearer {issue_token(coop)}"}), 201, product_id=product["id"])
    application = story(coop, "POST", "/api/v1/products/{product_id}/certification", status=201,
                        body={"evidence": [EVIDENCE]}, product_id=product["id"])
    county = make.user(Role.COUNTY_REVIEWER, county="古丈县")
    story(county, "GET", "/api/v1/certifications", query={"status": "submitted"})
    story(county, "POST", "/api/v1/certifications/{certification_id}/decision",
          body={"decision": "approve", "comment": "材料齐全"}, certification_id=application["id"])
    story(prefecture(make), "POST", "/api/v1/certifications/{certification_id}/decision",
          body={"decision": "approve", "comment": "同意认定"}, certification_id=application["id"])
    story(coop, "GET", "/api/v1/certifications/{certification_id}", certification_id=application["id"])
    second = story(coop, "POST", "/api/v1/products", status=201, body={
        "name": "保靖黄金茶", "category": "tea", "unit": "罐", "price_fen": 9_900, "village_ids": [village.id]})
    pending_application = story(coop, "POST", "/api/v1/products/{product_id}/certification", status=201,
                                body={"evidence": [EVIDENCE]}, product_id=second["id"])
    evidence_id = pending_application["evidence"][0]["id"]
    story.check("POST", "/api/v1/certifications/{certification_id}/evidence/{evidence_id}/file", client.post(
        f"/api/v1/certifications/{pending_application['id']}/evidence/{evidence_id}/file",
        data={"file": (io.BytesIO(image_bytes("JPEG")), "scan.jpg")},
        headers={"Authorization": f"Bearer {issue_token(coop)}"}),
        200, certification_id=pending_application["id"], evidence_id=evidence_id)
    story(coop, "DELETE", "/api/v1/products/{product_id}/images/{image_id}", product_id=product["id"],
          image_id=image["id"])
    story(None, "GET", "/api/v1/products", query={"category": "tea"})
    story(None, "GET", "/api/v1/products/{product_id}", product_id=product["id"])
    story(None, "GET", "/api/v1/cooperatives/{cooperative_id}/products", cooperative_id=cooperative["id"])

    # ---- a batch with serials and an event
    batch_ = story(coop, "POST", "/api/v1/products/{product_id}/batches", status=201, product_id=product["id"],
                   body={"lot": "L2026-1", "village_id": village.id, "produced_on": today.isoformat(), "quantity": 50})
    story(coop, "POST", "/api/v1/batches/{batch_id}/serials", status=201, body={"count": 2}, batch_id=batch_["id"])
    story(coop, "POST", "/api/v1/batches/{batch_id}/events", status=201, batch_id=batch_["id"],
          body={"type": "shipping", "location": "吉首", "partner": "超市", "quantity": 5})
    for path in ("/api/v1/batches/{batch_id}", "/api/v1/batches/{batch_id}/serials",
                 "/api/v1/batches/{batch_id}/events", "/api/v1/batches/{batch_id}/scans",
                 "/api/v1/batches/{batch_id}/qr.png"):
        story(coop, "GET", path, batch_id=batch_["id"])
    story(coop, "GET", "/api/v1/batches")
    story(coop, "GET", "/api/v1/products/{product_id}/batches", product_id=product["id"])
    story(None, "GET", "/api/v1/search", query={"q": "maojian"})

    # ---- an online order paid through the webhook, shipped, received, rated and reviewed
    order = story(consumer, "POST", "/api/v1/orders", status=201, headers={"Idempotency-Key": "story-1"}, body={
        "lines": [{"product_id": product["id"], "quantity": 2}], "payment_method": "stripe", "shipping": SHIPPING})
    payload = json.dumps(completed_event(order), separators=(",", ":"))
    paid = story.check("POST", "/api/v1/payments/stripe/webhook", client.post(
        "/api/v1/payments/stripe/webhook", data=payload, content_type="application/json",
        headers={"Stripe-Signature": sign_payload(payload, "whsec_test_secret")}), 200)
    assert paid["outcome"] == "paid", paid
    story(coop, "POST", "/api/v1/orders/{order_id}/ship", order_id=order["id"],
          body={"carrier": "顺丰", "tracking_number": "SF1234567890"})
    story(consumer, "POST", "/api/v1/orders/{order_id}/confirm-receipt", order_id=order["id"])
    story(consumer, "POST", "/api/v1/orders/{order_id}/ratings", status=201, order_id=order["id"],
          body={"cooperative_id": cooperative["id"], "quality": 5, "delivery": 4, "service": 5})
    story(consumer, "POST", "/api/v1/orders/{order_id}/reviews", status=201, order_id=order["id"],
          body={"product_id": product["id"], "rating": 5, "comment": "好茶"})
    story(admin, "GET", "/api/v1/cooperatives/{cooperative_id}/ratings", cooperative_id=cooperative["id"])
    story(None, "GET", "/api/v1/products/{product_id}/reviews", product_id=product["id"])
    story(consumer, "GET", "/api/v1/orders", query={"status": "completed"})
    story(coop, "GET", "/api/v1/orders/{order_id}", order_id=order["id"])
    story(consumer, "GET", "/api/v1/orders/{order_id}/documents", order_id=order["id"])
    story(consumer, "GET", "/api/v1/orders/{order_id}/documents/{kind}.pdf", order_id=order["id"],
          kind="payment_receipt")

    # ---- a canteen order paid by transfer, then partly refunded; another one cancelled
    canteen_order = story(canteen, "POST", "/api/v1/orders", status=201, body={
        "lines": [{"product_id": product["id"], "quantity": 5}], "payment_method": "bank_transfer",
        "shipping": SHIPPING, "purchase_order_no": "CG-2026-001"})
    assert canteen_order["lines"][0]["unit_price_fen"] == 12_000  # the tier price
    story(finance, "POST", "/api/v1/orders/{order_id}/confirm-transfer", order_id=canteen_order["id"],
          body={"amount_fen": canteen_order["total_fen"], "reference": "BANK-001"})
    story(coop, "POST", "/api/v1/orders/{order_id}/ship", order_id=canteen_order["id"],
          body={"carrier": "邮政", "tracking_number": "EMS12345678"})
    inspected = story(canteen, "POST", "/api/v1/orders/{order_id}/inspection", status=201, order_id=canteen_order["id"],
                      body={"lines": [{"product_id": product["id"], "received_quantity": 4, "rejected_quantity": 1,
                                       "note": "一盒破损"}], "note": "少一盒"})
    claim = story(finance, "GET", "/api/v1/refund-requests", query={"status": "open"})["items"]
    assert [item["order_id"] for item in claim] == [inspected["id"]]
    story(finance, "POST", "/api/v1/refund-requests/{request_id}/decision", request_id=claim[0]["id"],
          body={"decision": "refund", "comment": "核实破损"})
    story(finance, "POST", "/api/v1/orders/{order_id}/refund", order_id=order["id"],
          body={"amount_fen": 100, "reason": "差价"})
    # an order above the unit's approval threshold waits for the unit's approver
    story(admin, "PATCH", "/api/v1/budget-units/{unit_id}", body={"approval_threshold_fen": 1000}, unit_id=unit["id"])
    waiting = story(canteen, "POST", "/api/v1/orders", status=201, body={
        "lines": [{"product_id": product["id"], "quantity": 2}], "payment_method": "bank_transfer",
        "shipping": SHIPPING})
    approver = make.user(Role.CANTEEN_BUYER, budget_unit_id=unit["id"], is_approver=True)
    story(approver, "POST", "/api/v1/orders/{order_id}/approval", order_id=waiting["id"],
          body={"decision": "approve", "comment": "同意采购"})
    pending = story(consumer, "POST", "/api/v1/orders", status=201, body={
        "lines": [{"product_id": product["id"], "quantity": 1}], "payment_method": "stripe", "shipping": SHIPPING})
    story(consumer, "POST", "/api/v1/orders/{order_id}/cancel", order_id=pending["id"])

    # ---- targets, reports, revocation, sign-out
    story(official, "PUT", "/api/v1/villages/{village_id}/sales-targets/{year}", village_id=village.id,
          year=today.year, body={"target_fen": 20_000_000, "reason": "示范村"})
    story(None, "GET", "/api/v1/villages/{village_id}/sales-targets", village_id=village.id)
    story(official, "DELETE", "/api/v1/villages/{village_id}/sales-targets/{year}", village_id=village.id,
          year=today.year, query={"reason": "恢复默认"})
    story(None, "GET", "/api/v1/villages", query={"county": "古丈县", "zone": "demonstration"})
    story(None, "GET", "/api/v1/villages/{village_id}", village_id=village.id)
    for query in ({"channel": "canteen"}, {"format": "csv"}, {"format": "xlsx", "zone": "巩固拓展区Ⅰ型"}):
        story(official, "GET", "/api/v1/reports/village-sales", query=query)
    story(official, "GET", "/api/v1/reports/county-sales")
    story(official, "GET", "/api/v1/reports/monthly-sales", query={"category": "tea"})
    story(canteen, "GET", "/api/v1/budget-units/{unit_id}/reserved-share", unit_id=unit["id"])
    story(official, "GET", "/api/v1/reports/reserved-shares", query={"format": "csv"})
    story(make.user(Role.PREFECTURE_REVIEWER), "GET", "/api/v1/fake-reports")
    story(prefecture(make), "POST", "/api/v1/certifications/{certification_id}/revoke",
          body={"reason": "抽检不合格"}, certification_id=application["id"])
    # ---- settlement of last month (a sale paid then), the cooperative's inbox
    from traceability.models import Batch

    last_month = (today.replace(day=1) - timedelta(days=1))
    paid_order(consumer, [(db.session.get(Batch, batch_["id"]), 1)],
               paid_at=datetime(last_month.year, last_month.month, 15, 12, tzinfo=SHANGHAI))
    statement = story(finance, "POST", "/api/v1/settlements", status=201,
                      body={"period": f"{last_month:%Y-%m}"})["items"][0]
    story(finance, "GET", "/api/v1/settlements", query={"period": f"{last_month:%Y-%m}", "status": "issued"})
    story(coop, "GET", "/api/v1/settlements/{statement_id}", statement_id=statement["id"])
    story(coop, "GET", "/api/v1/settlements/{statement_id}/statement.{extension}", statement_id=statement["id"],
          extension="xlsx")
    story(finance, "POST", "/api/v1/settlements/{statement_id}/pay", statement_id=statement["id"],
          body={"bank_reference": "HX20261207-0001"})
    notices = story(coop, "GET", "/api/v1/notifications", query={"unread": "1"})["items"]
    story(coop, "POST", "/api/v1/notifications/{notification_id}/read", notification_id=notices[0]["id"])
    story(coop, "POST", "/api/v1/notifications/read-all")

    story(consumer, "POST", "/api/v1/auth/password",
          body={"current_password": "password123", "new_password": "Xiangxi-2026-new"})
    story(consumer, "POST", "/api/v1/auth/logout")
    story(consumer, "POST", "/api/v1/auth/logout-all")
    # ---- a forgotten password: the link goes out by e-mail (read here from the outbox)
    from core.notifications import Notification

    story(None, "POST", "/api/v1/auth/password-reset", status=202, body={"email": consumer.email})
    link = db.session.scalar(sa.select(Notification.link).where(Notification.kind == "password_reset"))
    story(None, "POST", "/api/v1/auth/password-reset/confirm",
          body={"token": link.rsplit("/", 1)[1], "new_password": "Xiangxi-2026-reset"})
    story(None, "GET", "/api/v1/openapi.json")
    every = {f"{result.ok().method.upper()} {result.ok().path}" for result in schema.get_all_operations()}
    assert not every - story.seen, ("operations without a valid request in this story (add a step such as "
                                    "story(user, \"POST\", \"/api/v1/things/{thing_id}/notes\", status=201, "
                                    "body={...}, thing_id=...)): " + ", ".join(sorted(every - story.seen)))
