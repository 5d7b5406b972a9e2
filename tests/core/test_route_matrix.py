"""Route × role matrix (issue #13): every registered route, called by anonymous and by each role,
against one small world. The table below is the access rule written down once, apart from the
decorators: a route missing from it fails the test, so a new endpoint cannot ship without someone
deciding who may call it.

For each (route, method) and caller:
- a caller outside the row is refused before anything happens: anonymous 401 (API) or a
  redirect to the sign-in page (pages); a signed-in role 403, or 404 where the resource is
  hidden from it;
- a caller inside the row is not refused for its role (any answer but 401/403, e.g. 200, 404
  for something outside its scope, 422 for the empty body the matrix sends);
- nobody ever gets a 500.

Cross-scope probes (cooperative A on B's things, a county reviewer on another county, a canteen
on another unit) follow the matrix.
"""
import re
import secrets

import pytest

from core.auth import issue_token
from core.extensions import db
from core.models import Role, User
from core.timeutil import shanghai_today
from tests.certification.factories import certified_product, member
from tests.shop.factories import paid_order
from tests.traceability.factories import batch, serials

PUBLIC, LOGIN = "public", "login"
#: Signed-in callers acting on their own things only (the buyer of an order): anyone else signed
#: in is refused by the service (403 or 404), which the world here always is.
OWN = "own"
CON, COOP, CR, PR, CB, FIN, OFF, ADM = (Role.CONSUMER, Role.COOPERATIVE, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER,
                                       Role.CANTEEN_BUYER, Role.FINANCE, Role.OFFICIAL, Role.ADMIN)
REPORTS = (OFF, ADM, CR, PR, FIN)
CANTEEN_PAGES = (CB, ADM, OFF, FIN)
CANTEEN_OVERVIEW = (OFF, ADM, FIN)
ACCOUNT_MANAGERS = (ADM, CR)
TARGET_SETTERS = (ADM, OFF)
MANAGERS = (COOP, ADM)
#: Settlement statements: finance, admin and officials read all; a cooperative its own (others: 404).
SETTLEMENT_READERS = (FIN, ADM, OFF, COOP)

