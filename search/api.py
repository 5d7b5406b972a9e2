"""Search JSON API: ``GET /api/v1/search`` (public; sellable products only)."""
from flask import Blueprint, jsonify, request

from core.openapi import api_doc, api_tag
from search import services
from search.schemas import SearchQuerySchema, SearchResultsSchema, dump_page

bp = Blueprint("search_api", __name__, url_prefix="/api/v1")
api_tag(bp, "搜索", "在售产品的中文、全拼与首字母搜索")


@bp.get("/search")
@api_doc(query=SearchQuerySchema, response=SearchResultsSchema, errors=(503,))
def search():
    """Search sellable products by Chinese words, pinyin or initials, with filters and facets."""
    params = SearchQuerySchema().load(request.args)
    page = services.search_products(params)
    return jsonify(dump_page(page, services.facet_labels()))
