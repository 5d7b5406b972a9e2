"""The contract's commands: setup is idempotent, users create prints an id, demo loads once."""
import sqlalchemy as sa

from core.extensions import db
from core.models import Role, User, Village


def test_setup_twice_keeps_exactly_the_registry(runner):
    for _ in range(2):
        result = runner.invoke(args=["setup"])
        assert result.exit_code == 0, result.output
        assert "新增 0 个" in result.output
    assert db.session.scalar(sa.select(sa.func.count(Village.id))) == 1110


def test_users_create_prints_the_new_id(runner, make):
    cooperative = make.cooperative()
    result = runner.invoke(args=["users", "create", "coop@test.cn", "--role", "cooperative",
                                 "--password", "password123", "--cooperative", str(cooperative.id)])
    assert result.exit_code == 0, result.output
    user = db.session.get(User, int(result.output.strip()))
    assert user.role == "cooperative" and user.cooperative_id == cooperative.id
    assert user.check_password("password123")


def test_users_create_county_reviewer_needs_a_known_county(runner):
    missing = runner.invoke(args=["users", "create", "r@test.cn", "--role", "county_reviewer", "--password", "password123"])
    assert missing.exit_code != 0
    wrong = runner.invoke(args=["users", "create", "r@test.cn", "--role", "county_reviewer",
                                "--password", "password123", "--county", "长沙县"])
    assert wrong.exit_code != 0
    ok = runner.invoke(args=["users", "create", "r@test.cn", "--role", "county_reviewer",
                             "--password", "password123", "--county", "花垣县"])
    assert ok.exit_code == 0, ok.output
    assert db.session.get(User, int(ok.output.strip())).county == "花垣县"


def test_users_create_refuses_unknown_role_and_foreign_scope(runner, make):
    assert runner.invoke(args=["users", "create", "x@test.cn", "--role", "king", "--password", "password123"]).exit_code != 0
    foreign = runner.invoke(args=["users", "create", "x@test.cn", "--role", "consumer", "--password", "password123",
                                  "--county", "花垣县"])
    assert foreign.exit_code != 0
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_demo_creates_one_account_per_role_and_runs_once(runner):
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    roles = set(db.session.scalars(sa.select(User.role)))
    assert roles == {role.value for role in Role}
    from core.audit import AuditEvent, verify_chain

    assert db.session.scalar(sa.select(AuditEvent.action).where(AuditEvent.subject_type == "budget_unit")) == "create"
    assert verify_chain().ok
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0 and "已存在" in second.output
