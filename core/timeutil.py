"""Time helpers: stored in UTC, business dates in Asia/Shanghai, converted only here."""
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from time import monotonic
from zoneinfo import ZoneInfo

import sqlalchemy as sa

SHANGHAI = ZoneInfo("Asia/Shanghai")

# (moment, monotonic() when set) while ``replay_clock`` runs; None: the real clock.
_replay: tuple[datetime, float] | None = None


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime (the replayed one inside ``replay_clock``)."""
    if _replay is not None:
        moment, started = _replay
        return (moment + timedelta(seconds=monotonic() - started)).astimezone(timezone.utc)
    return datetime.now(timezone.utc)


@contextmanager
def replay_clock(moment: datetime):
    """Run a block as if the clock had started at ``moment`` (aware), running on at the real pace.

    For the demo's story only (a one-shot command that records months of history through the
    real services, each step at its own time, so audit hashes stay true). Every service, model
    default and date helper reads the time through ``utcnow``, so this moves them all, process
    wide. Never use it in a server.
    """
    global _replay
    if moment.tzinfo is None:
        raise ValueError("replay_clock needs an aware datetime")
    previous, _replay = _replay, (moment, monotonic())
    try:
        yield
    finally:
        _replay = previous


def to_shanghai(moment: datetime) -> datetime:
    """Convert an aware datetime to Asia/Shanghai."""
    return moment.astimezone(SHANGHAI)


def shanghai_today(now: datetime | None = None) -> date:
    """Return today's business date in Asia/Shanghai."""
    return to_shanghai(now or utcnow()).date()


def shanghai_year(moment: datetime) -> int:
    """Return the Asia/Shanghai calendar year of a moment (sales years are local)."""
    return to_shanghai(moment).year


def shanghai_year_bounds(year: int) -> tuple[datetime, datetime]:
    """Return the UTC instants [start, end) of a Shanghai calendar year."""
    start = datetime(year, 1, 1, tzinfo=SHANGHAI).astimezone(timezone.utc)
    end = datetime(year + 1, 1, 1, tzinfo=SHANGHAI).astimezone(timezone.utc)
    return start, end


def shanghai_month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """Return the UTC instants [start, end) of a Shanghai calendar month (settlement periods)."""
    start = datetime(year, month, 1, tzinfo=SHANGHAI)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=SHANGHAI)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def isoformat(moment: datetime | None) -> str | None:
    """Format a moment as ISO 8601 with the Asia/Shanghai offset for API output."""
    return to_shanghai(moment).isoformat() if moment else None


class UTCDateTime(sa.types.TypeDecorator):
    """A DateTime column that always stores naive UTC and returns aware UTC.

    Why: SQLite drops offsets and PostgreSQL ``timestamp`` compares naively; storing one
    convention everywhere makes the two databases behave the same.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)
