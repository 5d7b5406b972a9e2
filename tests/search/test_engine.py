"""The Whoosh engine on its own (no database): matching, facets, validity, freshness, writers."""
import multiprocessing
import os
from datetime import date, timedelta

import pytest
from whoosh import index as whoosh_index

from search.engine import IndexUnavailable, ProductDocument, SearchRequest, date_key
from search.whoosh_engine import WhooshEngine

TODAY = date(2026, 11, 29)


def doc(product_id, name, *, county="古丈县", township="默戎镇", village="牛角山村", category="tea",
        label="茶叶", description="", price_fen=12_800, available=10, valid_from=None, valid_until=None,
        counties=None, evidence=("green_food",)):
    """A product document with sensible defaults."""
    counties = counties or (county,)
    return ProductDocument(
        product_id=product_id, name=name, description=description, category=category, category_label=label,
        cooperative=f"{county}{township}{village}专业合作社", counties=tuple(counties),
        townships=(township,) * len(counties), villages=(village,) * len(counties), evidence_types=evidence,
        price_fen=price_fen, available=available,
        valid_from=date_key(valid_from or TODAY - timedelta(days=30)),
        valid_until=date_key(valid_until or TODAY + timedelta(days=365)),
    )


def search(engine, q="", **filters):
    """Run a query as of TODAY."""
    return engine.query(SearchRequest(text=q, today=TODAY, **filters))


@pytest.fixture
def engine(tmp_path):
    engine = WhooshEngine(str(tmp_path / "index"))
    engine.rebuild(iter([]))
    yield engine
    engine.close()


@pytest.fixture
def catalogue(engine):
    engine.rebuild(iter([
        doc(1, "古丈毛尖 明前特级 250克"),
        doc(2, "保靖黄金茶 一级", county="保靖县", township="吕洞山镇", village="黄金村"),
        doc(3, "红心猕猴桃 5斤装", county="花垣县", township="双龙镇", village="十八洞村", category="kiwifruit",
            label="猕猴桃", available=0),
        doc(4, "高山绿茶", description="与古丈毛尖同园采摘", county="古丈县"),
        doc(5, "苗绣 挂画", county="凤凰县", township="山江镇", village="板畔村", category="crafts", label="手工艺品",
            counties=("凤凰县", "古丈县"), price_fen=98_000),
    ]))
    return engine


@pytest.mark.parametrize("q", ["毛尖", "maojian", "gzmj", "古丈", "古丈毛尖", "guzhangmaojian", "明前毛尖"])
def test_chinese_words_pinyin_and_initials_find_guzhang_maojian(catalogue, q):
    assert 1 in search(catalogue, q).product_ids


def test_a_name_match_ranks_before_a_description_match(catalogue):
    hits = search(catalogue, "古丈毛尖")
    assert hits.product_ids[:2] == [1, 4]


def test_facet_counts_are_exact_over_all_hits_and_follow_filters(catalogue):
    everything = search(catalogue)
    assert everything.total == 5
    # 苗绣 comes from villages in two counties and counts in both.
    assert everything.facets["county"] == {"古丈县": 3, "保靖县": 1, "花垣县": 1, "凤凰县": 1}
    assert everything.facets["category"] == {"tea": 3, "kiwifruit": 1, "crafts": 1}
    in_guzhang = search(catalogue, county="古丈县")
    assert sorted(in_guzhang.product_ids) == [1, 4, 5]
    assert in_guzhang.total == 3
    assert in_guzhang.facets["category"] == {"tea": 2, "crafts": 1}
    assert in_guzhang.facets["county"] == {"古丈县": 3, "凤凰县": 1}
    tea_in_guzhang = search(catalogue, "茶", county="古丈县", category="tea")
    assert sorted(tea_in_guzhang.product_ids) == [1, 4]
    assert search(catalogue, county="吉首市").total == 0


