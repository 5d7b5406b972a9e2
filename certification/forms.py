"""HTML forms → the same input dicts the JSON API takes, so pages and API share one validation.

People type prices in 元 ("128" or "128.50"); the services take integer fen.
"""
from werkzeug.datastructures import MultiDict

from certification.models import EVIDENCE_TYPE_LABELS
from core.identifiers import whole_number
from core.money import parse_yuan

TIER_ROWS = 3
EVIDENCE_ROWS = 3
PRODUCT_TEXT_FIELDS = ("name", "category", "description", "unit", "specification")


class FormErrors(Exception):
    """Input a form could not even turn into a request; ``fields`` maps names to messages."""

    def __init__(self, fields: dict):
        super().__init__("表单有误")
        self.fields = fields


def _int_or_none(text: str | None) -> int | None | str:
    """Parse a positive whole number; return the text itself when it is not one (for the error)."""
    text = (text or "").strip()
    if not text:
        return None
    number = whole_number(text)
    return text if number is None else number


def product_form_data(form: MultiDict) -> dict:
    """Turn the product form into the API's product dict (only the fields the form carried).

    :raise FormErrors: a price or quantity that is not a number.
    """
    data: dict = {}
    errors: dict[str, list[str]] = {}
    for key in PRODUCT_TEXT_FIELDS:
        if key in form:
            data[key] = form.get(key, "")
    if "gtin" in form:
        data["gtin"] = form.get("gtin", "").strip() or None
    if "price_yuan" in form:
        fen = parse_yuan(form.get("price_yuan", ""))
        if fen is None or fen <= 0:
            errors["price_fen"] = ["请填写价格，如 128 或 128.50（元）"]
        else:
            data["price_fen"] = fen
    if form.get("village_ids_field"):
        ids = []
        for raw in form.getlist("village_ids"):
            if whole_number(raw) is not None:
                ids.append(whole_number(raw))
        data["village_ids"] = ids
    if form.get("bulk_field"):
        moq = _int_or_none(form.get("bulk_moq"))
        tiers = []
        for row in range(TIER_ROWS):
            qty = _int_or_none(form.get(f"tier_qty_{row}"))
            price_text = (form.get(f"tier_price_{row}") or "").strip()
            if qty is None and not price_text:
                continue
            price = parse_yuan(price_text)
            if price is None or price <= 0 or not isinstance(qty, int):
                errors.setdefault("bulk", []).append(f"第 {row + 1} 档：请填写起购数量（整数）和单价（元）")
                continue
            tiers.append({"min_qty": qty, "price_fen": price})
        if moq is None and not tiers:
            data["bulk"] = None
        elif not isinstance(moq, int):
            errors.setdefault("bulk", []).append("起订量须为正整数")
        else:
            data["bulk"] = {"moq": moq, "tiers": tiers}
    if errors:
        raise FormErrors(errors)
    return data


def application_form_data(form: MultiDict, files: MultiDict) -> tuple[dict, dict, list[int]]:
    """Turn the apply/renew form into ``({"evidence": [...]}, {index: file stream}, form rows)``.

    Rows left entirely blank are skipped; a scan belongs to the row it was chosen in; the
    third value maps each evidence index back to its form row (for placing error messages).
    """
    evidence = []
    scans = {}
    rows = []
    for row in range(EVIDENCE_ROWS):
        values = {key: (form.get(f"ev_{key}_{row}") or "").strip() for key in ("number", "issuer", "valid_until")}
        upload = files.get(f"ev_file_{row}")
        has_file = upload is not None and bool(upload.filename)
        if not any(values.values()) and not has_file:
            continue
        item = {"type": form.get(f"ev_type_{row}") or "", "number": values["number"], "issuer": values["issuer"],
                "valid_until": values["valid_until"] or None}
        if has_file:
            scans[len(evidence)] = upload.stream
        evidence.append(item)
        rows.append(row)
    return {"evidence": evidence}, scans, rows


def errors_by_row(errors: dict, rows: list[int]) -> dict:
    """Re-key evidence errors from evidence indexes to the form rows they came from."""
    def row_of(index):
        return rows[index] if isinstance(index, int) and 0 <= index < len(rows) else index

    fixed = {}
    for key, value in errors.items():
        if key == "evidence" and isinstance(value, dict):
            fixed[key] = {row_of(index): messages for index, messages in value.items()}
        elif key.startswith("evidence.") and key.endswith(".file") and key.split(".")[1].isdigit():
            fixed[f"evidence.{row_of(int(key.split('.')[1]))}.file"] = value
        else:
            fixed[key] = value
    return fixed


def evidence_type_choices() -> list[tuple[str, str]]:
    """(code, label) pairs for the evidence type select."""
    return list(EVIDENCE_TYPE_LABELS.items())
