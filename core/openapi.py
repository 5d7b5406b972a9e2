"""The OpenAPI 3.1 document of ``/api/v1``, generated from the endpoints themselves.

Each API view carries its metadata next to its route (``@api_doc``) and its access rule in the
decorators it already has (``require_login`` / ``require_roles`` mark the view they wrap).
``build_document`` walks ``app.url_map`` at runtime, so this kernel module never imports a domain
package; request and response bodies are the marshmallow schemas the views load and dump,
converted by apispec's ``MarshmallowPlugin`` (taught ``LabelledChoice`` and ``ShareString`` here).

Served as JSON at ``GET /api/v1/openapi.json`` and for people at ``GET /api/docs``.
``undocumented_endpoints`` names every ``/api/v1`` route without ``@api_doc`` (a test fails on it).
"""
import json
import re
from dataclasses import dataclass, field

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify, render_template
from marshmallow import Schema, fields

from core.identifiers import ID_MAX
from core.models import ROLE_LABELS, Role
from core.schemas import LabelledChoice, ShareString

API_PREFIX = "/api/v1"
OPENAPI_VERSION = "3.1.0"

#: Error answers in the contract's shape, one reusable response per status.
ERROR_RESPONSES = {
    400: ("BadRequest", "请求格式错误：JSON 无效、嵌套过深，或路径、参数、表单含 NUL 等无法保存的字符"),
    401: ("Unauthorized", "未登录，或 Bearer 令牌无效、已过期、已撤销（登录失败也是 401）"),
    403: ("Forbidden", "已登录，但当前角色或范围（县、合作社、预算单位）无权执行"),
    404: ("NotFound", "不存在，或对调用者不可见（路径中的编号超过 2147483647 也是 404）"),
    409: ("Conflict", "与当前状态冲突：库存不足、流程阶段不对、重复"),
    422: ("ValidationError", "输入校验未通过，fields 指出哪个字段、为什么"),
    429: ("RateLimited", "请求过于频繁（见 Retry-After 头），请稍后再试"),
    502: ("BadGateway", "支付服务（Stripe）拒绝或无法连接，未做任何更改，请稍后再试；退款时若支付服务未确认结果"
                        "（code 为 refund_unconfirmed），金额已预留、退款待核实，系统会用同一退款单号自动重试，请勿重复退款"),
    503: ("ServiceUnavailable", "所需的服务未配置或暂不可用（在线支付未开通、搜索索引重建中）"),
}

#: Alternative success bodies a view may answer instead of JSON (``files=``).
FILE_TYPES = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
    "png": "image/png",
}

ERROR_SCHEMA = {
    "type": "object",
    "description": "契约规定的错误格式：code 为 snake_case 英文代码，message 为中文说明，fields 按字段列出原因。",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "fields"],
        "properties": {
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "examples": ["validation_error"]},
            "message": {"type": "string"},
            "fields": {"type": "object", "description": "字段名 → 原因列表（嵌套字段为对象）"},
        },
    }},
}


@dataclass(frozen=True)
class ApiDoc:
    """What the document says about one view (see ``api_doc``)."""

    request: object = None
    response: object = None
    status: int = 200
    many: bool = False
    errors: tuple = ()
    query: object = None
    paged: int | None = None
    files: tuple = ()
    upload: str | None = None
    headers: dict = field(default_factory=dict)
    summary: str | None = None
    description: str | None = None
    also: tuple = ()


def api_doc(*, request=None, response=None, status: int = 200, many: bool = False, errors=(), query=None,
            paged: int | bool | None = None, files=(), upload: str | None = None, headers: dict | None = None,
            summary: str | None = None, description: str | None = None, also=()):
    """Describe an API view for the OpenAPI document; put it right under the route decorator.

    :param request: the marshmallow schema (class or instance, e.g. ``partial=...``) the JSON body
        is loaded with, or a JSON Schema dict.
    :param response: the schema the success body is dumped with (class, instance or JSON Schema dict).
    :param status: the success status (201 for a creation).
    :param many: the body is the contract's list envelope ``{"items": [response...], "total", "page", "per_page"}``.
    :param errors: error statuses the view gives beyond those its shape implies (400/422 for a
        body or query, 401 for signed-in views, 403 for role-restricted ones, 404 with a path id).
    :param query: query parameters: a schema (class or instance) or ``{"name": marshmallow field}``.
    :param paged: ``?page=&per_page=`` are read; the value is the largest ``per_page`` (True: 500).
    :param files: other media types the success may be (``"csv"``, ``"xlsx"``, ``"pdf"``, ``"png"``).
    :param upload: the body is multipart/form-data with this file field.
    :param headers: request headers ``{"Name": {"required": bool, "description": str, "schema": {...}}}``.
    :param summary: defaults to the view docstring's first paragraph.
    :param also: other success statuses with the same body, as ``((200, "when"), ...)`` (e.g. a
        creation that may find nothing to create).
    """
    doc = ApiDoc(request=request, response=response, status=status, many=many, errors=tuple(errors), query=query,
                 paged=500 if paged is True else (paged or None), files=tuple(files), upload=upload,
                 headers=dict(headers or {}), summary=summary, description=description, also=tuple(also))

    def decorator(view):
        view.api_doc = doc
        return view

    return decorator


