"""The Whoosh search engine: one index directory on the machine, shared by every worker process.

Layout of ``SEARCH_INDEX_DIR``::

    current -> gen-<time>-<pid>/   symlink to the live Whoosh index (swapped atomically by rebuild)
    gen-.../                        Whoosh files; the previous generation is kept for open readers
    deferred_ids                    product ids whose update could not be written (index busy)
    rebuild.lock                    held shared by writers, exclusively by a rebuild

How a query runs, and why not through Whoosh's collector: exact totals and facet counts need
every hit, and Whoosh scores every hit it collects in pure Python (~10 µs a hit, 100+ ms for a
common word on 50,000 products). Here each index segment keeps its posting lists as cached
integer bitmaps; a query is AND/OR of bitmaps (C speed) per segment, each facet count is one
AND and a popcount, and ranking groups the hits by the fields they matched in, with bitmaps
too. Segments never change except for deletions, so the caches survive commits; only new
small segments are read afresh.
"""
import errno
import fcntl
import heapq
import logging
import math
import os
import shutil
import struct
import threading
import time
import weakref
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Iterator

from whoosh import index as whoosh_index
from whoosh.columns import NumericColumn
from whoosh.fields import COLUMN, ID, KEYWORD, NUMERIC, TEXT, Schema
from whoosh.index import LockError
from whoosh.reading import SegmentReader

from core.timeutil import shanghai_today
from search import text
from search.engine import IndexUnavailable, ProductDocument, SearchHits, SearchRequest, date_key

log = logging.getLogger(__name__)

# Chinese text fields, name first. Boosts make a match in the name outrank one in the place,
# the cooperative or the description.
TEXT_FIELDS = ("name", "category_text", "place", "cooperative", "description")
PINYIN_FIELDS = ("name_pinyin", "name_initials", "place_pinyin", "place_initials")
FIELD_BOOSTS = {
    "name": 8.0, "name_pinyin": 6.0, "name_initials": 5.0,
    "category_text": 3.0, "place": 2.5, "place_pinyin": 2.0, "place_initials": 1.5,
    "cooperative": 1.5, "description": 1.0, "chars": 0.5,
}
FACET_FIELDS = ("county", "category", "evidence_type")
# Bump when build_schema() or document_fields() change: an index built by other code is then
# treated as unusable and rebuilt, instead of failing every write with unknown fields.
SCHEMA_VERSION = "1"
# Latin prefixes expand to at most this many pinyin terms ("maoj" → maojian, ...).
MAX_PREFIX_TERMS = 40
# Posting bitmaps kept per segment (one bit per document: 6 KiB for 50,000 documents).
POSTING_CACHE_ENTRIES = 4096
# Below this many hits a page is picked by a heap over the hits; above it by walking the
# segment's pre-sorted order until the page is full.
HEAP_LIMIT = 2000


def _int_column() -> COLUMN:
    """A signed 64-bit integer per document, kept as a column only.

    Why not ``NUMERIC(sortable=True)``: that also indexes several range terms per value, which
    nothing here queries (filters and sorts read the columns), at a cost on every document.
    """
    return COLUMN(NumericColumn("q", default=0))


def build_schema() -> Schema:
    """The index schema: analysed text, pinyin and initials terms, exact facets, integer columns."""
    analyzer = text.index_analyzer()
    return Schema(
        product_id=ID(stored=True, unique=True),
        pid=_int_column(),
        name=TEXT(analyzer=analyzer, phrase=False),
        category_text=TEXT(analyzer=analyzer, phrase=False),
        place=TEXT(analyzer=analyzer, phrase=False),
        cooperative=TEXT(analyzer=analyzer, phrase=False),
        description=TEXT(analyzer=analyzer, phrase=False),
        # scorable=True although nothing is scored with Whoosh: without a length column Whoosh's
        # segment writer stats a file for every posting of the field (a third of indexing time).
        name_pinyin=KEYWORD(scorable=True),
        name_initials=KEYWORD(scorable=True),
        place_pinyin=KEYWORD(scorable=True),
        place_initials=KEYWORD(scorable=True),
        chars=KEYWORD(scorable=True),
        county=KEYWORD(scorable=True),
        category=ID(),
        evidence_type=KEYWORD(scorable=True),
        # Money is integer fen: Whoosh's float columns crash (struct.error) and floats are wrong for money.
        price_fen=_int_column(),
        available=_int_column(),
        name_length=_int_column(),
        valid_from=_int_column(),
        valid_until=_int_column(),
    )


