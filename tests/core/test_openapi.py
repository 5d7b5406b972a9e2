"""The OpenAPI 3.1 document of /api/v1 (issue #13): complete, valid, and readable at /api/docs."""
import re
from html import unescape

import jsonschema_rs
import pytest
import schemathesis
from flask import jsonify

from core.app import create_app
from core.openapi import api_doc, api_rules, build_document, undocumented_endpoints

HOW_TO = """
Document each one next to its route in its package's api.py, e.g.

    from core.openapi import api_doc

    @bp.post("/things/<int:thing_id>/notes")
    @api_doc(request=NoteCreateSchema, response=NoteSchema, status=201, errors=(409,))
    @require_roles(Role.ADMIN)
    def create_note(thing_id): ...

request/response: the marshmallow schemas the view loads and dumps; many=True for a list envelope;
query=Schema or {"name": fields.X()}; paged=True when it reads ?page=&per_page=; errors: the
statuses the service can raise beyond 400/422 (body or query), 401 (signed in), 403 (roles) and
404 (path ids), which are derived. See README "API document".
"""


@pytest.fixture(scope="module")
def document(app):
    return build_document(app)


def _operations(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def test_every_api_route_is_documented(app):
    missing = undocumented_endpoints(app)
    assert not missing, "API routes without @api_doc:\n" + "\n".join(missing) + "\n" + HOW_TO


def test_an_undocumented_route_is_named_by_the_check():
    fresh = create_app({"TESTING": True, "SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": "sqlite://",
                        "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_SECRET_KEY": ""})
    fresh.add_url_rule("/api/v1/notifications", "notifications.list_notifications", lambda: jsonify([]))
    assert undocumented_endpoints(fresh) == ["GET /api/v1/notifications (notifications.list_notifications)"]
    with pytest.raises(LookupError, match="notifications"):
        build_document(fresh)
    fresh.view_functions["notifications.list_notifications"] = api_doc(response={"type": "array"})(lambda: [])
    assert "/api/v1/notifications" in build_document(fresh)["paths"]


def test_the_document_is_valid_openapi_3_1_with_every_route(app, document):
    assert document["openapi"] == "3.1.0"
    loaded = schemathesis.openapi.from_dict(document)
    loaded.validate()  # against the OpenAPI 3.1 schema (openapi-spec-validator is not installed)
    operations = [result.ok() for result in loaded.get_all_operations()]  # each one resolves
    for where, embedded in _schemas(document):  # and every JSON Schema in it is valid 2020-12
        assert jsonschema_rs.meta.is_valid(embedded), (where, jsonschema_rs.meta.validate(embedded))
    routes = {(method, re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"{\1}", rule.rule)) for rule, method in api_rules(app)}
    assert {(op.method.upper(), op.path) for op in operations} == routes
    assert len(routes) >= 70


