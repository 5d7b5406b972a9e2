"""gunicorn settings read from the working directory (``gunicorn -w 2 wsgi:app`` picks this up).

Only what the service needs from its server: a worker warms its search caches on a background
thread as soon as it has loaded the app, so the first visitor's search is not the slow one.
"""
import threading


def post_worker_init(worker):
    """Start the search warm-up in this worker (it answers requests meanwhile)."""
    from search.services import warm_up

    threading.Thread(target=warm_up, args=(worker.wsgi,), name="search-warm-up", daemon=True).start()
