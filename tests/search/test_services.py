"""Search services: the index follows product changes, and the brand gate has the last word."""
import os
import shutil
from datetime import timedelta

import pytest

from core.extensions import db
from core.signals import notify_products_changed
from core.timeutil import shanghai_today
from search import services
from search.schemas import SearchQuerySchema
from tests.certification.factories import certified_product
from tests.search.helpers import revoke_silently, sellable, unsellable
from tests.traceability.factories import batch


def find(q="", **params):
    """Search as a visitor would, with the schema's defaults."""
    return services.search_products(SearchQuerySchema().load({"q": q, **params}))


def ids(page) -> list[int]:
    return [item.product.id for item in page.items]


@pytest.mark.parametrize("q", ["毛尖", "maojian", "gzmj", "古丈"])
def test_chinese_pinyin_initials_and_place_find_guzhang_maojian(make, q):
    tea = sellable(make, "古丈毛尖 明前特级", county="古丈县")
    sellable(make, "保靖黄金茶 一级", county="保靖县")
    page = find(q)
    assert ids(page) == [tea.id]
    assert page.total == 1


def test_products_that_may_not_be_sold_are_never_indexed_or_returned(make):
    unsellable(make, "古丈毛尖 草稿")
    unsellable(make, "古丈毛尖 已驳回", status="rejected")
    expired = certified_product(make, name="古丈毛尖 过期", valid_from=shanghai_today() - timedelta(days=900),
                                valid_until=shanghai_today() - timedelta(days=1))
    notify_products_changed(expired.id)
    assert find("毛尖").total == 0
    assert services.get_engine().doc_count() == 0


def test_a_revoked_product_is_gone_on_the_next_request_when_the_signal_is_sent(make):
    tea = sellable(make)
    assert ids(find("毛尖")) == [tea.id]
    revoke_silently(tea)
    notify_products_changed(tea.id)
    assert services.flush_indexing()
    assert services.get_engine().doc_count() == 0
    assert find("毛尖").total == 0


def test_a_revoked_product_is_gone_even_if_the_index_missed_it(make):
    tea = sellable(make)
    other = sellable(make, "古丈毛尖 雨前一级")
    revoke_silently(tea)  # no signal: the index still lists it
    page = find("毛尖")
    assert ids(page) == [other.id]
    assert page.total == 1, "the count leaves the stale product out too"
    assert page.facets["county"] == {"古丈县": 1}
    # ... and the index is corrected in the background.
    assert services.flush_indexing()
    assert services.get_engine().doc_count() == 1


def test_an_expired_certificate_drops_out_the_next_day_without_any_job(make, monkeypatch):
    tea = sellable(make, valid_until=shanghai_today())
    assert ids(find("毛尖")) == [tea.id]
    tomorrow = shanghai_today() + timedelta(days=1)
    monkeypatch.setattr("search.services.shanghai_today", lambda: tomorrow)
    monkeypatch.setattr("certification.gate.shanghai_today", lambda: tomorrow)
    assert find("毛尖").total == 0


def test_stock_changes_show_in_results_after_the_signal(make):
    tea = sellable(make)
    assert find("毛尖").items[0].available == 0
    assert find("毛尖", in_stock="true").total == 0
    batch(tea, quantity=40)
    notify_products_changed(tea.id)
    assert find("毛尖").items[0].available == 40
    assert ids(find("毛尖", in_stock="true")) == [tea.id]


def test_a_product_sold_out_by_orders_leaves_in_stock_results_and_returns_when_released(client, make):
    from shop import services as shop_services
    from tests.shop.helpers import place

    tea = sellable(make)
    batch(tea, quantity=3)
    notify_products_changed(tea.id)
    buyer = make.user()
    first = place(client, make, buyer, (tea, 1))
    assert ids(find("毛尖", in_stock="true")) == [tea.id]
    assert find("毛尖").items[0].available == 2, "the count shown is read live, not from the index"
    place(client, make, buyer, (tea, 2))
    assert find("毛尖", in_stock="true").total == 0
    shop_services.cancel_order(buyer, first["id"])
    assert ids(find("毛尖", in_stock="true")) == [tea.id]


