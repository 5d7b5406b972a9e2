"""Small helpers every API view uses: the JSON body, pagination, list envelopes."""
from dataclasses import dataclass

from flask import request

from core.errors import BadRequest, ValidationFailed


def json_body() -> dict:
    """Return the request's JSON object.

    :raise BadRequest: the body is not valid JSON or not a JSON object (400 by contract).
    """
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        raise BadRequest()
    return data


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
