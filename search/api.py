"""Search JSON API: ``GET /api/v1/search`` (public; sellable products only)."""
from flask import Blueprint, jsonify, request

from search import services
from search.schemas import SearchQuerySchema, dump_page

bp = Blueprint("search_api", __name__, url_prefix="/api/v1")


@bp.get("/search")
def search():
    """Search sellable products by Chinese words, pinyin or initials, with filters and facets."""
    params = SearchQuerySchema().load(request.args)
    page = services.search_products(params)
    return jsonify(dump_page(page, services.facet_labels()))