def api_tag(blueprint: Blueprint, name: str, description: str = "") -> None:
    """Group a blueprint's operations under a (Chinese) tag in the document and the docs page."""
    blueprint.openapi_tag = (name, description)


# ---------------------------------------------------------------- walking the app

def api_rules(app: Flask):
    """Every (rule, method) under ``/api/v1``, in path order."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith(API_PREFIX + "/"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def undocumented_endpoints(app: Flask) -> list[str]:
    """``"METHOD /path (endpoint)"`` of each ``/api/v1`` route whose view has no ``@api_doc``."""
    return [f"{method} {rule.rule} ({rule.endpoint})" for rule, method in api_rules(app)
            if getattr(app.view_functions[rule.endpoint], "api_doc", None) is None]


def _summary(view, doc: ApiDoc) -> str:
    if doc.summary:
        return doc.summary
    text = (view.__doc__ or "").strip().split("\n\n")[0]
    # reST ``literal`` in docstrings; CommonMark (OpenAPI's description language) uses `literal`.
    return " ".join(line.strip() for line in text.splitlines()).replace("``", "`")


_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


def _path_parameters(rule) -> tuple[str, list[dict]]:
    """The OpenAPI path (``{name}``) and its parameters, typed from the rule's converters."""
    parameters = []
    for name, converter in rule._converters.items():
        kind = type(converter).__name__
        if kind == "IntegerConverter":
            # Past ID_MAX no row exists (404 by core.http); a year is checked by its service (422).
            schema = {"type": "integer", "minimum": 1, "maximum": ID_MAX}
        elif kind == "AnyConverter":
            schema = {"type": "string", "enum": sorted(converter.items)}
        else:
            schema = {"type": "string", "minLength": 1}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _VARIABLE.sub(r"{\1}", rule.rule), parameters


# ---------------------------------------------------------------- marshmallow → JSON Schema

def _labelled_choice(self, field_, ret, **kwargs) -> dict:
    """A ``LabelledChoice`` is documented by its codes (``enum``); its Chinese labels are accepted too."""
    if not isinstance(field_, LabelledChoice):
        return {}
    enum = list(field_.labels) + ([None] if field_.allow_none else [])
    labels = "、".join(f"{code}（{label}）" for code, label in field_.labels.items())
    return {"enum": enum, "x-labels": dict(field_.labels),
            "description": f"代码之一：{labels}。请求中也可直接填中文名称，按对应代码处理；响应中总是代码。"}


def _share_string(self, field_, ret, **kwargs) -> dict:
    """A ratio as a decimal string ``"0.10"`` (never a float)."""
    if not isinstance(field_, ShareString):
        return {}
    return {"type": "string", "pattern": r"^(0(\.\d{1,4})?|1(\.0{1,4})?)$",
            "description": "0 到 1 之间、最多 4 位小数的字符串，如 \"0.10\""}


class _Converter:
    """apispec's marshmallow converter, set up once per document."""

    def __init__(self, plugin: MarshmallowPlugin):
        self.plugin = plugin
        plugin.map_to_openapi_type(ShareString, "string", None)
        plugin.converter.add_attribute_function(_labelled_choice)
        plugin.converter.add_attribute_function(_share_string)

    def schema(self, value) -> dict:
        """JSON Schema of a marshmallow schema (class or instance), or a dict taken as is."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return _converted(value, self)
        instance = value() if isinstance(value, type) else value
        return self.plugin.converter.schema2jsonschema(instance)

    def response(self, value) -> dict:
        """A response body: extra fields are welcome (the contract), and no field is promised."""
        return _relaxed(self.schema(value))

    def query(self, value) -> list[dict]:
        """Query parameters from a schema (class or instance) or ``{"name": field}``."""
        if value is None:
            return []
        if isinstance(value, dict):
            value = Schema.from_dict(value)()
        instance = value() if isinstance(value, type) else value
        return self.plugin.converter.schema2parameters(instance, location="query")


def _converted(value, converter: _Converter):
    """A JSON Schema dict whose values may be marshmallow schemas or fields (converted here)."""
    if isinstance(value, dict):
        return {key: _converted(item, converter) for key, item in value.items()}
    if isinstance(value, list):
        return [_converted(item, converter) for item in value]
    if isinstance(value, fields.Field):
        return converter.plugin.converter.field2property(value)
    if isinstance(value, Schema) or (isinstance(value, type) and issubclass(value, Schema)):
        return converter.schema(value)
    return value


def _relaxed(schema):
    """``schema`` without ``required`` or ``additionalProperties: false`` anywhere (answers may grow).

    Output schemas are often input schemas too (a cooperative, a budget unit): what a request must
    send is no promise about what the answer holds, and marshmallow 4's default ``unknown=RAISE``
    says nothing about the extra fields views add."""
    if isinstance(schema, list):
        return [_relaxed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    relaxed = {}
    for key, item in schema.items():
        if key == "required" or (key == "additionalProperties" and item is False):
            continue
        if key in ("properties", "$defs") and isinstance(item, dict):  # names, not keywords
            relaxed[key] = {name: _relaxed(value) for name, value in item.items()}
        else:
            relaxed[key] = _relaxed(item)
    return relaxed


def envelope(items: dict) -> dict:
    """The contract's list body around ``items``."""
    return {"type": "object", "properties": {
        "items": {"type": "array", "items": items}, "total": {"type": "integer", "minimum": 0},
        "page": {"type": "integer", "minimum": 1}, "per_page": {"type": "integer", "minimum": 1}}}


