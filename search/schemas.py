"""Search parameters in, search results out (the contract's "Search" shape plus extras)."""
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate, validates

from certification.models import CATEGORY_LABELS, EVIDENCE_TYPE_LABELS
from core.village_registry import COUNTIES
from search.engine import SORTS

MAX_PER_PAGE = 50
DEFAULT_PER_PAGE = 20
# Deep pages are not browsing any more; the bound keeps one request's work bounded.
MAX_PAGE = 200
MAX_QUERY_LENGTH = 64

_CATEGORY_BY_LABEL = {label: code for code, label in CATEGORY_LABELS.items()}


class SearchQuerySchema(Schema):
    """``?q=&county=&category=&evidence_type=&in_stock=&sort=&page=&per_page=``."""

    class Meta:
        unknown = EXCLUDE  # links carry tracking parameters; they are not errors

    q = fields.String(load_default="", validate=validate.Length(max=MAX_QUERY_LENGTH,
                                                                 error=f"最多 {MAX_QUERY_LENGTH} 个字符"))
    county = fields.String(load_default=None, validate=validate.OneOf(COUNTIES, error="没有这个县市"))
    # A category code (tea) or its Chinese label (茶叶).
    category = fields.String(load_default=None, metadata={
        "enum": list(CATEGORY_LABELS), "description": "品类代码；也可直接填中文名称（如 茶叶）"})
    evidence_type = fields.String(load_default=None,
                                  validate=validate.OneOf(tuple(EVIDENCE_TYPE_LABELS), error="没有这种认证类型"))
    in_stock = fields.Boolean(load_default=False, error_messages={"invalid": "必须是 true 或 false"})
    sort = fields.String(load_default="relevance", validate=validate.OneOf(SORTS, error="排序方式无效"))
    page = fields.Integer(load_default=1, strict=False,
                          validate=validate.Range(min=1, max=MAX_PAGE, error=f"必须在 1 到 {MAX_PAGE} 之间"),
                          error_messages={"invalid": "必须是整数"})
    per_page = fields.Integer(load_default=DEFAULT_PER_PAGE,
                              validate=validate.Range(min=1, max=MAX_PER_PAGE, error=f"必须在 1 到 {MAX_PER_PAGE} 之间"),
                              error_messages={"invalid": "必须是整数"})

    @pre_load
    def _blank_is_absent(self, data, **kwargs):
        """A form submits empty selects as ``county=``: treat blank values as not given."""
        values = {key: data.get(key) for key in data.keys()}
        return {key: value.strip() for key, value in values.items() if isinstance(value, str) and value.strip()}

    @validates("category")
    def _known_category(self, value, **kwargs):
        """Accept a category code or its label."""
        if value is not None and value not in CATEGORY_LABELS and value not in CATEGORY_LABELS and value not in _CATEGORY_BY_LABEL:
            raise ValidationError("没有这个品类")

    @post_load
    def _category_code(self, data, **kwargs):
        """Filter by the code whatever was given."""
        if data.get("category") in _CATEGORY_BY_LABEL:
            data["category"] = _CATEGORY_BY_LABEL[data["category"]]
        return data


def dump_page(page, labels: dict) -> dict:
    """The contract's body ``{"items", "total", "facets"}`` with page, suggestion and labels."""
    return {
        "items": [
            {
                "product_id": item.product.id,
                "name": item.product.name,
                "highlight": str(item.highlight),
                "category": item.product.category,
                "price_fen": int(item.product.price_fen),
                "unit": item.product.unit,
                "specification": item.product.specification,
                "available_quantity": item.available,
                "cooperative": {"id": item.product.cooperative_id,
                                "name": item.product.cooperative.name if item.product.cooperative else None},
                "villages": [{"id": v.id, "name": v.name, "township": v.township, "county": v.county}
                             for v in item.product.villages],
            }
            for item in page.items
        ],
        "total": page.total,
        "facets": {"county": page.facets["county"], "category": page.facets["category"],
                   "evidence_type": page.facets["evidence_type"]},
        "page": page.page,
        "per_page": page.per_page,
        "suggestion": page.suggestion,
        "facet_labels": labels,
    }


class SearchResultsSchema(Schema):
    """The answer of ``GET /api/v1/search`` (``dump_page``), for the OpenAPI document."""

    items = fields.List(fields.Dict(), metadata={
        "description": "{product_id, name, highlight, category, price_fen, unit, specification, available_quantity, "
                       "cooperative, villages}"})
    total = fields.Integer()
    facets = fields.Dict(metadata={"description": "{county: {名称: 数量}, category: {...}, evidence_type: {...}}"})
    page = fields.Integer()
    per_page = fields.Integer()
    suggestion = fields.String(allow_none=True)
    facet_labels = fields.Dict()
