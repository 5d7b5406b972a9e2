"""Search tests start from an index rebuilt from their (empty) database: the index directory is
shared by the whole session, and other tests' products must not leak into these results."""
import pytest

from search.services import flush_indexing, get_engine, rebuild_index


@pytest.fixture(autouse=True)
def fresh_index(app):
    """Rebuild the index from the emptied database before each test (after earlier tests'
    queued writes have landed, so none of them lands in this test's index)."""
    flush_indexing()
    get_engine().take_deferred_ids()
    rebuild_index()
    yield get_engine()
    flush_indexing()
    get_engine().close()