# ---------------------------------------------------------------- the document

def _operation(converter: _Converter, rule, method: str, view, doc: ApiDoc, tag: str) -> tuple[str, dict]:
    path, parameters = _path_parameters(rule)
    # Marked by core.auth's decorators: roles for require_roles, login for both.
    roles: tuple[Role, ...] | None = getattr(view, "required_roles", None)
    login = bool(getattr(view, "login_required", False))
    parameters += converter.query(doc.query)
    if doc.paged:
        parameters += [
            {"name": "page", "in": "query", "required": False, "description": "页码，从 1 开始",
             "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}},
            {"name": "per_page", "in": "query", "required": False, "description": f"每页条数，最多 {doc.paged}",
             "schema": {"type": "integer", "minimum": 1, "maximum": doc.paged}},
        ]
    for name, header in doc.headers.items():
        parameters.append({"name": name, "in": "header", "required": header.get("required", False),
                           "description": header.get("description", ""),
                           "schema": header.get("schema", {"type": "string"})})
    statuses = set(doc.errors)
    # 400: a body that is not JSON, or a NUL in a query (core.http); 422: what a schema refuses.
    has_query = any(p["in"] == "query" for p in parameters)
    if doc.request is not None or doc.upload or has_query:
        statuses.add(400)
    if (doc.request is not None and not isinstance(doc.request, dict)) or doc.upload or has_query:
        statuses.add(422)
    if login:
        statuses.add(401)
    if roles:
        statuses.add(403)
    if rule._converters:
        statuses.add(404)

    operation = {
        "operationId": rule.endpoint.replace(".", "__") + ("" if method == "GET" else f"__{method.lower()}"),
        "summary": _summary(view, doc),
        "tags": [tag],
        "parameters": parameters,
        "security": [{"bearerAuth": []}] if login else [],
        "x-roles": [role.value for role in roles] if roles else ("signed_in" if login else "public"),
        "responses": {},
    }
    who = ("、".join(f"{ROLE_LABELS[role]}（{role.value}）" for role in roles) if roles
           else "任何已登录用户" if login else "公开，无需登录")
    operation["description"] = (doc.description + "\n\n" if doc.description else "") + f"调用者：{who}。"
    if doc.upload:
        upload = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [doc.upload], "properties": {doc.upload: upload}}}}}
    elif doc.request is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": converter.schema(doc.request)}}}

    success = {"description": "成功" if doc.status != 201 else "已创建"}
    content = {}
    if doc.response is not None:
        body = converter.response(doc.response)
        content["application/json"] = {"schema": envelope(body) if doc.many else body}
    for kind in doc.files:
        content[FILE_TYPES[kind]] = {"schema": {"type": "string", "contentMediaType": FILE_TYPES[kind]}}
    if content:
        success["content"] = content
    operation["responses"][str(doc.status)] = success
    for status, when in doc.also:
        operation["responses"][str(status)] = {**success, "description": when}
    for status in sorted(statuses):
        operation["responses"][str(status)] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
    return path, operation