def document_fields(doc: ProductDocument) -> dict:
    """Turn a product document into Whoosh field values."""
    # The analyzer runs inside writer.add_document: jieba must know the project's words by then,
    # or this process would cut names differently from the processes that query.
    text.ensure_dictionary()
    place_text = " ".join(dict.fromkeys(doc.counties + doc.townships + doc.villages))
    name_full, name_initials = text.pinyin_terms(doc.name)
    place_full, place_initials = text.pinyin_terms(f"{place_text} {doc.category_label}")
    chars = text.cjk_chars(f"{doc.name} {doc.category_label} {place_text}")
    return {
        "product_id": str(doc.product_id),
        "pid": doc.product_id,
        "name": doc.name,
        "category_text": doc.category_label,
        "place": place_text,
        "cooperative": doc.cooperative,
        "description": doc.description,
        "name_pinyin": " ".join(sorted(name_full)),
        "name_initials": " ".join(sorted(name_initials)),
        "place_pinyin": " ".join(sorted(place_full)),
        "place_initials": " ".join(sorted(place_initials)),
        "chars": " ".join(sorted(chars)),
        "county": " ".join(sorted(set(doc.counties))),
        "category": doc.category,
        "evidence_type": " ".join(sorted(set(doc.evidence_types))),
        "price_fen": int(doc.price_fen),
        "available": max(0, int(doc.available)),
        "name_length": len(doc.name),
        "valid_from": int(doc.valid_from),
        "valid_until": int(doc.valid_until),
    }


def int_column(reader: SegmentReader, fieldname: str) -> list[int]:
    """All values of an integer column of a segment, by docnum.

    Why not ``list(reader.column_reader(name))``: that decodes value by value in Python
    (~10 µs each, seconds for a 50,000-document segment on a cold worker); the column is a
    packed array of fixed-size big-endian integers, so one ``struct.unpack`` reads it all.
    """
    fieldtype = reader.schema[fieldname]
    column = reader.column_reader(fieldname, translate=False)
    try:
        count, typecode = column._count, column._typecode  # noqa: SLF001
        raw = column._dbfile.get(column._basepos, count * column._fixedlen)  # noqa: SLF001
        values = list(struct.unpack(f"!{count}{typecode}", raw))
        values.extend([column._default] * (column._doccount - count))  # noqa: SLF001
    except AttributeError:  # another column implementation: take the slow, public path
        return list(reader.column_reader(fieldname))
    if not isinstance(fieldtype, NUMERIC):
        return values
    if fieldtype.numtype is not int or fieldtype.decimal_places:
        return [fieldtype.from_column_value(value) for value in values]
    offset = 1 << (fieldtype.bits - 1) if fieldtype.signed else 0
    return [value - offset for value in values]


def posting_ids(matcher) -> list[int]:
    """All document numbers of a fresh postings matcher, a block at a time when possible.

    ``matcher.all_ids()`` yields ids one by one through several Python calls each; Whoosh's
    W3 postings keep each block's ids in an array that can be taken whole.
    """
    if not all(hasattr(matcher, name) for name in ("_read_ids", "_next_block", "_ids", "_i")):
        return list(matcher.all_ids())
    ids: list[int] = []
    while matcher.is_active():
        if matcher._ids is None:  # noqa: SLF001
            matcher._read_ids()  # noqa: SLF001
        ids.extend(matcher._ids[matcher._i:])  # noqa: SLF001
        matcher._next_block()  # noqa: SLF001
    return ids


def bits_of(ids) -> int:
    """A set of document numbers as an integer bitmap (bit n set = document n).

    Why bitmaps: AND/OR/popcount of 50,000-bit integers run in C in microseconds, so totals
    and every facet count of a query cost almost nothing whatever the number of hits.
    """
    ids = list(ids)
    if not ids:
        return 0
    buffer = bytearray(max(ids) // 8 + 1)
    for doc in ids:
        buffer[doc >> 3] |= 1 << (doc & 7)
    return int.from_bytes(buffer, "little")


# For each byte value, the positions of its set bits.
_BYTE_BITS = tuple(tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256))


def ids_of(bits: int) -> list[int]:
    """The document numbers of a bitmap, ascending."""
    ids = []
    data = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    for index, byte in enumerate(data):
        if byte:
            base = index << 3
            ids.extend(base + bit for bit in _BYTE_BITS[byte])
    return ids


@dataclass
class _Clause:
    """One query word: a document matches it through any of the (field, term) alternatives."""

    word: str
    alternatives: list[tuple[str, str]]


@dataclass
class _SegmentCache:
    """What one Whoosh segment's immutable files give, shared by the threads of a process.

    Bitmaps are over segment-local document numbers and include deleted documents; a query
    always starts from ``live`` (live and valid today), which drops them.
    """

    segment_id: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    postings: OrderedDict = field(default_factory=OrderedDict)
    columns: dict = field(default_factory=dict)
    facets: dict | None = None
    allowed: tuple | None = None            # (yyyymmdd, bitmap of documents valid that day)
    live: tuple | None = None               # ((deleted count, yyyymmdd), bitmap of those still live)
    orders: dict = field(default_factory=dict)
    vocabulary: dict | None = None


