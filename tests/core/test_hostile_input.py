"""Hostile input never makes a 500 (issue #14 item 1): each reported example, then a fuzz pass over
every route of the app with the same payload classes.

Runs on SQLite and PostgreSQL alike: the id bounds matter most on PostgreSQL (``integer`` columns
refuse 2^31), lone surrogates and NUL on both.
"""
import json
import secrets
import time

import pytest
from marshmallow import Schema

from core.extensions import db
from core.identifiers import ID_MAX
from core.models import Role
from tests.certification.factories import certified_product, member
from tests.shop.helpers import completed_event, deliver, place
from tests.traceability.factories import batch, serials

HUGE_IDS = (ID_MAX + 1, 2**63, 2**64)
DEEP_ARRAY = '{"a":' + "[" * 5000 + "]" * 5000 + "}"
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000


def _assert_error_shape(response, *statuses):
    assert response.status_code in statuses, (response.status_code, response.get_data(as_text=True)[:300])
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    return body["error"]


@pytest.fixture
def world(make):
    """A certified product with a batch and serials, its cooperative's member, an admin and an order."""
    product = certified_product(make)
    item = batch(product, quantity=50)
    serial = serials(item, 1)[0]
    admin = make.user(Role.ADMIN)
    coop_member = member(make, product.cooperative)
    buyer = make.user(Role.CONSUMER)
    return {"product": product, "batch": item, "serial": serial, "admin": admin, "member": coop_member,
            "buyer": buyer}


# ---------------------------------------------------------------- the reported examples

@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT])
def test_json_nested_thousands_deep_is_400(client, body):
    response = client.post("/api/v1/auth/register", data=body, content_type="application/json")
    assert _assert_error_shape(response, 400)["code"] == "malformed_json"


def test_json_nested_past_the_limit_but_parseable_is_400(client):
    body = '{"a":' + "[" * 40 + "]" * 40 + "}"
    _assert_error_shape(client.post("/api/v1/auth/register", data=body, content_type="application/json"), 400)


@pytest.mark.parametrize("big", HUGE_IDS)
def test_ids_past_the_largest_row_id_are_404_in_paths(client, make, world, big):
    headers = make.headers(world["admin"])
    for path in (f"/api/v1/products/{big}", f"/api/v1/orders/{big}", f"/api/v1/certifications/{big}",
                 f"/api/v1/batches/{big}", f"/api/v1/users/{big}"):
        _assert_error_shape(client.get(path, headers=headers), 404)
    assert client.get(f"/t/{big}?s=x").status_code == 404
    assert client.get(f"/products/{big}").status_code == 404


@pytest.mark.parametrize("big", [*HUGE_IDS, 2**53 - 1])
def test_ids_past_the_largest_row_id_are_422_in_bodies(client, make, world, big):
    buyer = make.headers(world["buyer"])
    response = client.post("/api/v1/orders", headers=buyer, json={
        "lines": [{"product_id": big, "quantity": 1}], "payment_method": "stripe",
        "shipping": {"name": "张三", "phone": "13800000000", "address": "湖南省吉首市人民北路 1 号"}})
    error = _assert_error_shape(response, 422)
    assert error["fields"]  # names the offending field
    response = client.post(f"/api/v1/products/{world['product'].id}/batches", headers=make.headers(world["member"]),
                           json={"lot": "L-big", "village_id": big, "produced_on": "2026-11-01", "quantity": 5})
    _assert_error_shape(response, 422)


def test_query_ids_past_the_largest_row_id_are_422(client):
    _assert_error_shape(client.get(f"/api/v1/products?village_id={2**40}"), 422)


def test_a_non_ascii_trace_signature_is_refused_not_a_crash(client, world):
    response = client.get(f"/t/{world['batch'].id}?s=k0.ZJV1nRxCavHCHbq\u00c9")
    assert response.status_code in (403, 404)
    assert "服务器内部错误" not in response.get_data(as_text=True)


