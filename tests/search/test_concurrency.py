"""Several worker processes re-index products at once (as gunicorn workers do after commits)."""
import multiprocessing

import pytest
from flask import current_app

from core.extensions import db
from search import services
from tests.certification.factories import certified_product


def _reindex_in_a_worker(config: dict, product_ids: list[int], queue) -> None:
    """Child process: its own app and database connections; one index commit per product."""
    from core.app import create_app
    from search.services import reindex_products

    app = create_app(config)
    deferred = 0
    with app.app_context():
        for product_id in product_ids:
            if not reindex_products([product_id]):
                deferred += 1
    queue.put(deferred)


@pytest.mark.postgres
def test_worker_processes_reindexing_at_once_lose_no_update(make):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("several processes sharing one database: PostgreSQL only")
    village = make.village("古丈县")
    products = [certified_product(make, name=f"古丈毛尖 第{n}批", cooperative=make.cooperative(village=village),
                                  villages=[village]).id for n in range(40)]
    assert services.get_engine().doc_count() == 0, "nothing announced yet"
    config = {key: current_app.config[key] for key in ("SQLALCHEMY_DATABASE_URI", "SEARCH_INDEX_DIR", "SECRET_KEY")}
    config.update(TESTING=True)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    # Four workers; each re-indexes its own ten products and all of a shared ten.
    shares = [products[10 * n:10 * n + 10] + products[:10] for n in range(4)]
    workers = [context.Process(target=_reindex_in_a_worker, args=(config, share, queue)) for share in shares]
    for worker in workers:
        worker.start()
    deferred = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    engine = services.get_engine()
    # A worker that found the index busy for too long deferred its ids; every later write (in any
    # process) applies deferred ids first, and so does this one.
    assert all(count >= 0 for count in deferred)
    services.reindex_products(())
    assert engine.doc_count() == 40
    body = services.search_products({"q": "毛尖", "county": None, "category": None, "evidence_type": None,
                                     "in_stock": False, "sort": "relevance", "page": 1, "per_page": 50})
    assert body.total == 40
    assert sorted(item.product.id for item in body.items) == sorted(products)
