"""Product search: Whoosh + jieba + pinyin, kept fresh by ``core.signals.products_changed``."""


def init_app(app) -> None:
    """Subscribe the index to product changes (once per process; the receiver finds the app)."""
    from core.signals import products_changed
    from search.services import on_products_changed

    products_changed.connect(on_products_changed)
