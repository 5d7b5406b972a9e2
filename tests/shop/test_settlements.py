"""Settlement statements (结算单): the same movements as the village report, frozen at issue, a late
refund in the next period, paid once with a bank reference, scoped to the cooperative, as CSV and
XLSX, proved by ``reports reconcile``, one statement when two issues race."""
import calendar
import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from core.audit import AuditEvent
from core.extensions import db
from core.models import Role
from core.timeutil import SHANGHAI, replay_clock, shanghai_today
from shop import services, settlements
from shop.models import SettlementLine, SettlementStatement
from tests.certification.factories import certified_product, member
from tests.concurrency import run_parallel, skip_unless_postgres
from tests.shop.factories import paid_order
from tests.traceability.factories import batch


def months_ago(n: int) -> tuple[int, int]:
    """(year, month) of the Shanghai month ``n`` months before this one."""
    today = shanghai_today()
    index = today.year * 12 + today.month - 1 - n
    return index // 12, index % 12 + 1


def period(n: int) -> str:
    year, month = months_ago(n)
    return f"{year:04d}-{month:02d}"


def at(n: int, day: int, hour: int = 12) -> datetime:
    """A moment (aware) in the month ``n`` months ago, Asia/Shanghai."""
    year, month = months_ago(n)
    return datetime(year, month, day, hour, tzinfo=SHANGHAI)


class World:
    """Two cooperatives in two villages, a buyer, and finance."""

    def __init__(self, make):
        self.village_a, self.village_b = make.village("古丈县"), make.village("花垣县")
        self.coop_a = make.cooperative(village=self.village_a)
        self.coop_b = make.cooperative(village=self.village_b)
        self.tea = certified_product(make, cooperative=self.coop_a, price_fen=12_800)
        self.kiwi = certified_product(make, cooperative=self.coop_b, price_fen=6_650)
        self.tea_batch = batch(self.tea, quantity=500)
        self.kiwi_batch = batch(self.kiwi, quantity=500)
        self.buyer = make.user(Role.CONSUMER)
        self.finance = make.user(Role.FINANCE)
        self.member_a = member(make, self.coop_a)
        self.member_b = member(make, self.coop_b)


@pytest.fixture
def world(make):
    return World(make)


def _refund(world, order, amount, when):
    """A refund recorded by finance at ``when`` (the service, with the clock there)."""
    with replay_clock(when):
        services.refund_order(world.finance, order.id, {"amount_fen": amount, "reason": "破损"})


def _issue(client, make, user, value, **extra):
    return client.post("/api/v1/settlements", json={"period": value, **extra}, headers=make.headers(user))


def _report_sales(client, make, village, year) -> int:
    body = client.get(f"/api/v1/reports/village-sales?year={year}&per_page=2000",
                      headers=make.headers(make.user(Role.OFFICIAL))).get_json()
    return next(item["sales_fen"] for item in body["items"] if item["village_id"] == village.id)


def test_statement_net_equals_the_village_report_figure_to_the_fen(client, make, world):
    w = world
    paid_order(w.buyer, [(w.tea_batch, 3)], paid_at=at(2, 3))
    mixed = paid_order(w.buyer, [(w.tea_batch, 1), (w.kiwi_batch, 7)], paid_at=at(2, 10))
    paid_order(w.buyer, [(w.kiwi_batch, 2)], paid_at=at(2, 28, 23))
    _refund(w, mixed, 3_333, at(2, 15))  # split over both cooperatives' allocations, to the fen

    response = _issue(client, make, w.finance, period(2))
    assert response.status_code == 201, response.get_json()
    issued = {item["cooperative_id"]: item for item in response.get_json()["items"]}
    assert set(issued) == {w.coop_a.id, w.coop_b.id}
    year = months_ago(2)[0]
    for coop, village in ((w.coop_a, w.village_a), (w.coop_b, w.village_b)):
        statement = issued[coop.id]
        assert statement["net_fen"] == _report_sales(client, make, village, year)
        assert statement["net_fen"] == statement["gross_fen"] - statement["refunds_fen"]
    assert issued[w.coop_a.id]["gross_fen"] == 4 * 12_800
    assert issued[w.coop_b.id]["gross_fen"] == 9 * 6_650
    assert issued[w.coop_a.id]["refunds_fen"] + issued[w.coop_b.id]["refunds_fen"] == 3_333
    assert issued[w.coop_a.id]["status"] == "issued"
    events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "settlement_statement")).all()
    assert sorted(e.subject_id for e in events) == sorted(s["id"] for s in issued.values())
    assert {e.actor_id for e in events} == {w.finance.id}


