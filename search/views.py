"""Storefront search page: ``/search`` with a search box, filters with counts and marked results."""
from flask import Blueprint, current_app, render_template, request, url_for
from marshmallow import ValidationError

from certification.models import CATEGORY_LABELS, EVIDENCE_TYPE_LABELS
from core.navigation import register_nav
from core.village_registry import COUNTIES
from search import services
from search.schemas import DEFAULT_PER_PAGE, SearchQuerySchema

bp = Blueprint("search", __name__)

register_nav("search.search_page", "搜索", order=5)

SORT_LABELS = {"relevance": "综合排序", "newest": "最新上架", "price_asc": "价格从低到高", "price_desc": "价格从高到低"}
FIELD_LABELS = {"q": "关键词", "county": "县市", "category": "品类", "evidence_type": "认证类型",
                "in_stock": "只看有货", "sort": "排序", "page": "页码", "per_page": "每页数量"}
# Parameters a search link keeps; page is dropped whenever a filter changes.
_KEPT = ("q", "county", "category", "evidence_type", "in_stock", "sort", "per_page")


# Where a result links to: the shop's product page (to buy), else the catalogue entry.
_PRODUCT_PAGES = ("shop.product_page", "certification.product_page")


def _product_url(product_id: int) -> str | None:
    """The public page of a product, from the first installed of ``_PRODUCT_PAGES``."""
    for endpoint in _PRODUCT_PAGES:
        if endpoint in current_app.view_functions:
            return url_for(endpoint, product_id=product_id)
    return None


def _thumbnail_url(product) -> str | None:
    """The first photo's thumbnail (stored beside it with an ``-s.jpg`` suffix), if any."""
    if not product.images or "certification.product_image" not in current_app.view_functions:
        return None
    return url_for("certification.product_image", name=product.images[0].filename[:-4] + "-s.jpg")


@bp.get("/search")
def search_page():
    """Search sellable products; bad parameters show what to fix (422)."""
    form = {key: value for key, value in request.args.items() if value.strip()}

    def search_url(**changes) -> str:
        """This search with some parameters changed (None removes one); back to page 1 unless given."""
        args = {key: form[key] for key in _KEPT if key in form}
        for key, value in changes.items():
            if value is None:
                args.pop(key, None)
            else:
                args[key] = value
        return url_for("search.search_page", **args)

    context = {"form": form, "search_url": search_url, "counties": COUNTIES, "categories": CATEGORY_LABELS,
               "evidence_labels": EVIDENCE_TYPE_LABELS, "sort_labels": SORT_LABELS, "field_labels": FIELD_LABELS,
               "product_url": _product_url, "thumbnail_url": _thumbnail_url, "place_line": services.place_line}
    try:
        params = SearchQuerySchema().load(request.args)
    except ValidationError as exc:
        return render_template("search/results.html", result=None, params=None, errors=exc.messages, **context), 422
    result = services.search_products(params)
    pages = max(1, -(-result.total // result.per_page))
    return render_template("search/results.html", result=result, params=params, errors={}, pages=pages,
                           default_per_page=DEFAULT_PER_PAGE, **context)
