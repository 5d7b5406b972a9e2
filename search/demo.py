"""Demo data hook: index the demo catalogue (runs last, after products, batches and orders)."""
from core.demo import DemoTimeline
from search.services import rebuild_index


def load(timeline: DemoTimeline | None = None) -> list[str]:
    """Rebuild the search index from the demo database at the story's present; report how many products it holds."""
    timeline = timeline or DemoTimeline.ending_today()
    with timeline.clock(timeline.now):  # sellable and in stock as of the story's today
        report = rebuild_index()
    return [f"搜索索引已重建：{report.indexed} 个可售产品。"]