#: (endpoint, method) → who may call it.
ACCESS = {
    # ---- pages: public
    ("core.home", "GET"): PUBLIC, ("core.login", "GET"): PUBLIC, ("core.login", "POST"): PUBLIC,
    ("core.logout", "POST"): PUBLIC, ("core.register", "GET"): PUBLIC, ("core.register", "POST"): PUBLIC,
    ("core.village_index", "GET"): PUBLIC, ("core.county_villages", "GET"): PUBLIC,
    ("core.cooperative_detail", "GET"): PUBLIC, ("operations.healthz", "GET"): PUBLIC,
    ("certification.catalogue", "GET"): PUBLIC, ("certification.catalogue_csv", "GET"): PUBLIC,
    ("certification.product_page", "GET"): PUBLIC, ("certification.product_image", "GET"): PUBLIC,
    ("search.search_page", "GET"): PUBLIC, ("shop.browse", "GET"): PUBLIC, ("shop.product_page", "GET"): PUBLIC,
    ("shop.cart", "GET"): PUBLIC, ("shop.cart_add", "POST"): PUBLIC, ("shop.cart_update", "POST"): PUBLIC,
    ("traceability.resolve_short", "GET"): PUBLIC, ("traceability.resolve_digital_link", "GET"): PUBLIC,
    ("traceability.gs1_resolver_description", "GET"): PUBLIC,
    ("traceability.report_fake", "GET"): PUBLIC, ("traceability.report_fake", "POST"): PUBLIC,
    ("core.forgot_password", "GET"): PUBLIC, ("core.forgot_password", "POST"): PUBLIC,
    ("core.reset_password", "GET"): PUBLIC, ("core.reset_password", "POST"): PUBLIC,
    # ---- pages: signed in
    ("accounts.my_account", "GET"): LOGIN, ("accounts.my_account", "POST"): LOGIN,
    ("accounts.sign_out_everywhere", "POST"): LOGIN,
    # everyone's own inbox: another user's notice is a 404 (tests/core/test_notifications.py)
    ("notifications.inbox", "GET"): LOGIN, ("notifications.mark_read", "POST"): LOGIN,
    ("notifications.mark_all_read", "POST"): LOGIN,
    ("certification.application_page", "GET"): LOGIN, ("certification.evidence_file", "GET"): LOGIN,
    ("shop.cart_import", "POST"): LOGIN, ("shop.checkout", "GET"): LOGIN, ("shop.checkout", "POST"): LOGIN,
    ("shop.my_orders", "GET"): LOGIN, ("shop.order_detail", "GET"): LOGIN, ("shop.order_document", "GET"): LOGIN,
    ("shop.cancel", "POST"): OWN, ("shop.confirm_receipt", "POST"): OWN, ("shop.reorder", "POST"): OWN,
    ("shop.record_inspection", "POST"): OWN, ("shop.inspection_photo", "GET"): LOGIN,
    ("shop.rate_cooperative", "POST"): OWN, ("shop.review_product", "POST"): OWN,
    ("shop.cooperative_ratings", "GET"): LOGIN,
    ("shop.sandbox_checkout", "GET"): LOGIN, ("shop.sandbox_checkout", "POST"): LOGIN,
    # ---- pages: by role
    ("accounts.account_index", "GET"): ACCOUNT_MANAGERS, ("accounts.account_detail", "GET"): ACCOUNT_MANAGERS,
    ("accounts.account_new", "GET"): ACCOUNT_MANAGERS, ("accounts.account_new", "POST"): ACCOUNT_MANAGERS,
    ("accounts.account_set_active", "POST"): ACCOUNT_MANAGERS,
    ("core.budget_unit_index", "GET"): (ADM,), ("core.budget_unit_new", "GET"): (ADM,),
    ("core.budget_unit_new", "POST"): (ADM,), ("core.budget_unit_edit", "GET"): (ADM,),
    ("core.budget_unit_edit", "POST"): (ADM,),
    ("core.cooperative_index", "GET"): (ADM, CR, PR), ("core.cooperative_new", "GET"): (ADM, CR),
    ("core.cooperative_new", "POST"): (ADM, CR),
    ("core.village_targets_import", "GET"): TARGET_SETTERS, ("core.village_targets_import", "POST"): TARGET_SETTERS,
    ("core.village_targets_csv", "GET"): TARGET_SETTERS, ("core.village_targets_page", "GET"): TARGET_SETTERS,
    ("core.village_targets_page", "POST"): TARGET_SETTERS, ("core.village_target_clear", "POST"): TARGET_SETTERS,
    ("certification.my_products", "GET"): (COOP,), ("certification.new_product", "GET"): (COOP,),
    ("certification.new_product", "POST"): (COOP,), ("certification.manage_product", "GET"): (COOP,),
    ("certification.edit_product", "GET"): (COOP,), ("certification.edit_product", "POST"): (COOP,),
    ("certification.apply", "GET"): (COOP,), ("certification.apply", "POST"): (COOP,),
    ("certification.upload_image", "POST"): (COOP,), ("certification.delete_image", "POST"): (COOP,),
    ("certification.queue", "GET"): (CR, PR, ADM), ("certification.certificates", "GET"): (CR, PR, ADM),
    ("certification.decide", "POST"): (CR, PR), ("certification.revoke", "POST"): (PR,),
    ("shop.approvals", "GET"): (CB,), ("shop.decide_approval", "POST"): (CB,),
    ("shop.order_book", "GET"): (COOP,), ("shop.ship", "POST"): (COOP, ADM),
    ("shop.finance_desk", "GET"): (FIN, ADM), ("shop.confirm_transfer", "POST"): (FIN,),
    ("shop.refund", "POST"): (FIN, ADM), ("shop.decide_refund_request", "POST"): (FIN, ADM),
    ("shop.retry_refund", "POST"): (FIN, ADM),
    ("reports.dashboard", "GET"): REPORTS, ("reports.villages", "GET"): REPORTS, ("reports.download", "GET"): REPORTS,
    ("reports.my_canteen", "GET"): (CB,), ("reports.canteen", "GET"): CANTEEN_PAGES,
    ("reports.canteen_orders", "GET"): CANTEEN_PAGES, ("reports.canteen_filing", "GET"): CANTEEN_PAGES,
    ("reports.reserved_shares_filing", "GET"): CANTEEN_OVERVIEW,
    ("shop.settlement_index", "GET"): SETTLEMENT_READERS, ("shop.settlement_detail", "GET"): SETTLEMENT_READERS,
    ("shop.settlement_download", "GET"): SETTLEMENT_READERS, ("shop.settlement_issue", "POST"): (FIN, ADM),
    ("shop.settlement_pay", "POST"): (FIN, ADM),
    ("traceability.batch_index", "GET"): MANAGERS, ("traceability.batch_new", "GET"): MANAGERS,
    ("traceability.batch_new", "POST"): MANAGERS, ("traceability.batch_detail", "GET"): MANAGERS,
    ("traceability.batch_event_new", "POST"): MANAGERS, ("traceability.batch_serials_new", "POST"): MANAGERS,
    ("traceability.batch_serials_csv", "GET"): MANAGERS, ("traceability.labels", "GET"): MANAGERS,
    ("traceability.fake_reports", "GET"): (PR, ADM),
    # ---- API: public
    ("core_api.register", "POST"): PUBLIC, ("core_api.create_token", "POST"): PUBLIC,
    ("core_api.request_password_reset", "POST"): PUBLIC, ("core_api.confirm_password_reset", "POST"): PUBLIC,
    ("core_api.list_villages", "GET"): PUBLIC, ("core_api.get_village", "GET"): PUBLIC,
    ("core_api.list_village_targets", "GET"): PUBLIC, ("core_api.get_cooperative", "GET"): PUBLIC,
    ("certification_api.list_products", "GET"): PUBLIC, ("certification_api.get_product", "GET"): PUBLIC,
    ("certification_api.cooperative_products", "GET"): PUBLIC, ("search_api.search", "GET"): PUBLIC,
    ("shop_api.product_reviews", "GET"): PUBLIC, ("shop_api.stripe_webhook", "POST"): PUBLIC,
    ("openapi.openapi_json", "GET"): PUBLIC, ("openapi.docs_page", "GET"): PUBLIC,
    # ---- API: signed in
    ("core_api.me", "GET"): LOGIN, ("core_api.logout", "POST"): LOGIN, ("core_api.logout_everywhere", "POST"): LOGIN,
    ("core_api.change_password", "POST"): LOGIN,
    ("notifications_api.list_notifications", "GET"): LOGIN, ("notifications_api.read_notification", "POST"): LOGIN,
    ("notifications_api.read_all_notifications", "POST"): LOGIN, ("core_api.get_budget_unit", "GET"): CANTEEN_PAGES,
    ("certification_api.get_certification", "GET"): LOGIN,
    ("shop_api.create_order", "POST"): LOGIN, ("shop_api.list_orders", "GET"): LOGIN,
    ("shop_api.get_order", "GET"): LOGIN, ("shop_api.cancel_order", "POST"): OWN,
    ("shop_api.confirm_receipt", "POST"): OWN, ("shop_api.record_inspection", "POST"): OWN,
    ("shop_api.rate_cooperative", "POST"): OWN, ("shop_api.review_product", "POST"): OWN,
    ("shop_api.cooperative_ratings", "GET"): LOGIN, ("shop_api.list_documents", "GET"): LOGIN,
    ("shop_api.get_document", "GET"): LOGIN, ("reports_api.reserved_share", "GET"): CANTEEN_PAGES,
    # ---- API: by role
    ("core_api.list_users", "GET"): ACCOUNT_MANAGERS, ("core_api.create_user", "POST"): ACCOUNT_MANAGERS,
    ("core_api.get_user", "GET"): ACCOUNT_MANAGERS, ("core_api.update_user", "PATCH"): ACCOUNT_MANAGERS,
    ("core_api.set_village_target", "PUT"): TARGET_SETTERS, ("core_api.clear_village_target", "DELETE"): TARGET_SETTERS,
    ("core_api.create_cooperative", "POST"): (ADM, CR), ("core_api.create_budget_unit", "POST"): (ADM,),
    ("core_api.update_budget_unit", "PATCH"): (ADM,),
    ("certification_api.create_product", "POST"): (COOP, ADM), ("certification_api.update_product", "PATCH"): (COOP, ADM),
    ("certification_api.add_product_image", "POST"): (COOP, ADM),
    ("certification_api.delete_product_image", "DELETE"): (COOP, ADM),
    ("certification_api.submit_application", "POST"): (COOP, ADM),
    ("certification_api.attach_evidence_file", "POST"): (COOP, ADM),
    ("certification_api.list_certifications", "GET"): (CR, PR, ADM, COOP),
    ("certification_api.decide", "POST"): (CR, PR), ("certification_api.revoke", "POST"): (PR,),
    ("shop_api.confirm_transfer", "POST"): (FIN,), ("shop_api.refund_order", "POST"): (FIN, ADM),
    ("shop_api.ship_order", "POST"): (COOP, ADM), ("shop_api.decide_approval", "POST"): (CB,),
    ("shop_api.list_refund_requests", "GET"): (FIN, ADM), ("shop_api.decide_refund_request", "POST"): (FIN, ADM),
    ("reports_api.village_sales", "GET"): REPORTS, ("reports_api.county_sales", "GET"): REPORTS,
    ("reports_api.monthly_sales", "GET"): REPORTS, ("reports_api.reserved_shares", "GET"): CANTEEN_OVERVIEW,
    ("traceability_api.list_batches", "GET"): MANAGERS, ("traceability_api.get_batch", "GET"): MANAGERS,
    ("traceability_api.batch_qr", "GET"): MANAGERS, ("traceability_api.list_events", "GET"): MANAGERS,
    ("traceability_api.create_event", "POST"): MANAGERS, ("traceability_api.list_serials", "GET"): MANAGERS,
    ("traceability_api.issue_serials", "POST"): MANAGERS, ("traceability_api.list_scans", "GET"): MANAGERS,
    ("traceability_api.list_product_batches", "GET"): MANAGERS,
    ("traceability_api.create_batch", "POST"): MANAGERS,
    ("traceability_api.fake_reports", "GET"): (PR, ADM),
    ("shop_api.list_settlements", "GET"): SETTLEMENT_READERS, ("shop_api.get_settlement", "GET"): SETTLEMENT_READERS,
    ("shop_api.download_settlement", "GET"): SETTLEMENT_READERS, ("shop_api.issue_settlements", "POST"): (FIN, ADM),
    ("shop_api.pay_settlement", "POST"): (FIN, ADM),
}