def test_a_refund_after_issue_leaves_the_statement_unchanged_and_lands_in_the_next_period(client, make, world):
    w = world
    order = paid_order(w.buyer, [(w.tea_batch, 5)], paid_at=at(2, 5))
    first_period = period(2)  # read before the clock moves: periods are relative to today
    with replay_clock(at(1, 1, 9)):
        [first] = settlements.issue_statements(w.finance, first_period)
    frozen = (first.id, first.gross_fen, first.refunds_fen, first.net_fen, first.line_count, first.content_sha256)
    _refund(w, order, 10_000, at(1, 12))
    paid_order(w.buyer, [(w.tea_batch, 1)], paid_at=at(1, 20))

    db.session.expire_all()
    statement = db.session.get(SettlementStatement, first.id)
    assert (statement.id, statement.gross_fen, statement.refunds_fen, statement.net_fen, statement.line_count,
            statement.content_sha256) == frozen == (first.id, 64_000, 0, 64_000, 1, first.content_sha256)

    response = _issue(client, make, w.finance, period(1))
    assert response.status_code == 201
    [second] = response.get_json()["items"]
    body = client.get(f"/api/v1/settlements/{second['id']}", headers=make.headers(w.finance)).get_json()
    assert (body["gross_fen"], body["refunds_fen"], body["net_fen"]) == (12_800, 10_000, 2_800)
    assert sorted((line["kind"], line["amount_fen"]) for line in body["lines"]) == [("refund", -10_000),
                                                                                      ("sale", 12_800)]
    refund_line = next(line for line in body["lines"] if line["kind"] == "refund")
    assert refund_line["order_number"] == order.number and refund_line["quantity"] is None
    # Over all statements: exactly the cooperative's village sales across the same movements.
    year2, year1 = months_ago(2)[0], months_ago(1)[0]
    village_total = sum(_report_sales(client, make, w.village_a, y) for y in {year2, year1})
    assert 64_000 + 2_800 == village_total
    # Nothing is left to settle, so issuing the same period again is a conflict.
    assert _issue(client, make, w.finance, period(1)).status_code == 409


def test_periods_not_over_malformed_or_already_issued_are_refused(client, make, world):
    w = world
    paid_order(w.buyer, [(w.tea_batch, 1)], paid_at=at(2, 5))
    this_month = _issue(client, make, w.finance, period(0))
    assert this_month.status_code == 422 and this_month.get_json()["error"]["code"] == "period_not_over"
    for bad in ("2026-13", "26-11", "2026/11", "", 202611):
        assert _issue(client, make, w.finance, bad).status_code == 422, bad
    assert _issue(client, make, w.finance, period(2)).status_code == 201
    again = _issue(client, make, w.finance, period(2))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "statement_exists"
    # A month with nothing to settle issues nothing (200, empty).
    quiet = _issue(client, make, w.finance, period(3))
    assert quiet.status_code == 200 and quiet.get_json()["items"] == []
    assert _issue(client, make, w.finance, period(1), cooperative_id=2_000_000).status_code == 404
    assert db.session.scalar(sa.select(sa.func.count(SettlementStatement.id))) == 1


def test_pay_with_a_bank_reference_once_then_409(client, make, world):
    w = world
    paid_order(w.buyer, [(w.tea_batch, 2)], paid_at=at(2, 5))
    [statement] = _issue(client, make, w.finance, period(2)).get_json()["items"]
    headers = make.headers(w.finance)
    url = f"/api/v1/settlements/{statement['id']}/pay"
    assert client.post(url, json={}, headers=headers).status_code == 422
    assert client.post(url, json={"bank_reference": "  "}, headers=headers).status_code == 422
    assert client.post(url, json={"bank_reference": "HX1", "paid_on": "2999-01-01"}, headers=headers).status_code == 422
    response = client.post(url, json={"bank_reference": "HX20261207001"}, headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "paid" and body["bank_reference"] == "HX20261207001"
    assert body["paid_on"] == shanghai_today().isoformat() and body["paid_by_id"] == w.finance.id
    twice = client.post(url, json={"bank_reference": "HX-OTHER"}, headers=headers)
    assert twice.status_code == 409 and twice.get_json()["error"]["code"] == "statement_already_paid"
    assert client.get(f"/api/v1/settlements/{statement['id']}", headers=headers).get_json()["bank_reference"] \
        == "HX20261207001"
    paid = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "settlement_statement",
                                                          AuditEvent.action == "paid")).all()
    assert len(paid) == 1 and paid[0].to_state == "paid"


