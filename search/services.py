"""Search use cases: find sellable products, keep the index fresh, rebuild it.

The index may lag the database (a missed signal, a deferred write, another process mid-commit),
so every page of results is checked again against the brand gate before it is shown: a revoked
or expired product is gone on the next request whatever the index says.
"""
import logging
import os
import threading
import time
from dataclasses import dataclass, replace

import sqlalchemy as sa
from flask import current_app, has_app_context
from markupsafe import Markup, escape

from certification.gate import sellable_clause
from certification.models import CATEGORY_LABELS, EVIDENCE_TYPE_LABELS, Product
from core.errors import AppError
from core.extensions import db
from core.timeutil import shanghai_today
from search import documents, text
from search.engine import IndexUnavailable, SearchEngine, SearchRequest
from search.indexer import BackgroundIndexer, indexer_for
from search.whoosh_engine import WhooshEngine
from traceability.services import available_quantities

log = logging.getLogger(__name__)

# A search waits at most this long for this process's queued index writes (read your writes).
FLUSH_TIMEOUT = 5.0
# A corrupt index is rebuilt at most this often per process; in between, search answers 503.
FORCED_REBUILD_INTERVAL = 300.0
_last_forced_rebuild = 0.0
_rebuild_guard = threading.Lock()


class SearchUnavailable(AppError):
    status, code, message = 503, "search_unavailable", "搜索暂时不可用，请稍后再试"


@dataclass
class SearchItem:
    """One result: the product (fresh from the database), its marked snippet and stock."""

    product: Product
    highlight: Markup
    name_html: Markup
    available: int


@dataclass
class SearchPage:
    """A page of results with exact counts over all of them."""

    items: list[SearchItem]
    total: int
    facets: dict[str, dict[str, int]]
    page: int
    per_page: int
    suggestion: str | None
    terms: list[str]


@dataclass
class RebuildReport:
    """What ``search rebuild`` did."""

    indexed: int
    seconds: float
    reindexed_after: int


def background_indexer(app=None) -> BackgroundIndexer:
    """This app's background indexer (one writer thread per worker process)."""
    return indexer_for(app or current_app._get_current_object(), reindex_products)


def flush_indexing(timeout: float = FLUSH_TIMEOUT) -> bool:
    """Wait for this process's queued index writes; False if they did not finish in time."""
    return background_indexer().flush(timeout)


def in_background() -> bool:
    """Whether index writes go to the background indexer (``SEARCH_BACKGROUND_INDEXING``).

    On by default; off under ``TESTING``, where the write happens inside the signal: a test's
    teardown truncates every table, and a reader thread still at work would deadlock with it.
    """
    return bool(current_app.config.get("SEARCH_BACKGROUND_INDEXING", not current_app.testing))


def schedule_reindex(product_ids) -> None:
    """Re-index these products (and deferred ones) in the background, or now if that is off."""
    if in_background():
        background_indexer().submit(product_ids)
    else:
        reindex_products(product_ids)


def warm_up(app) -> None:
    """Take the first-query costs off the first visitor of a new worker: load jieba and the
    project's words, open the index and fill its caches (0.3-0.9 s, see docs/benchmarks.md).

    Run on a background thread when a server worker starts (``gunicorn.conf.py``); never raises.
    """
    if "SEARCH_INDEX_DIR" not in app.config:
        return  # not this service's app
    started = time.perf_counter()
    try:
        with app.app_context():
            text.ensure_dictionary()
            text.query_words("古丈毛尖")  # jieba builds its prefix dictionary on first use
            documents_seen = get_engine(app).warm_up(shanghai_today())
    except Exception:
        log.exception("search: warm-up failed (the first query will pay for it)")
        return
    log.info("search: warmed up over %d products in %.2f s", documents_seen, time.perf_counter() - started)


def get_engine(app=None) -> SearchEngine:
    """The app's search engine over ``SEARCH_INDEX_DIR`` (one per app and directory).

    The one place that names the implementation: a server engine implementing
    ``search.engine.SearchEngine`` replaces Whoosh here.
    """
    app = app or current_app
    engine = app.extensions.get("search_engine")
    directory = app.config["SEARCH_INDEX_DIR"]
    if engine is None or engine.root != os.path.abspath(directory):
        engine = WhooshEngine(directory, writer_timeout=float(app.config.get("SEARCH_WRITER_TIMEOUT", 10.0)))
        app.extensions["search_engine"] = engine
    return engine


# -- querying ------------------------------------------------------------------------------