def test_expired_and_not_yet_valid_certificates_are_not_returned(engine):
    engine.rebuild(iter([
        doc(1, "古丈毛尖 过期", valid_until=TODAY - timedelta(days=1)),
        doc(2, "古丈毛尖 今天到期", valid_until=TODAY),
        doc(3, "古丈毛尖 明天生效", valid_from=TODAY + timedelta(days=1)),
    ]))
    hits = search(engine, "毛尖")
    assert hits.product_ids == [2]
    assert hits.total == 1 and hits.facets["county"] == {"古丈县": 1}
    tomorrow = engine.query(SearchRequest(text="毛尖", today=TODAY + timedelta(days=1)))
    assert tomorrow.product_ids == [3]


def test_a_removed_product_is_gone_from_the_next_query_of_an_open_reader(catalogue):
    # Whoosh's own Searcher.refresh() keeps showing deleted documents; this engine must not.
    assert 1 in search(catalogue, "毛尖").product_ids
    assert catalogue.index_products([], remove_ids=[1])
    after = search(catalogue, "毛尖")
    assert 1 not in after.product_ids
    assert after.total == 1


def test_an_updated_product_is_replaced_not_duplicated(catalogue):
    catalogue.index_products([doc(1, "古丈毛尖 雨前一级")])
    hits = search(catalogue, "毛尖")
    assert hits.total == 2 and hits.product_ids.count(1) == 1
    assert search(catalogue, "明前").total == 0
    assert search(catalogue, "雨前").product_ids == [1]
    assert catalogue.doc_count() == 5


def test_pages_are_disjoint_and_cover_every_hit(engine):
    engine.rebuild(iter(doc(i, f"古丈毛尖 第{i}号", price_fen=1000 + i) for i in range(1, 24)))
    seen = []
    for offset in (0, 10, 20):
        page = engine.query(SearchRequest(text="毛尖", offset=offset, limit=10, today=TODAY))
        assert page.total == 23
        seen += page.product_ids
    assert sorted(seen) == list(range(1, 24))
    cheapest = engine.query(SearchRequest(text="毛尖", sort="price_asc", limit=3, today=TODAY))
    assert cheapest.product_ids == [1, 2, 3]
    dearest = engine.query(SearchRequest(sort="price_desc", limit=2, today=TODAY))
    assert dearest.product_ids == [23, 22]


def test_browsing_shows_products_in_stock_first(catalogue):
    ids = search(catalogue).product_ids
    assert ids[-1] == 3  # the only one out of stock
    assert search(catalogue, in_stock=True).total == 4


def test_excluded_products_leave_the_total_and_facets(catalogue):
    hits = catalogue.query(SearchRequest(text="茶", today=TODAY, exclude_ids=frozenset({2})))
    assert 2 not in hits.product_ids
    assert hits.facets["county"].get("保靖县") is None
    assert hits.total == 2


def test_a_misspelling_gets_a_suggestion_that_finds_something(catalogue):
    assert search(catalogue, "茅尖").total == 0
    assert search(catalogue, "茅尖").suggestion == "毛尖"
    assert search(catalogue, "maojain").suggestion == "毛尖"
    assert search(catalogue, "毛尖").suggestion is None


def test_a_pinyin_prefix_finds_what_is_being_typed(catalogue):
    assert 1 in search(catalogue, "maoji").product_ids


def test_highlight_terms_are_reported(catalogue):
    assert search(catalogue, "古丈 maojian").terms[:2] == ["古丈", "maojian"]


def test_rebuild_swaps_in_a_new_generation_under_open_readers(catalogue, tmp_path):
    assert search(catalogue, "毛尖").total == 2
    other_process = WhooshEngine(catalogue.root)
    other_process.rebuild(iter([doc(9, "永顺莓茶", county="永顺县", category="berry_tea", label="莓茶")]))
    other_process.rebuild(iter([doc(9, "永顺莓茶", county="永顺县", category="berry_tea", label="莓茶")]))
    assert search(catalogue, "毛尖").total == 0
    assert search(catalogue, "莓茶").product_ids == [9]
    generations = [name for name in os.listdir(catalogue.root) if name.startswith("gen-")]
    assert len(generations) == 2, "older generations are removed, the previous one kept"


