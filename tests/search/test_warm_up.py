"""A new worker warms its search caches before its first visitor asks."""
import importlib.util
import threading
from pathlib import Path

from flask import Flask

from search import services
from tests.search.helpers import sellable

ROOT = Path(__file__).resolve().parents[2]


def _forget_caches(engine) -> None:
    """What a newly started worker has: no readers and no segment caches."""
    engine._segments.clear()
    engine.close()


def test_warm_up_fills_the_caches_a_first_query_would_fill(app, make):
    tea = sellable(make, "古丈毛尖 明前特级")
    sellable(make, "保靖黄金茶 一级", county="保靖县")
    engine = services.get_engine()
    _forget_caches(engine)

    services.warm_up(app)

    assert engine._segments, "the segments' shared caches exist after the warm-up"
    cache = next(iter(engine._segments.values()))
    assert {"pid", "available"} <= set(cache.columns)
    assert cache.facets is not None and "county" in cache.facets
    assert "tiebreak" in cache.orders
    assert [item.product.id for item in services.search_products(
        {"q": "毛尖", "county": None, "category": None, "evidence_type": None, "in_stock": False,
         "sort": "relevance", "page": 1, "per_page": 20}).items] == [tea.id]


def test_warm_up_without_an_index_or_for_another_app_does_nothing_and_never_raises(app, tmp_path):
    original = app.config["SEARCH_INDEX_DIR"]
    app.config["SEARCH_INDEX_DIR"] = str(tmp_path / "no_index_here")
    try:
        services.warm_up(app)  # no index yet: nothing to warm, no error
    finally:
        app.config["SEARCH_INDEX_DIR"] = original
        app.extensions.pop("search_engine", None)
    services.warm_up(Flask("hello"))  # the bench's bare app under the same gunicorn settings


def test_gunicorn_workers_warm_up_search_on_a_background_thread(app, make, monkeypatch):
    sellable(make, "永顺莓茶", county="永顺县")
    _forget_caches(services.get_engine())
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    started = []
    real_thread = threading.Thread

    def recording_thread(*args, **kwargs):
        thread = real_thread(*args, **kwargs)
        started.append(thread)
        return thread

    monkeypatch.setattr(conf.threading, "Thread", recording_thread)

    class Worker:
        wsgi = app

    conf.post_worker_init(Worker())
    assert len(started) == 1 and started[0].daemon
    started[0].join(timeout=60)
    assert not started[0].is_alive()
    assert services.get_engine()._segments, "the worker's caches were filled"
