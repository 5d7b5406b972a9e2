"""Command line: ``flask --app wsgi search rebuild``."""
import click
from flask.cli import AppGroup

search_group = AppGroup("search", help="Manage the product search index.")


@search_group.command("rebuild")
def rebuild_command():
    """Rebuild the search index from the database (built aside, then swapped in atomically)."""
    from search.services import get_engine, rebuild_index

    report = rebuild_index()
    click.echo(f"搜索索引已重建：{report.indexed} 个可售产品，用时 {report.seconds:.1f} 秒；"
               f"重建期间变更后补写 {report.reindexed_after} 个。")
    click.echo(f"索引目录：{get_engine().root}")