def build_document(app: Flask) -> dict:
    """The OpenAPI 3.1 document of every ``/api/v1`` operation of ``app``.

    :raise LookupError: a route without ``@api_doc`` (the test names it; see ``undocumented_endpoints``).
    """
    plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: None)  # inline: bodies read in place
    spec = APISpec(title="湘西香伴 消费帮扶 API", version="1", openapi_version=OPENAPI_VERSION, plugins=[plugin],
                   info={"description": "湘西香伴消费帮扶平台的公开 JSON 接口（/api/v1）。金额一律为整数分（_fen），"
                                        "时间为带时区的 ISO 8601。先用 POST /api/v1/auth/token 换取令牌，"
                                        "再以 Authorization: Bearer <token> 调用。"},
                   servers=[{"url": "/"}])
    converter = _Converter(plugin)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "description": "POST /api/v1/auth/token 取得的令牌"})
    spec.components.schema("ErrorResponse", ERROR_SCHEMA)
    for status, (name, description) in ERROR_RESPONSES.items():
        response = {"description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        if status == 429:
            response["headers"] = {"Retry-After": {"description": "多少秒后再试", "schema": {"type": "string"}}}
        spec.components.response(name, response)

    tags: dict[str, str] = {}
    paths: dict[str, dict] = {}
    for rule, method in api_rules(app):
        view = app.view_functions[rule.endpoint]
        doc = getattr(view, "api_doc", None)
        if doc is None:
            raise LookupError(f"{method} {rule.rule} ({rule.endpoint}) has no @api_doc")
        blueprint = app.blueprints.get(rule.endpoint.rsplit(".", 1)[0]) if "." in rule.endpoint else None
        tag, description = getattr(blueprint, "openapi_tag", (rule.endpoint.split(".")[0], ""))
        tags.setdefault(tag, description)
        path, operation = _operation(converter, rule, method, view, doc, tag)
        paths.setdefault(path, {})[method.lower()] = operation
    for tag, description in tags.items():
        spec.tag({"name": tag, "description": description})
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def document(app: Flask) -> dict:
    """The document, built once per app (routes do not change after start-up)."""
    cached = app.extensions.get("openapi_document")
    if cached is None:
        cached = app.extensions["openapi_document"] = build_document(app)
    return cached


# ---------------------------------------------------------------- serving it

bp = Blueprint("openapi", __name__)
api_tag(bp, "接口文档", "本文档本身")


@bp.get(API_PREFIX + "/openapi.json")
@api_doc(response={"type": "object", "description": "OpenAPI 3.1 文档"})
def openapi_json():
    """This OpenAPI 3.1 document (public)."""
    return jsonify(document(current_app))


@bp.get("/api/docs")
def docs_page():
    """The document for people: endpoints grouped by tag, rendered on the server (no script)."""
    return render_template("api/docs.html", doc=document(current_app), groups=_groups(document(current_app)),
                           role_labels={role.value: label for role, label in ROLE_LABELS.items()},
                           error_descriptions={str(status): text for status, (_, text) in ERROR_RESPONSES.items()})


def _groups(doc: dict) -> list[tuple[dict, list[tuple[str, str, dict]]]]:
    """(tag, [(method, path, operation)]) in the document's tag order."""
    by_tag: dict[str, list] = {tag["name"]: [] for tag in doc.get("tags", [])}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            by_tag.setdefault(operation["tags"][0], []).append((method.upper(), path, operation))
    tags = {tag["name"]: tag for tag in doc.get("tags", [])}
    return [(tags.get(name, {"name": name}), items) for name, items in by_tag.items() if items]


def schema_rows(schema: dict, prefix: str = "", depth: int = 0) -> list[dict]:
    """Flatten a JSON Schema object into rows (dotted name, type, required, constraints) for the page."""
    rows = []
    if depth > 6 or not isinstance(schema, dict):
        return rows
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        inner = prop
        for key in ("anyOf", "oneOf"):
            options = [option for option in prop.get(key, []) if option.get("type") != "null"]
            if options:
                inner = {**options[0], **{k: v for k, v in prop.items() if k != key}}
        kind = inner.get("type", "any")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        if kind == "array" and isinstance(inner.get("items"), dict):
            kind = f"array<{inner['items'].get('type', 'object')}>"
        rows.append({"name": dotted, "type": kind, "required": name in required, "enum": inner.get("enum"),
                     "description": inner.get("description", ""), "constraints": _constraints(inner)})
        if inner.get("type") == "object" or "properties" in inner:
            rows += schema_rows(inner, dotted + ".", depth + 1)
        elif isinstance(inner.get("items"), dict) and "properties" in inner["items"]:
            rows += schema_rows(inner["items"], dotted + "[].", depth + 1)
    return rows


def _constraints(prop: dict) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "最短"), ("maxLength", "最长"),
                       ("minItems", "至少"), ("maxItems", "至多"), ("pattern", "格式"), ("format", "格式"),
                       ("default", "默认")):
        if key in prop:
            value = prop[key]
            parts.append(f"{label} {json.dumps(value, ensure_ascii=False) if key == 'default' else value}")
    if prop.get("readOnly"):
        parts.append("只读")
    return "，".join(parts)


def init_app(app: Flask) -> None:
    """Serve the document and its page; ``schema_rows`` is available to the template."""
    app.register_blueprint(bp)
    app.add_template_global(schema_rows, "openapi_schema_rows")