def _schemas(node, where=""):
    """Every JSON Schema (a ``schema`` value, or a component) in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" or (where == "/components/schemas"):
                yield f"{where}/{key}", value
            elif key not in ("examples", "example"):
                yield from _schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schemas(value, f"{where}/{index}")


def test_it_is_served_publicly_as_json(client, document):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == document


def test_every_operation_has_summary_security_parameters_and_responses(app, document):
    for method, path, operation in _operations(document):
        where = f"{method} {path}"
        assert operation["summary"], where
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), where
        names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert names == set(re.findall(r"{(\w+)}", path)), where
        if names:
            assert "404" in responses, where
        if operation["security"]:
            assert operation["security"] == [{"bearerAuth": []}] and "401" in responses, where
        if isinstance(operation["x-roles"], list):
            assert "403" in responses and operation["security"], where
        if "requestBody" in operation:
            assert "400" in responses, where
        for code, response in responses.items():
            if code.startswith("4") or code.startswith("5"):
                assert response["$ref"].startswith("#/components/responses/"), where


def test_errors_share_the_contracts_error_component(document):
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"code", "message", "fields"}
    for name in ("BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "ValidationError", "RateLimited"):
        schema = document["components"]["responses"][name]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}


def _operation(document, method, path):
    return document["paths"][path][method.lower()]


def _body(document, method, path):
    return _operation(document, method, path)["requestBody"]["content"]["application/json"]["schema"]


def _query(document, method, path, name):
    return next(p for p in _operation(document, method, path)["parameters"] if p["name"] == name)["schema"]


def test_security_and_roles_follow_the_views_decorators(document):
    assert _operation(document, "GET", "/api/v1/products")["security"] == []
    assert _operation(document, "GET", "/api/v1/products")["x-roles"] == "public"
    assert _operation(document, "GET", "/api/v1/me")["x-roles"] == "signed_in"
    assert _operation(document, "POST", "/api/v1/certifications/{certification_id}/revoke")["x-roles"] == \
        ["prefecture_reviewer"]
    assert set(_operation(document, "POST", "/api/v1/products")["x-roles"]) == {"cooperative", "admin"}
    assert "401" not in _operation(document, "GET", "/api/v1/villages")["responses"]
    assert {"401", "429"} <= set(_operation(document, "POST", "/api/v1/auth/token")["responses"])


def test_enum_values_are_visible(document):
    product = _body(document, "POST", "/api/v1/products")
    assert "tea" in product["properties"]["category"]["enum"]
    assert "茶叶" in product["properties"]["category"]["description"]  # labels accepted too
    evidence = _body(document, "POST", "/api/v1/products/{product_id}/certification")["properties"]["evidence"]
    assert "geographical_indication" in evidence["items"]["properties"]["type"]["enum"]
    assert "demonstration" in _query(document, "GET", "/api/v1/villages", "zone")["enum"]
    assert {"online", "canteen"} <= set(_query(document, "GET", "/api/v1/reports/village-sales", "channel")["enum"])
    assert "partially_refunded" in _query(document, "GET", "/api/v1/orders", "status")["enum"]
    assert "county_approved" in _query(document, "GET", "/api/v1/certifications", "status")["enum"]
    decision = _body(document, "POST", "/api/v1/certifications/{certification_id}/decision")
    assert set(decision["properties"]["decision"]["enum"]) == {"approve", "reject"}
    assert _body(document, "POST", "/api/v1/budget-units")["properties"]["reserved_share"]["type"] == "string"


def test_bodies_and_files_are_described(document):
    order = _body(document, "POST", "/api/v1/orders")
    assert set(order["required"]) == {"lines", "payment_method", "shipping"}
    assert order["additionalProperties"] is False  # unknown keys are a 422 there
    assert _body(document, "PATCH", "/api/v1/products/{product_id}").get("required") is None  # partial
    upload = _operation(document, "POST", "/api/v1/products/{product_id}/images")["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["required"] == ["file"]
    sales = _operation(document, "GET", "/api/v1/reports/village-sales")["responses"]["200"]["content"]
    assert {"application/json", "text/csv"} <= set(sales)
    assert set(_operation(document, "GET", "/api/v1/batches/{batch_id}/qr.png")["responses"]["200"]["content"]) \
        == {"image/png"}
    listed = _operation(document, "GET", "/api/v1/products")["responses"]["200"]["content"]["application/json"]
    assert set(listed["schema"]["properties"]) == {"items", "total", "page", "per_page"}
    # An account opened with a link to choose its password needs none: the document says so.
    account = _body(document, "POST", "/api/v1/users")
    assert "send_password_link" in account["properties"] and "password" not in account["required"]


def test_the_stripe_webhook_takes_an_event_with_its_signature_header(document):
    webhook = _operation(document, "POST", "/api/v1/payments/stripe/webhook")
    header = next(p for p in webhook["parameters"] if p["in"] == "header")
    assert header["name"] == "Stripe-Signature" and header["required"] is True
    assert set(webhook["requestBody"]["content"]["application/json"]["schema"]["required"]) == {"id", "type", "data"}
    assert webhook["security"] == [] and "400" in webhook["responses"]


def test_the_docs_page_renders_every_operation_without_script_or_cdn(client, document):
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = unescape(response.get_data(as_text=True))
    assert "接口文档" in html and "调用者" in html and "请求体" in html and "响应" in html
    for method, path, operation in _operations(document):
        assert path in html and operation["summary"].split("``")[0][:20] in html
    assert "geographical_indication" in html and "Stripe-Signature" in html
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(re.search(r'src="/static/', tag) for tag in scripts)  # only the site's own file
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