#: Routes the matrix does not call: static files.
SKIPPED = {"static"}
#: Public routes that check credentials: the matrix's empty ones are rightly refused (401).
CREDENTIAL_CHECKS = {("core.login", "POST"), ("core_api.create_token", "POST")}


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_every_route_has_a_row(app):
    missing = sorted({f"{method} {rule.rule} ({rule.endpoint})" for rule, method in _routes(app)
                      if (rule.endpoint, method) not in ACCESS})
    assert not missing, "routes without a row in ACCESS (decide who may call them):\n" + "\n".join(missing)
    stale = sorted(set(ACCESS) - {(rule.endpoint, method) for rule, method in _routes(app)})
    assert not stale, f"rows for routes that no longer exist: {stale}"


@pytest.fixture
def world(make):
    """One of everything, owned by people who are not the callers, so no call changes a caller."""
    product = certified_product(make)
    item = batch(product, quantity=50)
    serial = serials(item, 1)[0]
    owner = make.user(Role.CONSUMER)
    order = paid_order(owner, [(item, 2)], paid_at=None, status="pending_payment")
    victim = make.user(Role.CONSUMER)
    unit = make.budget_unit()
    callers = {role: make.user(role) for role in Role}
    callers[Role.COOPERATIVE] = member(make, product.cooperative)
    callers[Role.COUNTY_REVIEWER] = make.user(Role.COUNTY_REVIEWER, county=product.cooperative.village.county)
    return {"product": product, "batch": item, "serial": serial, "order": order, "victim": victim, "unit": unit,
            "callers": callers}


