"""Errors in the contract's shape for the API, Chinese pages for people.

Services raise the ``AppError`` subclasses below; the handlers registered here turn them
(and Werkzeug's HTTP errors) into ``{"error": {"code", "message", "fields"}}`` for
``/api/`` requests and into Chinese error pages for HTML.
"""
import logging

import sqlalchemy.exc
from flask import jsonify, render_template, request
from marshmallow import ValidationError as MarshmallowValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    """A failure the caller can act on; carries status, code and Chinese message."""

    status = 400
    code = "bad_request"
    message = "请求有误"

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 fields: dict | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.code = code or self.code
        self.fields = fields or {}


class BadRequest(AppError):
    status, code, message = 400, "malformed_json", "请求体不是有效的 JSON 对象"


class Unauthorized(AppError):
    status, code, message = 401, "unauthorized", "请先登录"


class Forbidden(AppError):
    status, code, message = 403, "forbidden", "无权执行此操作"


class NotFound(AppError):
    status, code, message = 404, "not_found", "未找到"


class Conflict(AppError):
    status, code, message = 409, "conflict", "与当前状态冲突"


class ValidationFailed(AppError):
    status, code, message = 422, "validation_error", "输入有误"


class RateLimited(AppError):
    status, code, message = 429, "rate_limited", "请求过于频繁，请稍后再试"


# Werkzeug's status codes mapped to contract codes and Chinese messages.
_HTTP_CODES = {
    400: ("bad_request", "请求有误"),
    401: ("unauthorized", "请先登录"),
    403: ("forbidden", "无权访问"),
    404: ("not_found", "未找到"),
    405: ("method_not_allowed", "不支持该请求方法"),
    413: ("payload_too_large", "上传内容过大"),
    415: ("unsupported_media_type", "不支持的内容类型"),
    429: ("rate_limited", "请求过于频繁，请稍后再试"),
}


def wants_json() -> bool:
    """True when the response should be JSON: API paths, or a client asking for JSON."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    """Return the contract's error envelope."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


#: How a page names the query and form parameters an error is about (the API keeps the names).
FIELD_LABELS = {
    "year": "年份", "page": "页码", "per_page": "每页条数", "sort": "排序", "q": "搜索词", "county": "县市",
    "township": "乡镇", "zone": "分区", "channel": "渠道", "category": "品类", "format": "格式",
    "in_stock": "仅看有货", "evidence_type": "认证类型", "status": "状态", "month": "月份",
}
#: Details that mean something to programs but nothing to a person reading the page.
HIDDEN_FIELDS = frozenset({"retry_after_seconds"})


def page_field_errors(fields: dict | None) -> list[tuple[str | None, str]]:
    """An error's field messages as a page shows them: (Chinese label or None, reasons)."""
    shown = []
    for name, reasons in (fields or {}).items():
        if name in HIDDEN_FIELDS:
            continue
        if isinstance(reasons, dict):  # nested (lines of an order): the messages alone
            reasons = [str(reason) for value in reasons.values() for reason in
                       (value if isinstance(value, list) else [value])]
        text = "；".join(str(reason) for reason in reasons) if isinstance(reasons, list) else str(reasons)
        shown.append((FIELD_LABELS.get(name), text))
    return shown


def _respond(status: int, code: str, message: str, fields: dict | None = None):
    if wants_json():
        return jsonify(error_body(code, message, fields)), status
    template = f"errors/{status}.html" if status in (403, 404, 405, 500) else "errors/generic.html"
    return render_template(template, status=status, message=message, fields=fields or {},
                           field_errors=page_field_errors(fields)), status


def register_error_handlers(app) -> None:
    """Install the handlers that give every failure the contract's shape."""

    @app.errorhandler(AppError)
    def handle_app_error(error: AppError):
        body, status = _respond(error.status, error.code, error.message, error.fields)
        if isinstance(error, RateLimited):
            response = app.make_response((body, status))
            response.headers["Retry-After"] = "60"
            return response
        return body, status

    @app.errorhandler(MarshmallowValidationError)
    def handle_validation(error: MarshmallowValidationError):
        fields = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        return _respond(422, "validation_error", "输入有误", fields)

    @app.errorhandler(HTTPException)
    def handle_http(error: HTTPException):
        status = error.code or 500
        code, message = _HTTP_CODES.get(status, ("error", error.description or "请求失败"))
        if status == 400 and "CSRF" in (error.description or ""):
            code, message = "csrf_failed", "页面已过期，请刷新后重试"
        response = _respond(status, code, message)
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response[0].headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(sqlalchemy.exc.IntegrityError)
    def handle_integrity_error(error: sqlalchemy.exc.IntegrityError):
        # Services turn the races they expect into their own 409 (core.db.unique_or_conflict);
        # one they did not expect is still a conflict with the current state, never a 500.
        from core.extensions import db

        db.session.rollback()
        log.warning("unexpected integrity error on %s %s: %s", request.method, request.path, error.orig)
        return _respond(409, "conflict", "与现有数据冲突，请刷新后重试")

    @app.errorhandler(sqlalchemy.exc.DataError)
    def handle_data_error(error: sqlalchemy.exc.DataError):
        # Input is bounded where it enters (core.http, the schemas' ROW_ID); a value that still
        # reaches the database out of range is the caller's input, not our failure. Logged to fix.
        from core.extensions import db

        db.session.rollback()
        log.warning("database refused a value on %s %s: %s", request.method, request.path, error.orig)
        return _respond(422, "validation_error", "输入的数值或文字超出允许范围")

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _respond(500, "internal_error", "服务器内部错误，请稍后再试")
