"""Small helpers every request goes through: ids in paths, the JSON body, text that no
database stores, pagination, list envelopes."""
from dataclasses import dataclass
from urllib.parse import quote

from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from core.errors import BadRequest, NotFound, ValidationFailed
from core.identifiers import ID_MAX

#: Deeper JSON than this is no request of ours; Python's parser would hit its recursion limit at ~1,000.
MAX_JSON_DEPTH = 32
#: I-JSON (RFC 7493): integers beyond ±(2^53 − 1) do not survive a JavaScript client, nor fit every column.
MAX_JSON_INTEGER = 2**53 - 1
TEXT_REFUSED = "含有无法保存的字符（如 NUL 或不成对的代理字符）"


def unstorable(text: str) -> bool:
    """True for text no database column keeps: NUL (PostgreSQL refuses it) or a lone surrogate
    (not encodable as UTF-8)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def refuse_unusable_input() -> None:
    """Before every request, for every route at once: an ``<int:…>`` id in the path past the
    largest row id is a 404 (it names no row, and PostgreSQL would refuse to compare it with an
    ``integer`` column); a NUL in the path, query or form is a 400.

    (Werkzeug decodes these with replacement characters, so lone surrogates only arrive in JSON,
    which ``json_body`` checks field by field. The id check is here, not in a route converter:
    a converter that refuses a value makes Werkzeug answer 405 instead of 404.)

    :raise NotFound: an id past ``ID_MAX``. :raise BadRequest: code ``invalid_characters``, or
        ``malformed_form`` for a multipart part without a usable name.
    """
    if any(isinstance(value, int) and value > ID_MAX for value in (request.view_args or {}).values()):
        raise NotFound()
    values = [request.path, *request.args.keys(), *request.args.values()]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            values += [*request.form.keys(), *request.form.values(), *request.files.keys()]
        except RequestEntityTooLarge:
            pass  # raised again when the view reads the form; uploads answer it in their own words
    if any(value is None for value in values):
        # Werkzeug keys a multipart part whose Content-Disposition name does not parse (an
        # unterminated quote) as None: no field of any form, and a crash in whoever reads it.
        raise BadRequest("表单中有无法识别名称的部分", code="malformed_form")
    if any(unstorable(value) for value in values):
        raise BadRequest(f"请求{TEXT_REFUSED}", code="invalid_characters")


def json_body() -> dict:
    """Return the request's JSON object, every string storable and every number in range.

    :raise BadRequest: not valid JSON, not a JSON object, or nested deeper than ``MAX_JSON_DEPTH``
        (400 by contract).
    :raise ValidationFailed: a string with NUL or a lone surrogate, or an integer beyond
        ``MAX_JSON_INTEGER``; ``fields`` names where (422).
    """
    try:
        data = request.get_json(silent=True, force=True)
    except RecursionError:  # silent=True covers ValueError only
        data = None
    if not isinstance(data, dict):
        raise BadRequest()
    problems = json_problems(data)
    if problems is None:
        raise BadRequest(f"JSON 嵌套超过 {MAX_JSON_DEPTH} 层", code="malformed_json")
    if problems:
        raise ValidationFailed(fields=problems)
    return data


def json_problems(data) -> dict | None:
    """Field errors for unstorable strings and out-of-range integers anywhere in ``data``
    (keyed by dotted path), or None when it nests deeper than ``MAX_JSON_DEPTH``.

    Iterative, so a hostile depth cannot exhaust the stack."""
    problems: dict[str, list[str]] = {}
    stack = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return None
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else str(key)
                if unstorable(key):
                    problems[child.encode("utf-8", "replace").decode("utf-8")] = [f"字段名{TEXT_REFUSED}"]
                    continue
                stack.append((child, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}" if path else str(index), item, depth + 1)
                         for index, item in enumerate(value))
        elif isinstance(value, str) and unstorable(value):
            problems[path] = [TEXT_REFUSED]
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INTEGER:
            problems[path] = ["数值超出允许范围"]
    return problems


@dataclass(frozen=True)
class Page:
    """A requested page: 1-based number and size."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


MAX_PAGE = 1_000_000


def page_params(max_per_page: int = 500, default_per_page: int = 50) -> Page:
    """Parse ``?page=&per_page=`` with the contract's bounds.

    :raise ValidationFailed: non-integer, below 1, or per_page above ``max_per_page``.
    """
    errors = {}
    values = {}
    # A page number past a million is never a real request, and its offset would overflow the database.
    for name, default, upper in (("page", 1, MAX_PAGE), ("per_page", default_per_page, max_per_page)):
        raw = request.args.get(name)
        if raw is None or raw == "":
            values[name] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            errors[name] = ["必须是整数"]
            continue
        if value < 1 or value > upper:
            errors[name] = [f"必须在 1 到 {upper} 之间"]
            continue
        values[name] = value
    if errors:
        raise ValidationFailed(fields=errors)
    return Page(values["page"], values["per_page"])


def list_envelope(items: list, total: int, page: Page, **extra) -> dict:
    """Return the contract's list body ``{"items", "total", "page", "per_page"}``."""
    return {"items": items, "total": total, "page": page.number, "per_page": page.size, **extra}


DOWNLOAD_TYPES = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8",
                  "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def file_download(content: bytes, filename: str, sha256: str | None = None) -> Response:
    """A PDF, CSV or XLSX as a download with its Chinese file name (RFC 6266/5987, ASCII fallback)
    and, when given, its SHA-256 in ``X-Content-SHA256`` so a filed copy can be checked."""
    extension = filename.rsplit(".", 1)[1]
    response = Response(content, mimetype=DOWNLOAD_TYPES[extension])
    response.headers["Content-Disposition"] = (f"attachment; filename=\"download.{extension}\"; "
                                               f"filename*=UTF-8''{quote(filename)}")
    response.headers["Cache-Control"] = "private, no-store"
    if sha256:
        response.headers["X-Content-SHA256"] = sha256
    return response
