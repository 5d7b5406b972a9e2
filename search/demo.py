"""Demo data hook: index the demo catalogue (runs last, after products, batches and orders)."""
from search.services import rebuild_index


def load() -> list[str]:
    """Rebuild the search index from the demo database; report how many products it holds."""
    report = rebuild_index()
    return [f"搜索索引已重建：{report.indexed} 个可售产品。"]