def test_a_missing_or_corrupt_index_is_reported_unavailable(tmp_path):
    engine = WhooshEngine(str(tmp_path / "nothing"))
    assert not engine.is_ready()
    with pytest.raises(IndexUnavailable):
        engine.query(SearchRequest(text="毛尖"))
    engine.rebuild(iter([doc(1, "古丈毛尖")]))
    current = os.path.realpath(os.path.join(engine.root, "current"))
    for name in os.listdir(current):
        if name.endswith(".toc"):
            with open(os.path.join(current, name), "wb") as handle:
                handle.write(b"garbage")
    fresh = WhooshEngine(engine.root)
    assert not fresh.is_ready()
    with pytest.raises(IndexUnavailable):
        fresh.query(SearchRequest(text="毛尖"))


def test_a_busy_index_defers_the_update_instead_of_losing_it(catalogue):
    catalogue.writer_timeout = 0.2
    ix = whoosh_index.open_dir(os.path.realpath(os.path.join(catalogue.root, "current")))
    blocker = ix.writer()
    try:
        assert catalogue.index_products([], remove_ids=[1]) is False
    finally:
        blocker.cancel()
        ix.close()
    assert catalogue.take_deferred_ids() == {1}
    assert catalogue.take_deferred_ids() == set()


def test_writers_defer_while_a_rebuild_runs(catalogue):
    with catalogue._rebuild_lock(exclusive=True):
        assert catalogue.index_products([doc(1, "古丈毛尖 新名字")]) is False
    assert catalogue.take_deferred_ids() == {1}


def _write_from_another_process(root: str, first_id: int, count: int, queue) -> None:
    """Child process: open the shared index and commit ``count`` products one by one."""
    engine = WhooshEngine(root, writer_timeout=60)
    deferred = 0
    for product_id in range(first_id, first_id + count):
        if not engine.index_products([doc(product_id, f"古丈毛尖 批次{product_id}")]):
            deferred += 1
        # Every process also rewrites one shared product: updates must replace, never duplicate.
        if not engine.index_products([doc(1, "古丈毛尖 明前特级 250克", price_fen=product_id)]):
            deferred += 1
    queue.put(deferred)


def test_concurrent_writers_in_several_processes_keep_every_update(catalogue):
    # Index writes only (no database): runs on SQLite and PostgreSQL alike.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_write_from_another_process, args=(catalogue.root, 100 + 25 * n, 25, queue))
                 for n in range(4)]
    for process in processes:
        process.start()
    deferred = [queue.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert deferred == [0, 0, 0, 0]
    assert catalogue.doc_count() == 5 + 100
    hits = catalogue.query(SearchRequest(text="毛尖", limit=200, today=TODAY))
    assert hits.total == 2 + 100
    assert sorted(hits.product_ids) == sorted([1, 4] + list(range(100, 200)))
    reopened = whoosh_index.open_dir(os.path.realpath(os.path.join(catalogue.root, "current")))
    with reopened.searcher() as searcher:
        assert searcher.doc_count() == 105
    reopened.close()


def _index_in_a_fresh_process(root: str, queue) -> None:
    """Child process: write before any query, as a worker whose first request changes a product."""
    engine = WhooshEngine(root)
    engine.index_products([doc(7, "保靖黄金茶 特级", county="保靖县")])
    queue.put("done")


def test_a_process_that_writes_before_querying_cuts_words_like_the_query(engine):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_index_in_a_fresh_process, args=(engine.root, queue))
    process.start()
    assert queue.get(timeout=120) == "done"
    process.join(timeout=60)
    # Without the project's dictionary jieba cuts 保靖黄金茶 as 保靖/黄金/茶: the words people type
    # would then never be indexed terms.
    ix = whoosh_index.open_dir(os.path.realpath(os.path.join(engine.root, "current")))
    with ix.reader() as reader:
        assert ("name", "黄金茶") in reader and ("name", "保靖黄金茶") in reader
    ix.close()
    assert search(engine, "保靖黄金茶").product_ids == [7]
