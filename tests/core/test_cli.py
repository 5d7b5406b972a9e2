"""The contract's commands: setup is idempotent, users create prints an id, demo loads once and
tells one consistent story in time, whatever day it runs."""
from datetime import date, datetime, timedelta

import pytest
import sqlalchemy as sa

import core.demo
from core.audit import AuditEvent, verify_chain
from core.extensions import db
from core.models import BudgetUnit, Role, User, Village
from core.timeutil import SHANGHAI, UTCDateTime, shanghai_today, to_shanghai, utcnow


def test_setup_twice_keeps_exactly_the_registry(runner):
    for _ in range(2):
        result = runner.invoke(args=["setup"])
        assert result.exit_code == 0, result.output
        assert "新增 0 个" in result.output
    assert db.session.scalar(sa.select(sa.func.count(Village.id))) == 1110


def test_users_create_prints_the_new_id(runner, make):
    cooperative = make.cooperative()
    result = runner.invoke(args=["users", "create", "coop@test.cn", "--role", "cooperative",
                                 "--password", "maojian-tea-2026", "--cooperative", str(cooperative.id)])
    assert result.exit_code == 0, result.output
    user = db.session.get(User, int(result.output.strip()))
    assert user.role == "cooperative" and user.cooperative_id == cooperative.id
    assert user.check_password("maojian-tea-2026")


def test_users_create_county_reviewer_needs_a_known_county(runner):
    missing = runner.invoke(args=["users", "create", "r@test.cn", "--role", "county_reviewer", "--password", "maojian-tea-2026"])
    assert missing.exit_code != 0
    wrong = runner.invoke(args=["users", "create", "r@test.cn", "--role", "county_reviewer",
                                "--password", "maojian-tea-2026", "--county", "长沙县"])
    assert wrong.exit_code != 0
    ok = runner.invoke(args=["users", "create", "r@test.cn", "--role", "county_reviewer",
                             "--password", "maojian-tea-2026", "--county", "花垣县"])
    assert ok.exit_code == 0, ok.output
    assert db.session.get(User, int(ok.output.strip())).county == "花垣县"


def test_users_create_refuses_unknown_role_and_foreign_scope(runner, make):
    assert runner.invoke(args=["users", "create", "x@test.cn", "--role", "king", "--password", "maojian-tea-2026"]).exit_code != 0
    foreign = runner.invoke(args=["users", "create", "x@test.cn", "--role", "consumer", "--password", "maojian-tea-2026",
                                  "--county", "花垣县"])
    assert foreign.exit_code != 0
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_demo_creates_one_account_per_role_and_runs_once(runner):
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    roles = set(db.session.scalars(sa.select(User.role)))
    assert roles == {role.value for role in Role}
    assert db.session.scalar(sa.select(AuditEvent.action).where(AuditEvent.subject_type == "budget_unit")) == "create"
    assert verify_chain().ok
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0 and "已存在" in second.output


def test_demo_tells_one_story_in_time_ending_now(runner):
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    assert_consistent_story(shanghai_today(), utcnow())
    reconcile = runner.invoke(args=["reports", "reconcile", "--year", str(shanghai_today().year)])
    assert reconcile.exit_code == 0, reconcile.output


def _last_year(month: int, day: int, hour: int = 23, minute: int = 59, second: int = 0) -> datetime:
    """A Beijing moment of last year: always in the past, so the story fits before the real now too."""
    return datetime(shanghai_today().year - 1, month, day, hour, minute, second, tzinfo=SHANGHAI)


@pytest.mark.parametrize("now", [_last_year(1, 5), _last_year(12, 30), _last_year(1, 1, 0, 0, 30)],
                         ids=["5 January", "30 December", "the first minute of the year"])
def test_demo_tells_one_story_on_any_day(runner, monkeypatch, now):
    # The demo reads today and now where core.demo imports them; the services follow its clock.
    monkeypatch.setattr(core.demo, "shanghai_today", lambda: to_shanghai(now).date())
    monkeypatch.setattr(core.demo, "utcnow", lambda: now)
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    assert_consistent_story(to_shanghai(now).date(), now + timedelta(minutes=1))