@pytest.mark.parametrize("text", ["\ud800", "a\ud83dz", "a\x00b"])
def test_unstorable_text_in_a_json_field_is_422_naming_the_field(client, make, world, text):
    response = client.post("/api/v1/auth/register", content_type="application/json", data=json.dumps({
        "email": "new@test.cn", "password": "Xiangxi-2026-long", "display_name": text}))
    assert _assert_error_shape(response, 422)["fields"] == {"display_name": [response.get_json()["error"]["fields"]
                                                                             ["display_name"][0]]}
    response = client.patch(f"/api/v1/products/{world['product'].id}", headers=make.headers(world["member"]),
                            content_type="application/json",
                            data=json.dumps({"description": text, "bulk": {"moq": 1, "tiers": [
                                {"min_qty": 1, "price_fen": 1, "note": text}]}}))
    error = _assert_error_shape(response, 422)
    assert {"description", "bulk.tiers.0.note"} <= set(error["fields"])
    db.session.expire_all()
    assert world["product"].description != text


def test_a_nul_in_a_query_or_form_is_400_everywhere(client, world):
    _assert_error_shape(client.get("/api/v1/products?q=a%00b"), 400)
    assert client.get("/catalogue?county=%00").status_code == 400
    assert client.post("/login", data={"email": "a\x00@b.cn", "password": "x"}).status_code == 400


@pytest.mark.parametrize("page", ["²", "٣", "99999999999999999999", "-1", "1e3"])
def test_unicode_or_huge_page_numbers_on_pages_are_ignored_or_refused(client, make, world, page):
    assert client.get(f"/catalogue?page={page}").status_code == 200
    assert client.get(f"/shop?page={page}").status_code == 200
    with client.session_transaction() as session:
        session.update(user_id=world["member"].id, gen=world["member"].token_generation,
                       sid=secrets.token_urlsafe(16))
    assert client.get(f"/traceability/batches?page={page}").status_code in (200, 422)
    response = client.post("/traceability/batches/new", data={
        "product_id": page, "lot": "L-1", "village_id": page, "produced_on": "2026-11-01", "quantity": page})
    assert response.status_code in (200, 302, 422)


def test_a_partial_bulk_object_in_a_product_patch_is_422(client, make, world):
    headers = make.headers(world["member"])
    for bulk in ({"tiers": [{"min_qty": 10, "price_fen": 100}]}, {}, {"moq": None}, {"tiers": None}):
        response = client.patch(f"/api/v1/products/{world['product'].id}", headers=headers, json={"bulk": bulk})
        assert "moq" in _assert_error_shape(response, 422)["fields"].get("bulk", {}), bulk
    response = client.patch(f"/api/v1/products/{world['product'].id}", headers=headers,
                            json={"bulk": {"moq": 10, "tiers": [{"min_qty": 20, "price_fen": 100}]}})
    assert response.status_code == 200 and response.get_json()["bulk"]["moq"] == 10


@pytest.mark.parametrize("created", [10**20, 2**53 - 1, -5, "yesterday", None, True, 1.5])
def test_a_signed_webhook_with_an_absurd_created_time_does_not_crash(client, make, world, created):
    order = place(client, make, world["buyer"], (world["product"], 1))
    event = completed_event(order, created=created)
    response = deliver(client, event)
    # Past 2^53 the event is not one Stripe sends (400); otherwise it applies at "now".
    assert response.status_code in (200, 400), response.get_json()
    if response.status_code == 200:
        paid = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(world["buyer"])).get_json()
        assert paid["status"] == "paid"
        assert abs(time.time() - _epoch(paid["paid_at"])) < 300


def test_a_signed_webhook_with_nul_or_a_huge_reference_is_400_and_changes_nothing(client, make, world):
    order = place(client, make, world["buyer"], (world["product"], 1))
    for event in (completed_event(order, id="evt_\x00"),
                  completed_event(order, session={"id": "cs_unknown", "client_reference_id": str(2**40)}),
                  completed_event(order, session={"amount_total": 2**64})):
        response = deliver(client, event)
        assert response.status_code in (200, 400)
    body = client.get(f"/api/v1/orders/{order['id']}", headers=make.headers(world["buyer"])).get_json()
    assert body["status"] == "pending_payment"


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


