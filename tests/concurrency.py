"""Real parallelism for PostgreSQL tests: jobs started together in threads, each with its own
app context and session; and the skip that marks a test as needing PostgreSQL."""
import threading

import pytest

from core.extensions import db


def skip_unless_postgres() -> None:
    """Skip the calling test on SQLite: it needs parallel transactions."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrency tests need PostgreSQL (set DATABASE_URL)")


def run_parallel(app, jobs, *, timeout: float = 120) -> list:
    """Run the callables at once (a barrier releases them together); return each one's result or
    the exception it raised, in order. Fails if any is still running after ``timeout`` (deadlock?)."""
    barrier = threading.Barrier(len(jobs))
    results = [None] * len(jobs)

    def worker(index, job):
        with app.app_context():
            barrier.wait()
            try:
                results[index] = job()
            except Exception as exc:  # noqa: BLE001 - the test looks at every outcome
                results[index] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a job hung (deadlock?)"
    return results
