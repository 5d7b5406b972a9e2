"""The small interface between the search services and whatever engine holds the index.

Why an interface: Whoosh runs inside each web worker on one machine. When the catalogue or the
traffic outgrows that, a server engine (see the README's "Search" paragraph) can implement this
protocol and the services, API and pages stay as they are.
"""
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Iterator, Protocol

# Orders a search can return; "relevance" falls back to "newest" for an empty query.
SORTS = ("relevance", "price_asc", "price_desc", "newest")


def date_key(day: date) -> int:
    """A date as the sortable integer yyyymmdd that documents carry."""
    return day.year * 10000 + day.month * 100 + day.day


@dataclass(frozen=True)
class ProductDocument:
    """What the index knows about one product (built from the database by search.documents)."""

    product_id: int
    name: str
    description: str
    category: str
    category_label: str
    cooperative: str
    counties: tuple[str, ...]
    townships: tuple[str, ...]
    villages: tuple[str, ...]
    evidence_types: tuple[str, ...]
    price_fen: int
    available: int
    # Certificate validity as yyyymmdd integers: the query drops a product outside it.
    valid_from: int
    valid_until: int


@dataclass(frozen=True)
class SearchRequest:
    """One query: free text, exact filters, order and the slice wanted."""

    text: str = ""
    county: str | None = None
    category: str | None = None
    evidence_type: str | None = None
    in_stock: bool = False
    sort: str = "relevance"
    offset: int = 0
    limit: int = 20
    today: date | None = None
    # Products known (from the database) to be unsellable although the index still has them.
    exclude_ids: frozenset[int] = frozenset()


@dataclass
class SearchHits:
    """What the engine answers: the slice's product ids in order, exact counts, terms to mark."""

    product_ids: list[int]
    total: int
    facets: dict[str, dict[str, int]]
    terms: list[str] = field(default_factory=list)
    suggestion: str | None = None


class IndexUnavailable(Exception):
    """The index is missing or cannot be read; the caller should rebuild it."""


class SearchEngine(Protocol):
    """What the search services need from an engine."""

    def is_ready(self) -> bool:
        """True when an index exists and opens."""

    def index_products(self, documents: Iterable[ProductDocument], remove_ids: Iterable[int] = ()) -> bool:
        """Add or replace these documents and drop ``remove_ids``; False if deferred (busy)."""

    def rebuild(self, documents: Iterator[ProductDocument], skip_if_ready: bool = False) -> int | None:
        """Replace the whole index with ``documents`` atomically; return how many were indexed
        (None when ``skip_if_ready`` and another process had just built it)."""

    def has_deferred(self) -> bool:
        """True when some product ids wait to be re-indexed."""

    def take_deferred_ids(self) -> set[int]:
        """Return and forget product ids whose update was deferred while the index was busy."""

    def defer(self, product_ids: Iterable[int]) -> None:
        """Remember product ids to re-index at the next write."""

    def query(self, request: SearchRequest) -> SearchHits:
        """Run a search; raise IndexUnavailable when the index cannot be read."""

    def doc_count(self) -> int:
        """Number of documents in the index."""

    def close(self) -> None:
        """Release this thread's readers."""