@dataclass
class _Leaf:
    """An open segment reader and its caches."""

    reader: SegmentReader
    cache: _SegmentCache


_engines: "weakref.WeakSet[WhooshEngine]" = weakref.WeakSet()


def _forget_readers_after_fork() -> None:
    """In a forked child, drop the parent's readers without closing them (their file offsets
    are shared with the parent) and its locks (held, perhaps, by a thread that is not here)."""
    for engine in list(_engines):
        engine._local = threading.local()
        engine._segments_lock = threading.Lock()
        for cache in engine._segments.values():
            cache.lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_readers_after_fork)


class WhooshEngine:
    """A ``SearchEngine`` over a Whoosh index in ``root`` (safe for many processes)."""

    def __init__(self, root: str, writer_timeout: float = 10.0):
        """:param writer_timeout: seconds to wait for another process's writer before deferring."""
        self.root = os.path.abspath(root)
        self.writer_timeout = writer_timeout
        self._local = threading.local()
        self._segments: OrderedDict[str, _SegmentCache] = OrderedDict()
        self._segments_lock = threading.Lock()
        _engines.add(self)

    # -- paths and locks ---------------------------------------------------------------

    @property
    def _current_link(self) -> str:
        """Path of the ``current`` symlink."""
        return os.path.join(self.root, "current")

    def _current_dir(self) -> str | None:
        """The directory the ``current`` symlink points to, or None if there is none."""
        try:
            target = os.readlink(self._current_link)
        except OSError:
            return None
        return os.path.join(self.root, target)

    @contextmanager
    def _rebuild_lock(self, exclusive: bool):
        """Hold ``rebuild.lock``: shared (writers, never waiting) or exclusive (a rebuild, waiting).

        Yields False when a shared lock is refused because a rebuild is running.
        """
        os.makedirs(self.root, exist_ok=True)
        handle = open(os.path.join(self.root, "rebuild.lock"), "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    yield False
                    return
                raise
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()

    # -- opening and reading -----------------------------------------------------------

    def _open_index(self):
        """Open the live index or raise IndexUnavailable."""
        current = self._current_dir()
        if current is None:
            raise IndexUnavailable("no search index yet")
        try:
            with open(os.path.join(current, "schema_version")) as handle:
                version = handle.read().strip()
        except OSError:
            version = None
        if version != SCHEMA_VERSION:
            raise IndexUnavailable(f"{current} was built for schema {version}, this code needs {SCHEMA_VERSION}")
        try:
            return whoosh_index.open_dir(current)
        except Exception as exc:  # missing files, a truncated TOC, an unpicklable schema ...
            raise IndexUnavailable(f"cannot open {current}: {exc!r}") from exc

    def is_ready(self) -> bool:
        """True when the live index opens."""
        try:
            self._open_index().close()
        except IndexUnavailable:
            return False
        return True

    def _leaves(self) -> list[_Leaf]:
        """This thread's segment readers for the latest commit of the live index.

        Why not ``Searcher.refresh()``: Whoosh 2.7.5 reuses a segment's reader when only its
        deletions changed, so a deleted (revoked) product stays visible. Readers are reused
        here only when the segment *and* its deletion count are unchanged.
        """
        current = self._current_dir()
        if current is None:
            raise IndexUnavailable("no search index yet")
        local = self._local
        if getattr(local, "directory", None) != current:
            self.close()
            local.ix = self._open_index()
            local.directory, local.generation, local.readers, local.leaves = current, None, {}, []
        try:
            generation = local.ix.latest_generation()
            if generation == local.generation:
                return local.leaves
            for attempt in range(5):
                try:
                    toc = local.ix._read_toc()  # noqa: SLF001 — the public reader() has the reuse bug above
                    readers = {}
                    for segment in toc.segments:
                        key = (segment.segment_id(), segment.deleted_count())
                        reader = local.readers.pop(key, None)
                        if reader is None:
                            reader = SegmentReader(local.ix.storage, toc.schema, segment, generation=toc.generation)
                        readers[key] = reader
                    break
                except OSError:
                    # A writer merged segments and removed their files between reading the TOC
                    # and opening them; the next TOC names the merged segment.
                    for reader in readers.values():
                        local.readers.setdefault((reader.segment().segment_id(),
                                                  reader.segment().deleted_count()), reader)
                    if attempt == 4:
                        raise
                    time.sleep(0.05)
        except IndexUnavailable:
            raise
        except Exception as exc:
            self.close()
            raise IndexUnavailable(f"cannot read {current}: {exc!r}") from exc
        for reader in local.readers.values():
            self._close_quietly(reader)
        local.readers = readers
        local.leaves = [_Leaf(reader, self._segment_cache(reader)) for reader in readers.values()]
        local.generation = toc.generation
        return local.leaves

    def _segment_cache(self, reader: SegmentReader) -> _SegmentCache:
        """The shared caches of a segment (kept for the most recently used segments)."""
        segment_id = f"{self._local.directory}:{reader.segment().segment_id()}"
        with self._segments_lock:
            cache = self._segments.get(segment_id)
            if cache is None:
                cache = self._segments[segment_id] = _SegmentCache(segment_id)
            self._segments.move_to_end(segment_id)
            while len(self._segments) > 256:
                self._segments.popitem(last=False)
        return cache

    @staticmethod
    def _close_quietly(reader) -> None:
        """Close a reader or index whose files may already be gone."""
        try:
            reader.close()
        except Exception:  # files of a removed generation may already be gone
            log.debug("closing an old reader failed", exc_info=True)

    def close(self) -> None:
        """Close this thread's readers (tests, shutdown, or a swapped-in rebuild)."""
        local = self._local
        for reader in getattr(local, "readers", {}).values():
            self._close_quietly(reader)
        ix = getattr(local, "ix", None)
        if ix is not None:
            self._close_quietly(ix)
        local.readers, local.leaves, local.ix, local.directory, local.generation = {}, [], None, None, None

    def doc_count(self) -> int:
        """Number of live documents."""
        return sum(leaf.reader.doc_count() for leaf in self._leaves())

    # -- writing -----------------------------------------------------------------------

    def index_products(self, documents: Iterable[ProductDocument], remove_ids: Iterable[int] = ()) -> bool:
        """Add or replace ``documents`` and delete ``remove_ids`` in one commit.

        Waits up to ``writer_timeout`` seconds for another process's writer; if the index stays
        busy, or a rebuild runs, the ids are deferred (see ``take_deferred_ids``) and False returned.

        :raise IndexUnavailable: there is no readable index to write to.
        """
        documents = list(documents)
        remove_ids = {int(pid) for pid in remove_ids}
        touched = remove_ids | {doc.product_id for doc in documents}
        if not touched:
            return True
        # Analyse before taking Whoosh's lock, so other processes wait for the commit only.
        fields = [document_fields(doc) for doc in documents]
        with self._rebuild_lock(exclusive=False) as allowed:
            if not allowed:
                self.defer(touched)
                return False
            ix = self._open_index()
            try:
                try:
                    writer = ix.writer(timeout=self.writer_timeout, delay=0.05)
                except LockError:
                    log.warning("search index busy for %.0fs; deferring %d products", self.writer_timeout, len(touched))
                    self.defer(touched)
                    return False
                try:
                    for product_id in sorted(remove_ids - {doc.product_id for doc in documents}):
                        writer.delete_by_term("product_id", str(product_id))
                    for values in fields:
                        writer.update_document(**values)
                    writer.commit()
                except BaseException:
                    writer.cancel()
                    raise
            finally:
                ix.close()
        return True

    def rebuild(self, documents: Iterator[ProductDocument], skip_if_ready: bool = False) -> int | None:
        """Build a fresh index from ``documents`` in a new directory, then swap it in atomically.

        Writers that arrive meanwhile defer their ids instead of writing to the old index (their
        change would be lost at the swap); the caller re-indexes them after this returns.

        :param skip_if_ready: return None without building when a usable index exists once the
            lock is held (several workers found the index missing; one builds it).
        """
        with self._rebuild_lock(exclusive=True):
            if skip_if_ready and self.is_ready():
                return None
            directory = os.path.join(self.root, f"gen-{time.time_ns()}-{os.getpid()}")
            os.makedirs(directory)
            ix = whoosh_index.create_in(directory, build_schema())
            writer = ix.writer(limitmb=256)
            count = 0
            try:
                for doc in documents:
                    writer.add_document(**document_fields(doc))
                    count += 1
                writer.commit()
            except BaseException:
                writer.cancel()
                ix.close()
                shutil.rmtree(directory, ignore_errors=True)
                raise
            ix.close()
            with open(os.path.join(directory, "schema_version"), "w") as handle:
                handle.write(SCHEMA_VERSION)
            previous = self._current_dir()
            temporary_link = f"{self._current_link}.{os.getpid()}.tmp"
            if os.path.lexists(temporary_link):
                os.unlink(temporary_link)
            os.symlink(os.path.basename(directory), temporary_link)
            os.replace(temporary_link, self._current_link)  # atomic: readers see old or new, never none
            self._remove_old_generations(keep={directory, previous})
        return count

    def _remove_old_generations(self, keep: set) -> None:
        """Delete generations older than the previous one (processes reopen on the swap)."""
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if name.startswith("gen-") and path not in keep and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)

    # -- deferred ids ------------------------------------------------------------------

    @contextmanager
    def _deferred_file(self):
        """The deferred-ids file, locked against other processes while open."""
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, "deferred_ids"), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def defer(self, product_ids: Iterable[int]) -> None:
        """Remember product ids to re-index at the next write (shared by all processes)."""
        ids = sorted({int(pid) for pid in product_ids})
        if not ids:
            return
        with self._deferred_file() as handle:
            handle.seek(0, os.SEEK_END)
            handle.write("".join(f"{pid}\n" for pid in ids))
            handle.flush()

    def has_deferred(self) -> bool:
        """True when some ids wait to be re-indexed (a cheap stat, for the read path)."""
        try:
            return os.path.getsize(os.path.join(self.root, "deferred_ids")) > 0
        except OSError:
            return False

    def take_deferred_ids(self) -> set[int]:
        """Return the deferred ids and clear the list."""
        if not self.has_deferred():
            return set()
        with self._deferred_file() as handle:
            handle.seek(0)
            ids = {int(line) for line in handle.read().split() if line.isdigit()}
            handle.seek(0)
            handle.truncate()
        return ids

    # -- per-segment caches ---------------------------------------------------------------

    @staticmethod
    def _column(leaf: _Leaf, name: str) -> list:
        """A column's values by segment docnum (deleted documents included)."""
        values = leaf.cache.columns.get(name)
        if values is None:
            values = int_column(leaf.reader, name) if leaf.reader.doc_count_all() else []
            leaf.cache.columns[name] = values
        return values

    def _live_allowed(self, leaf: _Leaf, today: int) -> int:
        """Bitmap of live documents whose certificate is valid on ``today`` (yyyymmdd)."""
        cache = leaf.cache
        key = (leaf.reader.segment().deleted_count(), today)
        live = cache.live
        if live is not None and live[0] == key:
            return live[1]
        with cache.lock:
            if cache.allowed is None or cache.allowed[0] != today:
                valid_from = self._column(leaf, "valid_from")
                valid_until = self._column(leaf, "valid_until")
                cache.allowed = (today, bits_of(doc for doc in range(len(valid_from))
                                                if valid_from[doc] <= today <= valid_until[doc]))
            bits = cache.allowed[1] & ~bits_of(leaf.reader.deleted_docs_set)
            cache.live = (key, bits)
        return bits

    def _in_stock(self, leaf: _Leaf) -> int:
        """Bitmap of documents with sellable stock when indexed (stock changes re-index them)."""
        bits = leaf.cache.columns.get("_in_stock")
        if bits is None:
            available = self._column(leaf, "available")
            bits = bits_of(doc for doc, units in enumerate(available) if units > 0)
            leaf.cache.columns["_in_stock"] = bits
        return bits

    def _facet_bits(self, leaf: _Leaf) -> dict:
        """Bitmap per facet value, for exact counts by AND and popcount."""
        cache = leaf.cache
        if cache.facets is None:
            facets = {}
            for name in FACET_FIELDS:
                values = [raw.decode("utf-8") for raw in leaf.reader.lexicon(name)]
                facets[name] = {value: self._posting_bits(leaf, name, value) for value in values}
            cache.facets = facets
        return cache.facets

    def _posting_bits(self, leaf: _Leaf, fieldname: str, term: str) -> int:
        """Bitmap of the segment's documents containing ``term`` in ``fieldname``, deletions included."""
        cache = leaf.cache
        key = (fieldname, term)
        docs = cache.postings.get(key)
        if docs is not None:
            return docs
        reader = leaf.reader
        if (fieldname, term) in reader:
            fieldtype = reader.schema[fieldname]
            # The raw postings (without the reader's deletion filter) stay valid for the life of
            # the segment, so a deletion elsewhere in it does not throw the cache away.
            matcher = reader._terms.matcher(fieldname, fieldtype.to_bytes(term), fieldtype.format)  # noqa: SLF001
            docs = bits_of(posting_ids(matcher))
        else:
            docs = 0
        with cache.lock:
            cache.postings[key] = docs
            while len(cache.postings) > POSTING_CACHE_ENTRIES:
                cache.postings.popitem(last=False)
        return docs

    def _order(self, leaf: _Leaf, sort: str) -> list[int]:
        """All docnums of the segment sorted for ``sort`` (computed once per segment)."""
        order = leaf.cache.orders.get(sort)
        if order is None:
            order = sorted(range(leaf.reader.doc_count_all()), key=self._sort_key(leaf, sort))
            leaf.cache.orders[sort] = order
        return order

    def _sort_key(self, leaf: _Leaf, sort: str):
        """A key function on segment docnums: a sort order, or the tie-break of equal relevance."""
        pid = self._column(leaf, "pid")
        if sort == "price_asc":
            price = self._column(leaf, "price_fen")
            return lambda doc: (price[doc], -pid[doc])
        if sort == "price_desc":
            price = self._column(leaf, "price_fen")
            return lambda doc: (-price[doc], -pid[doc])
        if sort == "newest":
            return lambda doc: (-pid[doc],)
        available = self._column(leaf, "available")
        if sort == "tiebreak":
            # Equal relevance: what can be bought now, then the shorter (closer) name, then newer.
            name_length = self._column(leaf, "name_length")
            return lambda doc: (available[doc] <= 0, name_length[doc], -pid[doc])
        # Browsing without words: what can be bought now first, newest first.
        return lambda doc: (available[doc] <= 0, -pid[doc])

    # -- query planning ------------------------------------------------------------------

    @staticmethod
    def _present(leaves: list[_Leaf], fieldnames, term) -> list[tuple[str, str]]:
        """The (field, term) pairs that occur in some segment."""
        return [(name, term) for name in fieldnames if any((name, term) in leaf.reader for leaf in leaves)]

    def _plan(self, leaves: list[_Leaf], words: list[str]) -> tuple[list[_Clause], list[str], list[str]]:
        """Turn query words into clauses; return (clauses, terms to highlight, words not found).

        A Chinese word the index never saw (jieba cut it differently, or it is longer than any
        indexed word) is replaced by the shorter dictionary words inside it, then by its single
        characters, so a match is not lost to segmentation.
        """
        clauses: list[_Clause] = []
        marks: list[str] = []
        missing: list[str] = []
        for word in words:
            if text.is_cjk(word):
                fields = TEXT_FIELDS + ("chars",) if len(word) == 1 else TEXT_FIELDS
                alternatives = self._present(leaves, fields, word)
                if alternatives:
                    clauses.append(_Clause(word, alternatives))
                    marks.append(word)
                    continue
                repaired = [_Clause(part, self._present(leaves, TEXT_FIELDS, part))
                            for part in text.search_mode_words(word)]
                repaired = [clause for clause in repaired if clause.alternatives]
                covered = set("".join(clause.word for clause in repaired))
                repaired += [_Clause(ch, self._present(leaves, TEXT_FIELDS + ("chars",), ch))
                             for ch in dict.fromkeys(word) if ch not in covered]
                if all(clause.alternatives for clause in repaired):
                    clauses.extend(repaired)
                    marks.extend(clause.word for clause in repaired)
                else:
                    clauses.append(_Clause(word, []))
                    missing.append(word)
            elif text.is_ascii_word(word):
                alternatives = self._present(leaves, PINYIN_FIELDS, word)
                alternatives += self._present(leaves, TEXT_FIELDS, text.stem_word(word))
                marks.append(word)
                if not alternatives and len(word) >= 2:
                    for fieldname in ("name_pinyin", "place_pinyin"):
                        for term in self._expand_prefix(leaves, fieldname, word):
                            alternatives.append((fieldname, term))
                            marks.append(term)
                if not alternatives:
                    missing.append(word)
                clauses.append(_Clause(word, alternatives))
            else:
                alternatives = self._present(leaves, TEXT_FIELDS, text.stem_word(word))
                if not alternatives:
                    missing.append(word)
                clauses.append(_Clause(word, alternatives))
                marks.append(word)
        return clauses, marks, missing

    @staticmethod
    def _expand_prefix(leaves: list[_Leaf], fieldname: str, prefix: str) -> list[str]:
        """Up to MAX_PREFIX_TERMS indexed terms starting with ``prefix`` (typing in progress)."""
        terms: dict[str, None] = {}
        for leaf in leaves:
            for raw in leaf.reader.expand_prefix(fieldname, prefix):
                terms[raw.decode("utf-8") if isinstance(raw, bytes) else raw] = None
                if len(terms) >= MAX_PREFIX_TERMS:
                    return sorted(terms)
        return sorted(terms)

    def _clause_bits(self, leaf: _Leaf, clause: _Clause) -> int:
        """Bitmap of the segment's documents matching any alternative of a clause."""
        bits = 0
        for fieldname, term in clause.alternatives:
            bits |= self._posting_bits(leaf, fieldname, term)
        return bits

    # -- querying -------------------------------------------------------------------------

    def warm_up(self, today: date | None = None) -> int:
        """Fill the shared per-segment caches a first query would otherwise fill for its visitor:
        columns, facet and validity bitmaps, the browse and tie-break orders, and the postings of
        a few common words. Readers opened here belong to the calling thread and are closed.

        :return: the number of live documents seen (0 when there is no index yet).
        """
        documents = 0
        try:
            for text_query in ("", "茶", "cha"):
                hits = self.query(SearchRequest(text=text_query, limit=20, today=today))
                if not text_query:
                    documents = hits.total
            for leaf in self._leaves():
                if leaf.reader.doc_count():
                    self._order(leaf, "tiebreak")
                    self._in_stock(leaf)
        except IndexUnavailable:
            return 0
        finally:
            self.close()
        return documents

    def query(self, request: SearchRequest) -> SearchHits:
        """Run ``request``: exact total and facets over all hits, one ordered page of ids."""
        try:
            return self._query(request)
        except IndexUnavailable:
            raise
        except Exception:
            # A reader may have been left pointing at files a merge removed: reopen and retry once.
            log.warning("search query failed; reopening the index", exc_info=True)
            self.close()
            try:
                return self._query(request)
            except IndexUnavailable:
                raise
            except Exception as exc:
                raise IndexUnavailable(f"index unreadable: {exc!r}") from exc

    def _query(self, request: SearchRequest) -> SearchHits:
        """``query`` without the retry."""
        leaves = self._leaves()
        today = date_key(request.today or shanghai_today())
        words = text.query_words(request.text)
        clauses, marks, missing = self._plan(leaves, words)
        filters = (("county", request.county), ("category", request.category),
                   ("evidence_type", request.evidence_type))

        total = 0
        counts = {name: Counter() for name in FACET_FIELDS}
        matched = []  # (leaf, hit bitmap, clause bitmaps)
        for leaf in leaves:
            if not leaf.reader.doc_count():
                continue
            facets = self._facet_bits(leaf)
            hits = self._live_allowed(leaf, today)
            for name, value in filters:
                if value:
                    hits &= facets[name].get(value, 0)
            if request.in_stock:
                hits &= self._in_stock(leaf)
            clause_bits = [self._clause_bits(leaf, clause) for clause in clauses]
            for bits in clause_bits:
                hits &= bits
            for product_id in request.exclude_ids:
                hits &= ~self._posting_bits(leaf, "product_id", str(product_id))
            if not hits:
                continue
            total += hits.bit_count()
            for name in FACET_FIELDS:
                for value, bits in facets[name].items():
                    count = (hits & bits).bit_count()
                    if count:
                        counts[name][value] += count
            matched.append((leaf, hits, clause_bits))

        page = self._page(matched, clauses, request)
        product_ids = [self._column(leaf, "pid")[doc] for leaf, doc in page]
        suggestion = None
        if not total and words:
            suggestion = self._suggest(leaves, words, missing, today)
        return SearchHits(product_ids=product_ids, total=total,
                          facets={name: dict(sorted(counts[name].items())) for name in FACET_FIELDS},
                          terms=list(dict.fromkeys(marks)), suggestion=suggestion)

    def _page(self, matched, clauses: list[_Clause], request: SearchRequest) -> list[tuple[_Leaf, int]]:
        """The (segment, docnum) pairs of the requested page, in the requested order.

        Relevance splits the hits into groups of equal score with set operations; the best
        groups are then ordered by the tie-break (in stock, shorter name, newer). Only the docs
        that can reach the page are ever given a Python-level key.
        """
        wanted = request.offset + request.limit
        if not matched:
            return []
        relevance = request.sort == "relevance" and clauses
        if relevance:
            idfs = self._idfs(matched, clauses)
            secondary = "tiebreak"
        else:
            secondary = request.sort if request.sort != "relevance" else "browse"
        candidates = []
        for index, (leaf, hits, _) in enumerate(matched):
            key = self._sort_key(leaf, secondary)
            groups = self._score_groups(leaf, hits, clauses, idfs) if relevance else [(0.0, hits)]
            taken = 0
            for score, docs in groups:
                best = self._first(leaf, docs, secondary, wanted - taken, key)
                candidates.extend(((-score, key(doc)), index, doc) for doc in best)
                taken += len(best)
                if taken >= wanted:
                    break
        ordered = heapq.nsmallest(wanted, candidates)
        return [(matched[index][0], doc) for _, index, doc in ordered[request.offset:wanted]]

    def _first(self, leaf: _Leaf, bits: int, sort: str, count: int, key) -> list[int]:
        """The first ``count`` documents of a bitmap in ``sort`` order."""
        if count <= 0:
            return []
        if bits.bit_count() <= HEAP_LIMIT:
            return heapq.nsmallest(count, ids_of(bits), key=key)
        # Many docs: walk the segment's pre-sorted order; a page is found after a few hundred steps.
        data = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
        size = len(data)
        best = []
        for doc in self._order(leaf, sort):
            index = doc >> 3
            if index < size and data[index] >> (doc & 7) & 1:
                best.append(doc)
                if len(best) == count:
                    break
        return best

    @staticmethod
    def _idfs(matched, clauses: list[_Clause]) -> list[float]:
        """Inverse document frequency of each clause among live documents (rarer words weigh more)."""
        documents = sum(leaf.reader.doc_count() for leaf, _, _ in matched) or 1
        frequencies = [0] * len(clauses)
        for _, _, clause_bits in matched:
            for index, bits in enumerate(clause_bits):
                frequencies[index] += bits.bit_count()
        return [math.log(1 + documents / (1 + frequency)) for frequency in frequencies]

    def _score_groups(self, leaf: _Leaf, hits: int, clauses: list[_Clause], idfs: list[float]):
        """Hits grouped by score, best first: per word, the boost of the best field it matched
        in (name before pinyin of the name before category, place, cooperative, description),
        weighted by the word's idf. Bitmap operations only: no per-document Python work."""
        groups: dict[float, int] = {0.0: hits}
        for clause, idf in zip(clauses, idfs):
            alternatives = sorted(clause.alternatives, key=lambda alt: -FIELD_BOOSTS.get(alt[0], 1.0))
            regrouped: dict[float, int] = {}
            for score, docs in groups.items():
                remaining = docs
                for fieldname, term in alternatives:
                    found = remaining & self._posting_bits(leaf, fieldname, term)
                    if found:
                        total = round(score + idf * FIELD_BOOSTS.get(fieldname, 1.0), 6)
                        regrouped[total] = regrouped.get(total, 0) | found
                        remaining &= ~found
                        if not remaining:
                            break
                if remaining:
                    regrouped[score] = regrouped.get(score, 0) | remaining
            groups = regrouped
        return sorted(groups.items(), key=lambda item: -item[0])

    # -- did you mean -----------------------------------------------------------------------

    def _vocabulary(self, leaves: list[_Leaf]) -> dict[str, tuple[int, str]]:
        """Pinyin → (document frequency, word) of the Chinese words in product names."""
        merged: dict[str, tuple[int, str]] = {}
        for leaf in leaves:
            cache = leaf.cache
            if cache.vocabulary is None:
                vocabulary: dict[str, tuple[int, str]] = {}
                reader = leaf.reader
                for raw in reader.lexicon("name"):
                    word = raw.decode("utf-8")
                    if len(word) < 2 or not text.is_cjk(word):
                        continue
                    entry = (reader.doc_frequency("name", word), word)
                    key = text.pinyin_of(word)
                    if entry > vocabulary.get(key, (0, "")):
                        vocabulary[key] = entry
                cache.vocabulary = vocabulary
            for key, entry in cache.vocabulary.items():
                if entry > merged.get(key, (0, "")):
                    merged[key] = entry
        return merged

    def _suggest(self, leaves: list[_Leaf], words: list[str], missing: list[str], today: int) -> str | None:
        """A corrected query that has hits, from homophones or one-letter pinyin typos, or None."""
        vocabulary = self._vocabulary(leaves)
        if not vocabulary:
            return None
        corrected = []
        for word in words:
            replacement = None
            if word in missing or not self._has_hits(leaves, [word], today):
                replacement = self._correct(vocabulary, word)
            corrected.append(replacement or word)
        if corrected == words:
            return None
        return _join_words(corrected) if self._has_hits(leaves, corrected, today) else None

    def _has_hits(self, leaves: list[_Leaf], words: list[str], today: int) -> bool:
        """True when these words together match some sellable product."""
        clauses, _, missing = self._plan(leaves, words)
        if missing:
            return False
        for leaf in leaves:
            hits = self._live_allowed(leaf, today)
            for clause in clauses:
                hits &= self._clause_bits(leaf, clause)
            if hits:
                return True
        return False

    @staticmethod
    def _correct(vocabulary: dict[str, tuple[int, str]], word: str) -> str | None:
        """The most frequent name word with the same pinyin, else one edit away in pinyin."""
        key = text.pinyin_of(word) if text.is_cjk(word) else word
        if not text.is_ascii_word(key):
            return None
        if key in vocabulary:
            return vocabulary[key][1]
        best = None
        for candidate, entry in vocabulary.items():
            if abs(len(candidate) - len(key)) <= 1 and _within_one_edit(candidate, key):
                if best is None or entry > best:
                    best = entry
        return best[1] if best else None


def _within_one_edit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by one insertion, deletion, substitution or swap."""
    if a == b:
        return True
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (len(diffs) == 2 and diffs[1] == diffs[0] + 1
                and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]])
    if len(a) < len(b):
        a, b = b, a
    if len(a) - len(b) != 1:
        return False
    return any(a[:i] + a[i + 1:] == b for i in range(len(a)))


def _join_words(words: list[str]) -> str:
    """Join query words: Chinese words touch, latin words keep a space."""
    out = ""
    for word in words:
        if out and (not text.is_cjk(word) or not text.is_cjk(out[-1])):
            out += " "
        out += word
    return out