def test_a_cooperative_sees_its_own_statements_only(client, make, world):
    w = world
    paid_order(w.buyer, [(w.tea_batch, 1), (w.kiwi_batch, 1)], paid_at=at(2, 5))
    issued = {s["cooperative_id"]: s["id"] for s in _issue(client, make, w.finance, period(2)).get_json()["items"]}
    a, b = issued[w.coop_a.id], issued[w.coop_b.id]
    as_b = make.headers(w.member_b)
    assert client.get(f"/api/v1/settlements/{b}", headers=as_b).status_code == 200
    assert client.get(f"/api/v1/settlements/{a}", headers=as_b).status_code == 404
    assert client.get(f"/api/v1/settlements/{a}/statement.csv", headers=as_b).status_code == 404
    assert [s["id"] for s in client.get("/api/v1/settlements", headers=as_b).get_json()["items"]] == [b]
    assert client.get(f"/api/v1/settlements?cooperative_id={w.coop_a.id}", headers=as_b).get_json()["items"] == []
    assert client.post(f"/api/v1/settlements/{b}/pay", json={"bank_reference": "X"}, headers=as_b).status_code == 403
    assert _issue(client, make, w.member_b, period(2)).status_code == 403
    consumer = make.headers(w.buyer)
    assert client.get("/api/v1/settlements", headers=consumer).status_code == 403
    assert client.get(f"/api/v1/settlements/{a}", headers=consumer).status_code == 403
    official = make.headers(make.user(Role.OFFICIAL))
    assert client.get("/api/v1/settlements", headers=official).get_json()["total"] == 2
    assert client.post(f"/api/v1/settlements/{a}/pay", json={"bank_reference": "X"},
                       headers=official).status_code == 403
    # Pages: the member's list shows its own statement and the other's page is a 404.
    with client.session_transaction() as session:
        session.update(user_id=w.member_b.id, gen=w.member_b.token_generation, sid="test-sid-b")
    page = client.get("/settlements")
    assert page.status_code == 200 and w.coop_b.name in page.get_data(as_text=True)
    assert w.coop_a.name not in page.get_data(as_text=True)
    assert client.get(f"/settlements/{a}").status_code == 404


