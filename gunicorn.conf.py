"""gunicorn settings read from the working directory (``gunicorn -w 2 wsgi:app`` picks this up).

Only what the service needs from its server: the settings are checked once in the master before
any worker starts (a worker that fails to load is restarted forever, so a bad DATABASE_URL would
never stop the server), and a worker warms its search caches on a background thread as soon as
it has loaded the app, so the first visitor's search is not the slow one.
"""
import sys
import threading


def on_starting(server):
    """Refuse to start, with wsgi's one line, when the settings or the database are unusable
    (or the database was never set up)."""
    from core.app import create_app
    from core.config import ConfigError, check_database, check_schema
    from core.extensions import db

    try:
        app = create_app()
        with app.app_context():
            check_database(db.engine)
            check_schema(db.engine)
            db.engine.dispose()  # no connection may be shared with the forked workers
    except ConfigError as error:
        print(f"湘西香伴无法启动：{error}", file=sys.stderr)
        sys.exit(1)


def post_worker_init(worker):
    """Start the search warm-up in this worker (it answers requests meanwhile)."""
    from search.services import warm_up

    threading.Thread(target=warm_up, args=(worker.wsgi,), name="search-warm-up", daemon=True).start()