def _values(world) -> dict:
    product, item = world["product"], world["batch"]
    return {"product_id": product.id, "batch_id": item.id, "order_id": world["order"].id,
            "user_id": world["victim"].id, "cooperative_id": product.cooperative_id, "unit_id": world["unit"].id,
            "village_id": product.cooperative.village_id, "certification_id": product.certificate_id or 1,
            "evidence_id": 1, "image_id": 1, "request_id": 1, "intent_id": 1, "statement_id": 1, "year": shanghai_today().year,
            "county": "古丈县", "kind": "purchase_order", "extension": "csv", "session_id": "cs_missing",
            "name": "missing.jpg", "notification_id": 1, "token": "not-a-reset-token", "rest": "06901234567892/10/LOT1", "serial": world["serial"].serial}


def _path(rule, values) -> str:
    """The rule with each ``<converter(args):name>`` replaced by the world's value for ``name``."""
    return re.sub(r"<([^<>]+)>", lambda match: str(values[match.group(1).rsplit(":", 1)[-1]]), rule.rule)


def _call(app, method, path, user: User | None):
    client = app.test_client()
    headers = {}
    if user is not None:
        db.session.refresh(user)  # a logout-all bumps the generation: always the caller's current one
        if path.startswith("/api/"):
            headers["Authorization"] = f"Bearer {issue_token(user)}"
        else:
            with client.session_transaction() as session:
                session.update(user_id=user.id, gen=user.token_generation, sid=secrets.token_urlsafe(16))
    kwargs = {"json": {}} if path.startswith("/api/") and method != "GET" else {}
    return client.open(path, method=method, headers=headers, **kwargs)


