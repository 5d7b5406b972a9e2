"""The background indexer: one thread per worker process writes product changes to the index.

Why not write inside the request that changed the product: a Whoosh commit costs 100-300 ms
and takes the index's lock, so every order (which changes stock) would wait for it, and busy
workers would queue on the lock. Here the request only hands over ids; the thread merges all
ids that arrive while it writes into the next commit. Correctness does not depend on it: every
search re-checks the brand gate in the database, and waits for this process's pending writes
first, so a process reads its own changes.
"""
import atexit
import logging
import os
import threading

from core.extensions import db

log = logging.getLogger(__name__)


class BackgroundIndexer:
    """Coalesces product ids and re-indexes them on a daemon thread, in the app's context."""

    def __init__(self, app, reindex):
        """:param reindex: ``reindex(ids)`` run inside an app context; it defers what it cannot write."""
        self.app = app
        self._reindex = reindex
        self._pending: set[int] = set()
        self._requested = False  # a write is wanted (ids queued, or only deferred ids to drain)
        self._busy = False
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = None

    def submit(self, product_ids) -> None:
        """Queue ids for the next write (an empty call just drains ids deferred on disk)."""
        with self._condition:
            self._pending.update(int(pid) for pid in product_ids)
            self._requested = True
            self._start()
            self._condition.notify_all()

    def _start(self) -> None:
        """Start the writer thread if this process has none (call with the condition held)."""
        # A forked worker (gunicorn) inherits the object but not the thread: start one per process.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._busy = False
            self._thread = threading.Thread(target=self._run, name="search-indexer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """The writer thread: take everything queued, write it, repeat."""
        while True:
            with self._condition:
                while not self._requested:
                    self._condition.wait()
                batch, self._pending, self._requested = self._pending, set(), False
                self._busy = True
            try:
                with self.app.app_context():
                    # Reads in autocommit: no transaction holds table locks between statements,
                    # so this thread cannot deadlock with DDL or TRUNCATE in another connection.
                    db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                    self._reindex(batch)
            except Exception:
                log.exception("search: background re-indexing of %d products failed", len(batch))
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued in this process is written; False on timeout."""
        with self._condition:
            if self._thread is None or self._pid != os.getpid():
                return not self._requested
            return self._condition.wait_for(lambda: not self._requested and not self._busy, timeout=timeout)


_indexers: dict[int, BackgroundIndexer] = {}
_indexers_lock = threading.Lock()


def _reset_after_fork() -> None:
    """In a forked child, start clean: the parent's thread and locks do not exist here."""
    global _indexers_lock
    _indexers_lock = threading.Lock()
    for indexer in _indexers.values():
        indexer._condition = threading.Condition()
        indexer._pending, indexer._requested, indexer._busy, indexer._thread = set(), False, False, None


os.register_at_fork(after_in_child=_reset_after_fork)


def indexer_for(app, reindex) -> BackgroundIndexer:
    """The app's background indexer (created once; flushed when the process exits)."""
    key = id(app)
    with _indexers_lock:
        indexer = _indexers.get(key)
        if indexer is None:
            indexer = _indexers[key] = BackgroundIndexer(app, reindex)
            # CLI commands (demo, order expiry) exit right after their changes: write them first.
            atexit.register(indexer.flush, 60.0)
        return indexer
