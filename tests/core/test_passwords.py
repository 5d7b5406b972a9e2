"""The password rule: length, the bundled common-password list, not the e-mail; the demo's
password passes it."""
import pytest

from core.passwords import common_passwords, password_problems


def test_the_bundled_list_is_loaded():
    assert len(common_passwords()) > 8000
    assert {"password123", "12345678", "qwertyuiop"} <= common_passwords()


@pytest.mark.parametrize("password", ["short", "x" * 129, "PASSWORD123", "12345678", "aaaaaaaaaa", "Iloveyou1"])
def test_weak_passwords_are_refused(password):
    assert password_problems(password, "li@test.cn")


@pytest.mark.parametrize("password, email", [("li.si@test.cn", "Li.Si@test.cn"), ("LI.SI.WANG", "li.si.wang@test.cn")])
def test_the_email_or_its_name_is_refused(password, email):
    assert password_problems(password, email) == ["密码不能与邮箱相同"]


def test_the_demo_password_passes_the_rule():
    from core.demo import DEMO_PASSWORD
    from certification.demo import DEMO_PASSWORD as CERTIFICATION_DEMO_PASSWORD

    assert DEMO_PASSWORD == CERTIFICATION_DEMO_PASSWORD == "xiangban2025"
    assert password_problems(DEMO_PASSWORD, "admin@xiangban.test") == []


def test_demo_accounts_sign_in_with_the_readme_password(runner, client):
    assert runner.invoke(args=["demo"]).exit_code == 0
    response = client.post("/api/v1/auth/token", json={"email": "admin@xiangban.test", "password": "xiangban2025"})
    assert response.status_code == 200


def test_the_command_line_refuses_a_common_password(runner):
    result = runner.invoke(args=["users", "create", "x@test.cn", "--role", "finance", "--password", "password123"])
    assert result.exit_code != 0
    assert "常见" in result.output