def test_csv_and_xlsx_carry_the_summary_and_every_line(client, make, world):
    w = world
    order = paid_order(w.buyer, [(w.tea_batch, 3)], paid_at=at(2, 5))
    _refund(w, order, 1_050, at(2, 6))
    [statement] = _issue(client, make, w.finance, period(2)).get_json()["items"]
    headers = make.headers(w.member_a)
    response = client.get(f"/api/v1/settlements/{statement['id']}/statement.csv", headers=headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    # The statement's content digest, not a hash of the file: named apart from the documents' header.
    assert response.headers["X-Statement-SHA256"] == statement["content_sha256"]
    assert "X-Content-SHA256" not in response.headers
    assert "filename*=UTF-8''" in response.headers["Content-Disposition"]
    text = response.data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    summary = {row[0]: row[1] for row in rows if len(row) == 2}
    assert summary["合作社"] == w.coop_a.name and summary["应结算金额（元）"] == "373.50"
    assert summary["销售额（元）"] == "384.00" and summary["退款（元）"] == "10.50"
    header = rows.index(["类型", "订单号", "产品", "产地村", "数量", "金额（元）", "发生时间（北京时间）"])
    lines = rows[header + 1:]
    assert [(r[0], r[1], r[4], r[5]) for r in lines] == [("销售", order.number, "3", "384.00"),
                                                         ("退款", order.number, "", "-10.50")]
    assert w.village_a.name in lines[0][3]

    response = client.get(f"/api/v1/settlements/{statement['id']}/statement.xlsx", headers=headers)
    assert response.status_code == 200
    book = load_workbook(io.BytesIO(response.data))
    summary = {row[0]: row[1] for row in book["结算单"].iter_rows(values_only=True)}
    assert float(summary["应结算金额（元）"]) == 373.5 and summary["结算期"].endswith("月")
    details = list(book["明细"].iter_rows(values_only=True))
    assert details[0][0] == "类型" and [(r[0], float(r[5])) for r in details[1:]] == [("销售", 384.0),
                                                                                    ("退款", -10.5)]
    # Text XLSX cannot hold (a control character a product name may carry) is dropped, not a 500.
    w.tea_batch.product.name = "古丈\x0c毛尖"
    db.session.commit()
    paid_order(w.buyer, [(w.tea_batch, 1)], paid_at=at(1, 5))
    [later] = _issue(client, make, w.finance, period(1)).get_json()["items"]
    response = client.get(f"/api/v1/settlements/{later['id']}/statement.xlsx", headers=headers)
    assert response.status_code == 200
    details = list(load_workbook(io.BytesIO(response.data))["明细"].iter_rows(values_only=True))
    assert details[1][2] == "古丈毛尖"
    # The page download gives the same file.
    with client.session_transaction() as session:
        session.update(user_id=w.member_a.id, gen=w.member_a.token_generation, sid="test-sid-a")
    page_download = client.get(f"/settlements/{statement['id']}/statement.csv")
    assert page_download.data == \
        client.get(f"/api/v1/settlements/{statement['id']}/statement.csv", headers=headers).data
    assert page_download.headers["X-Statement-SHA256"] == statement["content_sha256"]
    assert "X-Content-SHA256" not in page_download.headers


def _reconcile(runner, year):
    return runner.invoke(args=["reports", "reconcile", "--year", str(year)])


def test_reconcile_passes_and_catches_a_tampered_statement(runner, client, make, world):
    w = world
    order = paid_order(w.buyer, [(w.tea_batch, 2), (w.kiwi_batch, 3)], paid_at=at(2, 5))
    _refund(w, order, 2_000, at(2, 6))
    first_period = period(2)
    with replay_clock(at(1, 1, 9)):
        settlements.issue_statements(w.finance, first_period)
    _refund(w, order, 999, at(1, 3))  # after issue: unsettled until the next statement
    year = months_ago(2)[0]
    result = _reconcile(runner, year)
    assert result.exit_code == 0, result.output
    assert "结算单差异 0 处" in result.output
    assert settlements.reconcile_settlements(year) == []

    statement = db.session.scalars(sa.select(SettlementStatement).where(
        SettlementStatement.cooperative_id == w.coop_a.id)).one()
    db.session.execute(sa.text("UPDATE settlement_statements SET gross_fen = gross_fen + 100, "
                               "net_fen = net_fen + 100 WHERE id = :id"), {"id": statement.id})
    db.session.commit()
    result = _reconcile(runner, year)
    assert result.exit_code == 1
    assert f"结算单#{statement.id}" in result.output and "与明细" in result.output and "校验码不符" in result.output

    db.session.execute(sa.text("UPDATE settlement_statements SET gross_fen = gross_fen - 100, "
                               "net_fen = net_fen - 100 WHERE id = :id"), {"id": statement.id})
    line_id = db.session.scalar(sa.select(SettlementLine.id).where(SettlementLine.statement_id == statement.id,
                                                                   SettlementLine.kind == "sale"))
    db.session.execute(sa.text("UPDATE settlement_lines SET amount_fen = amount_fen - 1 WHERE id = :id"),
                       {"id": line_id})
    db.session.commit()
    result = _reconcile(runner, year)
    assert result.exit_code == 1
    assert "销售明细与原始分配行" in result.output and "结算单已结" in result.output


def test_the_command_issues_a_period(runner, world):
    w = world
    paid_order(w.buyer, [(w.kiwi_batch, 2)], paid_at=at(2, 5))
    result = runner.invoke(args=["settlements", "issue", "--period", period(2)])
    assert result.exit_code == 0, result.output
    assert "出具 1 份结算单" in result.output and "应结 ¥133.00" in result.output
    statement = db.session.scalars(sa.select(SettlementStatement)).one()
    assert statement.issued_by_id is None and statement.cooperative_id == w.coop_b.id
    result = runner.invoke(args=["settlements", "issue", "--period", period(0)])
    assert result.exit_code == 1 and "尚未结束" in result.output


def test_finance_issues_and_pays_on_the_pages(client, make, world):
    w = world
    paid_order(w.buyer, [(w.tea_batch, 1)], paid_at=at(2, 5))
    with client.session_transaction() as session:
        session.update(user_id=w.finance.id, gen=w.finance.token_generation, sid="test-sid-f")
    assert "合作社结算单" in client.get("/finance/orders").get_data(as_text=True)
    refused = client.post("/settlements/issue", data={"period": period(0)})
    assert refused.status_code == 422 and "尚未结束" in refused.get_data(as_text=True)
    assert client.post("/settlements/issue", data={"period": period(2)}).status_code == 302
    statement = db.session.scalars(sa.select(SettlementStatement)).one()
    page = client.get(f"/settlements/{statement.id}").get_data(as_text=True)
    assert "¥128.00" in page and "登记付款" in page
    assert client.post(f"/settlements/{statement.id}/pay", data={"bank_reference": ""}).status_code == 422
    assert client.post(f"/settlements/{statement.id}/pay", data={"bank_reference": "BANK-77"}).status_code == 302
    again = client.post(f"/settlements/{statement.id}/pay", data={"bank_reference": "BANK-78"})
    assert again.status_code == 409 and "不能重复登记" in again.get_data(as_text=True)
    page = client.get(f"/settlements/{statement.id}").get_data(as_text=True)
    assert "BANK-77" in page and "已付款" in page


def test_parallel_issues_of_one_period_make_one_statement(app, make, world):
    skip_unless_postgres()
    w = world
    paid_order(w.buyer, [(w.tea_batch, 2)], paid_at=at(2, 5))
    finance_id = w.finance.id

    def issue():
        from core.models import User
        return settlements.issue_statements(db.session.get(User, finance_id), period(2))

    outcomes = run_parallel(app, [issue] * 4)
    succeeded = [o for o in outcomes if isinstance(o, list) and o]
    assert len(succeeded) == 1, outcomes
    assert all(getattr(o, "code", None) == "statement_exists" for o in outcomes if o not in succeeded), outcomes
    assert db.session.scalar(sa.select(sa.func.count(SettlementStatement.id))) == 1
    assert db.session.scalar(sa.select(sa.func.count(SettlementLine.id))) == 1


def test_the_cooperative_members_are_told_when_a_statement_is_issued_and_paid(client, make, world):
    from core.notifications import Notification

    w = world
    paid_order(w.buyer, [(w.tea_batch, 2)], paid_at=at(2, 5))
    [statement] = _issue(client, make, w.finance, period(2)).get_json()["items"]
    client.post(f"/api/v1/settlements/{statement['id']}/pay", json={"bank_reference": "HX20261207009"},
                headers=make.headers(w.finance))
    notices = db.session.scalars(sa.select(Notification).order_by(Notification.id)).all()
    assert [(n.user_id, n.kind) for n in notices] == [(w.member_a.id, "statement_issued"),
                                                      (w.member_a.id, "statement_paid")]
    assert "¥256.00" in notices[0].title and "HX20261207009" in notices[1].body
    assert notices[1].link == f"/settlements/{statement['id']}"
    inbox = client.get("/api/v1/notifications?unread=1", headers=make.headers(w.member_a)).get_json()
    assert inbox["total"] == 2
    assert client.get("/api/v1/notifications", headers=make.headers(w.member_b)).get_json()["total"] == 0


def test_a_statement_of_only_a_late_refund_has_nothing_to_pay(client, make, world):
    """A period with only a refund of an order settled before: net negative, so no payment is
    recorded (409 nothing_to_pay), the page shows no pay form, the desk does not count it unpaid."""
    w = world
    order = paid_order(w.buyer, [(w.tea_batch, 2)], paid_at=at(3, 5))
    first_period = period(3)
    with replay_clock(at(2, 1, 9)):
        [first] = settlements.issue_statements(w.finance, first_period)
    _refund(w, order, 5_000, at(2, 10))
    [late] = _issue(client, make, w.finance, period(2)).get_json()["items"]
    assert (late["gross_fen"], late["refunds_fen"], late["net_fen"]) == (0, 5_000, -5_000)
    refused = client.post(f"/api/v1/settlements/{late['id']}/pay", json={"bank_reference": "HX-NEG"},
                          headers=make.headers(w.finance))
    assert refused.status_code == 409, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "nothing_to_pay" and "无需付款" in error["message"] and "抵扣" in error["message"]
    assert error["fields"] == {}
    db.session.expire_all()
    assert db.session.get(SettlementStatement, late["id"]).status == "issued"
    assert settlements.settlement_overview()["unpaid_count"] == 1  # the first statement only
    assert settlements.settlement_overview()["unpaid_fen"] == first.net_fen == 25_600

    with client.session_transaction() as session:
        session.update(user_id=w.finance.id, gen=w.finance.token_generation, sid="test-sid-neg")
    page = client.get(f"/settlements/{late['id']}").get_data(as_text=True)
    assert 'id="pay-statement"' not in page and 'id="nothing-to-pay"' in page and "无需付款" in page
    assert 'id="pay-statement"' in client.get(f"/settlements/{first.id}").get_data(as_text=True)
    again = client.post(f"/settlements/{late['id']}/pay", data={"bank_reference": "BANK-NEG"})
    assert again.status_code == 409 and "无需付款" in again.get_data(as_text=True)
    assert db.session.get(SettlementStatement, late["id"]).status == "issued"


def test_the_digest_is_the_same_for_a_moment_given_in_shanghai_time(make, world):
    """A line's moment still held as the factory gave it (Asia/Shanghai, identity-mapped) and the
    same moment read back from the database (UTC) give one digest; reconcile finds nothing."""
    w = world
    order = paid_order(w.buyer, [(w.tea_batch, 1)], paid_at=at(2, 5))
    [allocation] = order.allocations
    allocation.paid_at = at(2, 5)  # the same instant, as an aware Asia/Shanghai datetime, kept in the session
    [statement] = settlements.issue_statements(w.finance, period(2))
    digest = statement.content_sha256
    db.session.expire_all()
    stored = db.session.get(SettlementStatement, statement.id)
    assert stored.lines[0].occurred_at.utcoffset() == timedelta(0)
    assert settlements.content_digest(stored) == digest
    assert settlements.reconcile_settlements(months_ago(2)[0]) == []
    # The cutoff too: the same statement with its cutoff given in Shanghai time has the same digest.
    shanghai = SettlementStatement(cooperative_id=stored.cooperative_id, period=stored.period,
                                   cutoff_at=stored.cutoff_at.astimezone(SHANGHAI), gross_fen=stored.gross_fen,
                                   refunds_fen=stored.refunds_fen, net_fen=stored.net_fen,
                                   line_count=stored.line_count)
    assert settlements.content_digest(shanghai, list(stored.lines)) == digest


def test_reconcile_catches_a_refund_line_dated_after_the_cutoff(runner, make, world):
    w = world
    order = paid_order(w.buyer, [(w.tea_batch, 3)], paid_at=at(2, 5))
    _refund(w, order, 1_000, at(2, 6))
    [statement] = settlements.issue_statements(w.finance, period(2))
    year = months_ago(2)[0]
    assert settlements.reconcile_settlements(year) == []
    # The refund the statement settled is moved past the statement's cutoff.
    later = (statement.cutoff_at + timedelta(days=1)).astimezone(timezone.utc).replace(tzinfo=None)
    db.session.execute(sa.text("UPDATE refunds SET created_at = :later"), {"later": later})
    db.session.commit()
    problems = settlements.reconcile_settlements(year)
    assert [p["statement_id"] for p in problems] == [statement.id]
    assert "退款明细与原始退款分摊" in problems[0]["problem"]
    assert _reconcile(runner, year).exit_code == 1


def test_a_payment_just_after_midnight_shanghai_on_the_first_is_in_the_new_month(make, world):
    """00:30 on the 1st in Asia/Shanghai is still the previous day in UTC: it belongs to the new
    month's period; 23:30 on the last day of the old month belongs to the old one."""
    w = world
    old_year, old_month = months_ago(2)
    new_year, new_month = months_ago(1)
    last_day = calendar.monthrange(old_year, old_month)[1]
    late_evening = datetime(old_year, old_month, last_day, 23, 30, tzinfo=SHANGHAI)
    after_midnight = datetime(new_year, new_month, 1, 0, 30, tzinfo=SHANGHAI)
    assert after_midnight.astimezone(timezone.utc).month == old_month  # still the old month in UTC
    old = paid_order(w.buyer, [(w.tea_batch, 1)], paid_at=late_evening)
    new = paid_order(w.buyer, [(w.tea_batch, 2)], paid_at=after_midnight)

    [old_statement] = settlements.issue_statements(w.finance, period(2))
    assert [line.order_number for line in old_statement.lines] == [old.number]
    assert old_statement.net_fen == 12_800
    [new_statement] = settlements.issue_statements(w.finance, period(1))
    assert [line.order_number for line in new_statement.lines] == [new.number]
    assert new_statement.net_fen == 25_600
