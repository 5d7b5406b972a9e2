"""Database plumbing shared by every service: one way to end a write that may lose a
unique-key race.

A service checks "is this name/code/lot free?" before inserting, but two requests can pass the
check together; the database's unique constraint then stops the second one, at a flush or at the
commit. ``unique_or_conflict`` guards both and turns the loser's IntegrityError into the same 409
the check gives, after rolling everything back. (``core.errors`` also answers any IntegrityError
no service expected with a generic 409, so a race forgotten here is never a 500.)
"""
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError

from core.errors import Conflict
from core.extensions import db


@contextmanager
def transaction() -> Iterator[None]:
    """Commit what the block did, or roll it all back (and release SQLite's write lock) on error."""
    try:
        yield
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


@contextmanager
def unique_or_conflict(message: str, code: str, *, cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Run the block and commit it; a unique-key violation anywhere inside becomes ``Conflict``.

    :param cleanup: undoes side effects outside the database (files written) when nothing is kept.
    :raise Conflict: ``message``/``code`` (409) when the database refused a duplicate.
    """
    try:
        yield
        db.session.commit()
    except IntegrityError:
        _roll_back(cleanup)
        raise Conflict(message, code=code) from None
    except BaseException:
        _roll_back(cleanup)
        raise


def commit_or_conflict(message: str, code: str, *, cleanup: Callable[[], None] | None = None) -> None:
    """Commit what the caller wrote (already flushed); a duplicate lost at commit becomes ``Conflict``."""
    with unique_or_conflict(message, code, cleanup=cleanup):
        pass


def _roll_back(cleanup: Callable[[], None] | None) -> None:
    db.session.rollback()
    if cleanup:
        cleanup()
