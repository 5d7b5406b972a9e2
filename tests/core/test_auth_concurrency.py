"""Real concurrency on PostgreSQL: one token signed out twice at once, and a password change
racing the user's own requests, leave no 500 and no live old token."""
import threading

import pytest

from core.extensions import db
from core.models import Role

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _postgres_only():
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrency tests need PostgreSQL (set DATABASE_URL)")


def _parallel(app, jobs):
    """Run callables in threads started together, each with its own test client."""
    barrier = threading.Barrier(len(jobs))
    results = [None] * len(jobs)

    def worker(index, job):
        with app.app_context():
            barrier.wait()
            try:
                results[index] = job()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_the_same_token_signed_out_twice_at_once_is_revoked_without_an_error(app, make):
    user = make.user()
    headers = make.headers(user)
    codes = _parallel(app, [lambda: app.test_client().post("/api/v1/auth/logout", headers=headers).status_code
                            for _ in range(6)])
    assert set(codes) <= {200, 401} and 200 in codes
    assert app.test_client().get("/api/v1/me", headers=headers).status_code == 401


def test_deactivation_racing_requests_leaves_the_token_dead(app, make):
    admin, staff = make.user(Role.ADMIN), make.user(Role.FINANCE)
    admin_headers, staff_headers = make.headers(admin), make.headers(staff)
    jobs = [lambda: app.test_client().patch(f"/api/v1/users/{staff.id}", headers=admin_headers,
                                            json={"is_active": False}).status_code]
    jobs += [lambda: app.test_client().get("/api/v1/me", headers=staff_headers).status_code for _ in range(5)]
    results = _parallel(app, jobs)
    assert results[0] == 200 and set(results[1:]) <= {200, 401}
    assert app.test_client().get("/api/v1/me", headers=staff_headers).status_code == 401