def search_products(params: dict) -> SearchPage:
    """Search sellable products with the validated ``params`` of ``SearchQuerySchema``."""
    engine = get_engine()
    flush_indexing()
    if not engine.is_ready():
        rebuild_index(skip_if_ready=True)
    elif engine.has_deferred():
        # Writes failed earlier (index busy): apply them before answering.
        schedule_reindex(())
        flush_indexing()
    page, per_page = params["page"], params["per_page"]
    request = SearchRequest(
        text=params["q"], county=params["county"], category=params["category"],
        evidence_type=params["evidence_type"], in_stock=params["in_stock"], sort=params["sort"],
        offset=(page - 1) * per_page, limit=per_page, today=shanghai_today(),
    )
    excluded: set[int] = set()
    for _ in range(3):
        hits = _query(engine, replace(request, exclude_ids=frozenset(excluded)))
        products = _sellable(hits.product_ids)
        stale = set(hits.product_ids) - products.keys()
        if not stale:
            break
        # The index still lists products the gate refuses: leave them out of this answer
        # (counts included) and correct the index for the next one.
        log.info("search index lagged for products %s; re-indexing them", sorted(stale))
        excluded |= stale
        schedule_reindex(stale)
    ids = [pid for pid in hits.product_ids if pid in products]
    stock = available_quantities(ids)
    items = [_item(products[pid], hits.terms, stock.get(pid, 0)) for pid in ids]
    return SearchPage(items=items, total=hits.total, facets=hits.facets, page=page, per_page=per_page,
                      suggestion=hits.suggestion, terms=hits.terms)


def _query(engine: SearchEngine, request: SearchRequest):
    """Run the engine query; rebuild a missing or unreadable index once and retry."""
    try:
        return engine.query(request)
    except IndexUnavailable:
        log.warning("search index unavailable; rebuilding", exc_info=True)
    global _last_forced_rebuild
    with _rebuild_guard:
        if engine.is_ready() and time.monotonic() - _last_forced_rebuild < FORCED_REBUILD_INTERVAL:
            raise SearchUnavailable()
        _last_forced_rebuild = time.monotonic()
        rebuild_index()
    try:
        return engine.query(request)
    except IndexUnavailable as exc:
        log.error("search index unreadable after a rebuild: %s", exc)
        raise SearchUnavailable() from exc


def _sellable(product_ids: list[int]) -> dict[int, Product]:
    """The products among ``product_ids`` that the brand gate allows today, by id."""
    if not product_ids:
        return {}
    rows = db.session.scalars(sa.select(Product).where(Product.id.in_(product_ids), sellable_clause()))
    return {product.id: product for product in rows}


def place_line(product: Product) -> str:
    """Where a product comes from, for people: 古丈县 默戎镇 牛角山村 (several villages joined by 、)."""
    return "、".join(f"{v.county} {v.township} {v.name}" for v in product.villages)


def _item(product: Product, terms: list[str], available: int) -> SearchItem:
    """Build a result with a snippet showing why it matched (name first)."""
    name_html = text.highlight(product.name, terms) or escape(product.name)
    snippet = None
    if terms:
        candidates = ((product.name, None), (place_line(product), None),
                      (product.cooperative.name if product.cooperative else "", None),
                      (product.category_label, None), (product.description or "", 60))
        for content, window in candidates:
            snippet = text.highlight(content, terms, window=window)
            if snippet:
                break
    return SearchItem(product=product, highlight=snippet or escape(product.name), name_html=name_html,
                      available=available)


def facet_labels() -> dict[str, dict[str, str]]:
    """Chinese labels of facet values that are codes (category, evidence type)."""
    return {"category": dict(CATEGORY_LABELS), "evidence_type": dict(EVIDENCE_TYPE_LABELS)}


# -- keeping the index fresh ------------------------------------------------------------------

def reindex_products(product_ids) -> bool:
    """Write the current state of these products (and any deferred ones) to the index.

    Sellable products are added or replaced, the others deleted. Returns False when the write
    was deferred because the index was busy; the ids are then kept for the next write.
    """
    engine = get_engine()
    ids = {int(pid) for pid in product_ids} | engine.take_deferred_ids()
    if not ids:
        return True
    try:
        docs, remove = documents.documents_for(ids)
        return engine.index_products(docs, remove)
    except IndexUnavailable:
        # No index yet (or a broken one): the next search rebuilds it from the database,
        # which includes these products.
        engine.defer(ids)
        return False
    except Exception:
        engine.defer(ids)
        raise


def on_products_changed(sender, product_ids=(), **extra) -> None:
    """Receiver of ``core.signals.products_changed``: hand the products to the indexer.

    Never raises and never waits for the index (signals run inside the request that made the
    change); the query-time gate keeps results correct meanwhile.
    """
    if not has_app_context():
        return
    try:
        schedule_reindex(product_ids)
    except Exception:
        log.exception("search: re-indexing products %s failed", list(product_ids))


def rebuild_index(skip_if_ready: bool = False) -> RebuildReport | None:
    """Rebuild the whole index from the database, swap it in, then apply changes made meanwhile.

    :param skip_if_ready: do nothing if a usable index exists (another process just built it).
    """
    engine = get_engine()
    started = time.perf_counter()
    indexed = engine.rebuild(documents.all_documents(), skip_if_ready=skip_if_ready)
    if indexed is None:
        return None
    # Products changed while the rebuild read the database deferred their ids; apply them now.
    pending = engine.take_deferred_ids()
    if pending:
        reindex_products(pending)
    return RebuildReport(indexed=indexed, seconds=time.perf_counter() - started, reindexed_after=len(pending))