# ---------------------------------------------------------------- the fuzz pass over every route

def _input_field_names() -> list[str]:
    """Every field name any input schema loads (its data_key when it has one)."""
    import certification.schemas  # noqa: F401 - register the schemas
    import core.schemas  # noqa: F401
    import search.schemas  # noqa: F401
    import shop.reports.schemas  # noqa: F401
    import shop.schemas  # noqa: F401
    import traceability.schemas  # noqa: F401

    names, pending = set(), list(Schema.__subclasses__())
    while pending:
        schema = pending.pop()
        pending.extend(schema.__subclasses__())
        for attribute, field in schema._declared_fields.items():
            if not field.dump_only:
                names.add(field.data_key or attribute)
    # Form inputs of the pages that no schema names.
    names |= {"amount_yuan", "price_yuan", "bulk_moq", "annual_canteen_budget_yuan", "product_id", "next",
              "email", "password", "remove", "in_stock", "kind", "s", "active", "evidence_type", "month"}
    return sorted(names)


BAD_SCALARS = [ID_MAX + 1, 2**63, 2**64, -(2**63) - 1, 10**20, 1e308, "\ud800", "a\x00b", "²", "", [], {}, None,
               True, "9" * 400]
BAD_TEXT = ["²", "٣", "99999999999999999999", "-1", "1e9", "\x00", "\ufffd", "'; --", "9" * 400]


def _fill(rule, value) -> str | None:
    """The rule's path with every variable set to ``value`` (or None when a converter refuses it)."""
    from werkzeug.routing import BuildError

    try:
        return rule.build({name: value for name in rule.arguments}, append_unknown=False)[1]
    except (BuildError, ValueError, TypeError):
        return None


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def _sign_in(client, user):
    """A fresh page session for ``user`` (no sign-in form, so no sign-in limits)."""
    db.session.refresh(user)
    with client.session_transaction() as session:
        session.clear()
        session.update(user_id=user.id, gen=user.token_generation, sid=secrets.token_urlsafe(16))


def test_no_route_answers_500_to_hostile_input(app, client, make, world, caplog):
    """Every rule × method, as anonymous, admin and a cooperative member: paths with existing and
    huge ids, JSON bodies with every input field set to each hostile value, deep JSON, and query
    strings and forms with Unicode digits, huge numbers and NUL."""
    names = _input_field_names()
    failures = []
    seen = 0
    statuses = {}

    def check(method, path, **kwargs):
        nonlocal seen
        seen += 1
        response = client.open(path, method=method, **kwargs)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append((method, path, kwargs.get("query_string"), str(kwargs.get("data"))[:80],
                             response.status_code))
        elif path.startswith("/api/") and response.status_code >= 400 and response.is_json:
            body = response.get_json()
            if set(body or {}) != {"error"}:
                failures.append((method, path, "not the error shape", response.status_code))

    real_id = world["product"].id
    for who in (None, world["admin"], world["member"]):
        for rule, method in _routes(app):
            api = rule.rule.startswith("/api/")
            headers = make.headers(who) if (who is not None and api) else {}
            if who is not None and not api:
                _sign_in(client, who)
            elif who is None:
                with client.session_transaction() as session:
                    session.clear()
            paths = [p for p in {_fill(rule, real_id), _fill(rule, "x"), _fill(rule, "É")} if p]
            huge = [p for big in HUGE_IDS if (p := _fill(rule, big))] if "int" in str(rule._converters) else []
            for path in huge:
                check(method, path, headers=headers)
            for path in paths:
                if method == "GET":
                    for text in BAD_TEXT:
                        check(method, path, headers=headers, query_string={name: text for name in names})
                    check(method, path, headers=headers, query_string={"page": "²", "per_page": "²"})
                    continue
                for body in (DEEP_ARRAY, DEEP_OBJECT):
                    check(method, path, headers=headers, data=body, content_type="application/json")
                for value in BAD_SCALARS:
                    check(method, path, headers=headers, data=json.dumps({name: value for name in names}),
                          content_type="application/json")
                for text in BAD_TEXT:
                    check(method, path, headers=headers, data={name: text for name in names})
    assert statuses.get(422, 0) > 500 and statuses.get(200, 0) > 300  # most requests got past sign-in
    assert seen > 3000
    assert not failures, failures[:20]
    assert not [r.getMessage()[:200] for r in caplog.records if "database refused" in r.getMessage()]