def assert_consistent_story(today: date, now: datetime) -> None:
    """Everything the demo made happened in an order that makes sense, and none of it after ``now``."""
    from certification.models import Certification, Product
    from shop.models import Order, OrderAllocation, Refund
    from shop.reports.services import (ReportFilters, reconcile_village_sales, report_monthly_sales,
                                       report_reserved_share, report_village_sales)
    from traceability.models import Batch, TraceEvent

    # Nothing in the future: every stored time (a reservation's deadline is one by nature), every
    # production day and every certificate's start.
    for table in db.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, UTCDateTime) and (table.name, column.name) != ("orders", "reserved_until"):
                latest = db.session.scalar(sa.select(sa.func.max(column)))
                assert latest is None or latest <= now, (table.name, column.name, latest)
    assert db.session.scalar(sa.select(sa.func.max(Batch.produced_on))) < today
    assert db.session.scalar(sa.select(sa.func.max(Certification.valid_from))) <= today

    paid = db.session.scalars(sa.select(Order).where(Order.paid_at.isnot(None)).order_by(Order.paid_at)).all()
    assert len(paid) >= 6
    for order in paid:
        paid_on = to_shanghai(order.paid_at).date()
        assert order.number.startswith(f"XB{to_shanghai(order.created_at):%Y%m%d}-")
        assert order.created_at <= order.paid_at
        # Sold under a certificate that had been granted (with its whole workflow) before the sale.
        for line in order.lines:
            certificate = db.session.get(Product, line.product_id).certificate
            assert certificate.valid_from <= paid_on and certificate.decided_at < order.paid_at
            events = db.session.scalars(sa.select(AuditEvent).where(
                AuditEvent.subject_type == "certification", AuditEvent.subject_id == certificate.id)).all()
            assert events and all(event.at < order.created_at for event in events)
        # Stock taken only from batches produced, and labelled, before the order was placed.
        for allocation in db.session.scalars(sa.select(OrderAllocation).where(OrderAllocation.order_id == order.id)):
            batch = db.session.get(Batch, allocation.batch_id)
            assert batch.produced_on <= paid_on and batch.created_at < order.created_at
        # Then shipped, received and refunded, in that order.
        shipped = [f.shipped_at for f in order.fulfilments if f.shipped_at]
        assert all(order.paid_at < moment for moment in shipped)
        if order.shipped_at:
            assert order.shipped_at == max(shipped)
        if order.completed_at:
            assert order.shipped_at < order.completed_at
        for refund in db.session.scalars(sa.select(Refund).where(Refund.order_id == order.id)):
            assert order.paid_at < refund.created_at
    first_sale = paid[0].paid_at
    assert all(c.decided_at < first_sale for c in db.session.scalars(
        sa.select(Certification).where(Certification.status == "certified")))

    # A batch's history: labelled (commissioning) first, then shipped and received, in time order.
    for batch in db.session.scalars(sa.select(Batch)):
        events = db.session.scalars(sa.select(TraceEvent).where(TraceEvent.batch_id == batch.id)
                                    .order_by(TraceEvent.id)).all()
        assert events[0].biz_step == "commissioning"
        assert to_shanghai(events[0].event_time).date() == batch.produced_on
        times = [event.event_time for event in events]
        assert times == sorted(times) and all(e.event_time <= e.recorded_at for e in events)
        steps = [event.biz_step for event in events]
        assert steps in (["commissioning"], ["commissioning", "shipping", "receiving"])

    # The trail: intact, and each subject's events in time order.
    assert verify_chain().ok
    by_subject: dict = {}
    for event in db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)):
        by_subject.setdefault((event.subject_type, event.subject_id), []).append(event.at)
    assert all(times == sorted(times) for times in by_subject.values())

    # This year's reports have something to show, however young the year.
    official = db.session.scalar(sa.select(User).where(User.role == Role.OFFICIAL.value))
    year = ReportFilters(year=today.year)
    villages = report_village_sales(official, year)
    assert villages.totals["sales_fen"] > 0 and sum(1 for item in villages.items if item["sales_fen"]) >= 2
    assert report_monthly_sales(official, year)["items"][today.month - 1]["sales_fen"] > 0
    unit = db.session.scalar(sa.select(BudgetUnit))
    assert report_reserved_share(official, unit.id, today.year)["purchased_fen"] > 0
    assert reconcile_village_sales(today.year).ok