def test_every_route_refuses_the_roles_outside_its_row_and_never_fails(app, world):
    values = _values(world)
    problems = []
    for rule, method in sorted(_routes(app), key=lambda pair: (pair[0].rule, pair[1])):
        allowed = ACCESS[(rule.endpoint, method)]
        path = _path(rule, values)
        api = path.startswith("/api/")
        for role in (None, *Role):
            user = world["callers"][role] if role else None
            status = _call(app, method, path, user).status_code
            inside = allowed == PUBLIC or (allowed == LOGIN and role is not None) or \
                (role is not None and role in (allowed if isinstance(allowed, tuple) else ()))
            who = role.value if role else "anonymous"
            if status >= 500:
                problems.append(f"{method} {path} as {who}: {status}")
            elif allowed == OWN and role is not None:
                # 422: the empty body is refused before the order is even looked up (nothing leaks).
                if status not in (403, 404, 422):
                    problems.append(f"{method} {path} as {who}: {status} on someone else's order, "
                                    "expected 403, 404 or 422")
            elif inside and status in (401, 403) and (rule.endpoint, method) not in CREDENTIAL_CHECKS:
                problems.append(f"{method} {path} as {who}: refused ({status}) but the row allows it")
            elif not inside and role is None and status != (401 if api else 302):
                problems.append(f"{method} {path} as anonymous: {status}, expected {401 if api else 302}")
            elif not inside and role is not None and status not in (403, 404):
                problems.append(f"{method} {path} as {who}: {status}, expected 403 or 404")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- cross-scope probes

def test_a_cooperative_cannot_touch_another_cooperatives_products_batches_or_orders(client, make, world):
    other = member(make)  # a member of another cooperative
    headers = make.headers(other)
    product, item, order = world["product"], world["batch"], world["order"]
    for method, path, body in (
            ("PATCH", f"/api/v1/products/{product.id}", {"description": "改掉"}),
            ("POST", f"/api/v1/products/{product.id}/batches", {}),
            ("GET", f"/api/v1/batches/{item.id}", None), ("GET", f"/api/v1/batches/{item.id}/qr.png", None),
            ("GET", f"/api/v1/batches/{item.id}/serials", None), ("POST", f"/api/v1/batches/{item.id}/serials", {"count": 1}),
            ("GET", f"/api/v1/batches/{item.id}/scans", None), ("GET", f"/api/v1/orders/{order.id}", None),
            ("POST", f"/api/v1/orders/{order.id}/ship", {"carrier": "顺丰", "tracking_number": "SF12345678"})):
        status = client.open(path, method=method, headers=headers, json=body).status_code
        assert status in (403, 404), (method, path, status)
    db.session.refresh(product)
    assert product.description != "改掉"


def test_a_county_reviewer_cannot_act_in_another_county(client, make, world):
    product = world["product"]
    county = product.cooperative.village.county
    outsider = make.user(Role.COUNTY_REVIEWER, county="凤凰县" if county != "凤凰县" else "古丈县")
    headers = make.headers(outsider)
    certification_id = product.certificate_id
    assert client.get(f"/api/v1/certifications/{certification_id}", headers=headers).status_code in (403, 404)
    decision = client.post(f"/api/v1/certifications/{certification_id}/decision", headers=headers,
                           json={"decision": "reject", "comment": "越权"})
    assert decision.status_code in (403, 404, 409)
    ids = [row["village_id"] for row in client.get("/api/v1/reports/village-sales?per_page=2000",
                                                    headers=headers).get_json()["items"]]
    assert product.cooperative.village_id not in ids


def test_a_canteen_buyer_cannot_see_another_units_share_or_orders(client, make, world):
    mine, theirs = make.budget_unit(), world["unit"]
    buyer = make.user(Role.CANTEEN_BUYER, budget_unit=mine)
    headers = make.headers(buyer)
    assert client.get(f"/api/v1/budget-units/{mine.id}/reserved-share", headers=headers).status_code == 200
    assert client.get(f"/api/v1/budget-units/{theirs.id}/reserved-share", headers=headers).status_code in (403, 404)
    assert client.get(f"/api/v1/budget-units/{theirs.id}", headers=headers).status_code in (403, 404)
    assert client.get(f"/api/v1/orders/{world['order'].id}", headers=headers).status_code == 404