def test_order_errors_do_not_name_products_that_were_never_public(client, make, world):
    from tests.certification.factories import product

    draft = product(make, name="未公开的新品腊肉")
    response = client.post("/api/v1/orders", headers=make.headers(world["buyer"]), json={
        "lines": [{"product_id": world["product"].id, "quantity": 1}, {"product_id": draft.id, "quantity": 1}],
        "payment_method": "stripe",
        "shipping": {"name": "张三", "phone": "13800000000", "address": "湖南省吉首市人民北路 1 号"}})
    error = _assert_error_shape(response, 409)
    assert error["code"] == "product_not_sellable" and "未公开" not in response.get_data(as_text=True)
    assert error["fields"] == {"lines": {"1": {"product_id": [f"“产品 #{draft.id}”当前不可销售"]}}}


def _leaves(body, path=()):
    """Every (path, value) inside a JSON body, containers included."""
    yield path, body
    if isinstance(body, dict):
        for key, value in body.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            yield from _leaves(value, (*path, index))


def _replaced(body, path, value):
    """A deep copy of ``body`` with the element at ``path`` replaced."""
    if not path:
        return value
    copy = json.loads(json.dumps(body))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


MUTATIONS = [ID_MAX + 1, 2**63, 2**53 - 1, -(2**31) - 1, "a\x00b", "\ud800", "²", None, [], {}, True, 1.5]