def test_a_renamed_product_is_found_by_its_new_name(make):
    tea = sellable(make, "古丈毛尖 明前特级")
    tea.name = "古丈红茶 特级"
    db.session.commit()
    notify_products_changed(tea.id)
    assert find("毛尖").total == 0
    assert ids(find("红茶")) == [tea.id]


def test_a_missing_index_is_rebuilt_by_the_next_search(make):
    tea = sellable(make)
    services.flush_indexing()
    engine = services.get_engine()
    engine.close()
    shutil.rmtree(engine.root)
    assert ids(find("gzmj")) == [tea.id]
    assert engine.is_ready()


def test_a_corrupt_index_is_rebuilt_by_the_next_search(make):
    tea = sellable(make)
    services.flush_indexing()
    engine = services.get_engine()
    engine.close()
    current = os.path.realpath(os.path.join(engine.root, "current"))
    for name in os.listdir(current):
        with open(os.path.join(current, name), "wb") as handle:
            handle.write(b"\0garbage")
    assert ids(find("毛尖")) == [tea.id]


def test_updates_deferred_while_the_index_was_busy_are_applied_by_the_next_search(make):
    tea = sellable(make, "古丈毛尖 明前特级")
    tea.name = "古丈红茶 特级"
    db.session.commit()
    services.get_engine().defer([tea.id])  # what a writer does when the index stays locked
    assert ids(find("红茶")) == [tea.id]
    assert not services.get_engine().has_deferred()


def test_rebuild_indexes_every_sellable_product_and_nothing_else(make):
    first, second = sellable(make), sellable(make, "永顺莓茶 特级嫩尖", county="永顺县")
    unsellable(make, "古丈毛尖 草稿")
    report = services.rebuild_index()
    assert report.indexed == 2
    assert sorted(ids(find())) == sorted([first.id, second.id])


def test_a_failing_index_write_never_breaks_the_request_and_is_kept_for_later(make, monkeypatch):
    tea = sellable(make)

    def broken(product_ids):
        raise RuntimeError("disk full")

    monkeypatch.setattr("search.documents.documents_for", broken)
    notify_products_changed(tea.id)  # must not raise
    services.flush_indexing()
    monkeypatch.undo()
    assert services.get_engine().take_deferred_ids() == {tea.id}, "kept for the next write"


def test_announcing_a_change_returns_at_once_and_the_write_follows(app, make, monkeypatch):
    import threading

    # Production's mode (tests index inside the signal, see services.in_background).
    monkeypatch.setitem(app.config, "SEARCH_BACKGROUND_INDEXING", True)
    tea = sellable(make)
    services.flush_indexing()
    gate = threading.Event()
    original = services.reindex_products

    def slow(ids):
        gate.wait(10)
        return original(ids)

    monkeypatch.setattr(services.background_indexer(), "_reindex", slow)
    tea.name = "古丈红茶"
    db.session.commit()
    notify_products_changed(tea.id)  # returns although the write is blocked
    assert not services.flush_indexing(timeout=0.2)
    gate.set()
    assert services.flush_indexing()
    assert services.get_engine().doc_count() == 1
    assert ids(find("红茶")) == [tea.id]


def test_an_index_built_by_other_code_is_rebuilt_by_the_next_search(make):
    tea = sellable(make)
    services.flush_indexing()
    engine = services.get_engine()
    engine.close()
    current = os.path.realpath(os.path.join(engine.root, "current"))
    with open(os.path.join(current, "schema_version"), "w") as handle:
        handle.write("0")
    assert not engine.is_ready()
    assert ids(find("毛尖")) == [tea.id]
    assert engine.is_ready()
