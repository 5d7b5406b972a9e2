"""``flask --app wsgi search rebuild``: rebuilds from the database and says how many."""
from search import services
from tests.search.helpers import sellable, unsellable


def test_search_rebuild_prints_the_number_of_sellable_products(runner, make):
    sellable(make)
    sellable(make, "永顺莓茶", county="永顺县")
    unsellable(make, "草稿产品")
    before = services.get_engine()._current_dir()
    result = runner.invoke(args=["search", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "搜索索引已重建：2 个可售产品" in result.output
    assert services.get_engine()._current_dir() != before, "built aside and swapped in"
    assert services.get_engine().doc_count() == 2