def test_no_json_endpoint_answers_500_when_any_one_field_of_a_valid_body_is_hostile(client, make, world, caplog):
    """Valid bodies for every JSON write endpoint, each field in turn replaced by a hostile value:
    unlike the all-fields-at-once pass above, the other fields stay valid, so the value reaches
    the service and the database (where PostgreSQL's integer columns refuse 2^31)."""
    from tests.certification.factories import EVIDENCE, product, reviewer

    product_id, batch_id = world["product"].id, world["batch"].id
    village_id = world["product"].villages[0].id
    draft = product(make, cooperative=world["product"].cooperative)
    unit = make.budget_unit()
    order = place(client, make, world["buyer"], (world["product"], 1))
    finance = make.headers(make.user(Role.FINANCE))
    admin, coop, buyer = (make.headers(world[name]) for name in ("admin", "member", "buyer"))
    shipping = {"name": "张三", "phone": "13800000000", "address": "湖南省吉首市人民北路 1 号"}
    cases = [
        ({}, "POST", "/api/v1/auth/register", {"email": "fuzz@test.cn", "password": "Xiangxi-2026-long",
                                               "display_name": "测试"}),
        ({}, "POST", "/api/v1/auth/token", {"email": world["buyer"].email, "password": "password123"}),
        (admin, "POST", "/api/v1/users", {"email": "staff@test.cn", "password": "Xiangxi-2026-long",
                                          "display_name": "社员", "role": "cooperative",
                                          "cooperative_id": world["product"].cooperative_id}),
        (admin, "PATCH", f"/api/v1/users/{world['buyer'].id}", {"display_name": "新名字", "is_active": True}),
        (admin, "POST", "/api/v1/cooperatives", {"name": "新合作社", "credit_code": "91433100MA4L0000X0",
                                                 "village_id": village_id, "contact_name": "李四",
                                                 "contact_phone": "0743-1234567"}),
        (admin, "POST", "/api/v1/budget-units", {"name": "新单位", "annual_canteen_budget_fen": 100_000,
                                                 "reserved_share": "0.10"}),
        (admin, "PATCH", f"/api/v1/budget-units/{unit.id}", {"annual_canteen_budget_fen": 200_000, "year": 2026}),
        (admin, "PUT", f"/api/v1/villages/{village_id}/sales-targets/2026", {"target_fen": 100_000, "reason": "调整"}),
        (coop, "POST", "/api/v1/products", {"name": "新品", "category": "tea", "description": "", "unit": "盒",
                                            "price_fen": 1000, "village_ids": [village_id],
                                            "bulk": {"moq": 5, "tiers": [{"min_qty": 10, "price_fen": 900}]}}),
        (coop, "PATCH", f"/api/v1/products/{product_id}", {"price_fen": 1200, "description": "新描述",
                                                          "bulk": {"moq": 5, "tiers": [{"min_qty": 10,
                                                                                        "price_fen": 900}]}}),
        (coop, "POST", f"/api/v1/products/{product_id}/batches", {"lot": "L-fuzz", "village_id": village_id,
                                                                  "produced_on": "2026-11-01", "quantity": 5}),
        (coop, "POST", f"/api/v1/batches/{batch_id}/serials", {"count": 2}),
        (coop, "POST", f"/api/v1/batches/{batch_id}/events", {"type": "shipping", "location": "吉首",
                                                              "partner": "超市", "quantity": 1, "note": ""}),
        (coop, "POST", f"/api/v1/products/{draft.id}/certification", {"evidence": [dict(EVIDENCE)]}),
        (make.headers(reviewer(make)), "POST", "/api/v1/certifications/1/decision",
         {"decision": "approve", "comment": "符合"}),
        (buyer, "POST", "/api/v1/orders", {"lines": [{"product_id": product_id, "quantity": 1}],
                                           "payment_method": "stripe", "shipping": shipping,
                                           "purchase_order_no": None, "invoice": None}),
        (finance, "POST", f"/api/v1/orders/{order['id']}/confirm-transfer", {"amount_fen": 100, "reference": "B1"}),
        (finance, "POST", f"/api/v1/orders/{order['id']}/refund", {"amount_fen": 100, "reason": "差价"}),
        (coop, "POST", f"/api/v1/orders/{order['id']}/ship", {"carrier": "顺丰", "tracking_number": "SF000111222",
                                                             "cooperative_id": world["product"].cooperative_id}),
    ]
    failures, sent = [], 0
    for headers, method, path, body in cases:
        for where, _ in list(_leaves(body)):
            if not where:
                continue
            for value in MUTATIONS:
                sent += 1
                response = client.open(path, method=method, headers=headers, content_type="application/json",
                                       data=json.dumps(_replaced(body, where, value)))
                if response.status_code >= 500 or set(response.get_json() or {"error": 1}) - {"error"} \
                        and response.status_code >= 400:
                    failures.append((method, path, where, repr(value), response.status_code))
    assert sent > 800
    assert not failures, failures[:20]
    # Bounded where it enters: the database's refusal (core.errors' last net) was never needed.
    assert not [r.getMessage()[:200] for r in caplog.records if "database refused" in r.getMessage()]


# ---------------------------------------------------------------- found by the OpenAPI fuzz (tests/core/test_openapi_fuzz.py)

NAMELESS_PART = b'--XX\r\nContent-Disposition: form-data; name="a\\"\r\n\r\nv\r\n--XX--\r\n'


def test_a_multipart_part_whose_name_does_not_parse_is_400_not_500(app, client, make, world):
    """Werkzeug keys such a part as None: the API's input check and Flask-WTF's CSRF check both
    crashed on it (500) before any view ran."""
    response = client.post(f"/api/v1/products/{world['product'].id}/images", data=NAMELESS_PART,
                           content_type="multipart/form-data; boundary=XX", headers=make.headers(world["member"]))
    assert _assert_error_shape(response, 400)["code"] == "malformed_form"
    app.config["WTF_CSRF_ENABLED"] = True  # as in production: the CSRF check reads the form first
    try:
        response = client.post("/login", data=NAMELESS_PART, content_type="multipart/form-data; boundary=XX")
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
    assert response.status_code == 400
