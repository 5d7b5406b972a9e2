"""Every failure has the contract's error shape (API) or a Chinese page (HTML)."""
import pytest


def _assert_error_shape(body, code=None):
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert isinstance(body["error"]["fields"], dict)
    if code:
        assert body["error"]["code"] == code


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"", b'"text"'])
def test_malformed_json_is_400(client, payload):
    response = client.post("/api/v1/auth/register", data=payload, content_type="application/json")
    assert response.status_code == 400
    _assert_error_shape(response.json, "malformed_json")


def test_invalid_input_is_422_with_fields(client):
    response = client.post("/api/v1/auth/register", json={"email": "nope", "password": 5})
    assert response.status_code == 422
    _assert_error_shape(response.json, "validation_error")
    assert {"email", "password", "display_name"} <= set(response.json["error"]["fields"])


def test_unknown_api_path_is_json_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    _assert_error_shape(response.json, "not_found")


def test_wrong_method_is_json_405(client):
    response = client.delete("/api/v1/villages")
    assert response.status_code == 405
    _assert_error_shape(response.json, "method_not_allowed")


def test_html_404_is_a_chinese_page(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert "页面不存在" in response.get_data(as_text=True)


def test_unexpected_exception_is_a_500_in_shape_without_details(tmp_path):
    from core.app import create_app

    app = create_app({"SECRET_KEY": "x", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})

    @app.get("/api/v1/_boom_for_test")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/v1/_boom_for_test")
    assert response.status_code == 500
    _assert_error_shape(response.json, "internal_error")
    assert "secret" not in response.get_data(as_text=True)


@pytest.mark.parametrize("query", ["page=0", "page=x", "per_page=2001", "per_page=-1"])
def test_bad_pagination_is_422(client, query):
    response = client.get(f"/api/v1/villages?{query}")
    assert response.status_code == 422
    _assert_error_shape(response.json, "validation_error")


def test_error_pages_name_parameters_in_chinese_and_hide_program_details(client, make):
    from core.models import Role

    official = make.user(Role.OFFICIAL)
    client.post("/login", data={"email": official.email, "password": "password123"})
    html = client.get("/reports/villages?page=abc").get_data(as_text=True)
    assert "页码：" in html and "page：" not in html


def test_unicode_digits_are_not_numbers_anywhere_input_is_read():
    from core.identifiers import is_valid_gtin, whole_number

    assert whole_number(" 2026 ") == 2026
    assert [whole_number(text) for text in ("²", "٣", "2026²", "-1", "1.5", "", None, "9" * 13)] == [None] * 8
    assert not is_valid_gtin("690123456789²")


def test_a_signed_cart_cookie_with_unicode_digit_keys_is_ignored_not_a_crash(client):
    from shop.views import CART_COOKIE, _cookie_serializer

    client.set_cookie(CART_COOKIE, _cookie_serializer().dumps({"²": 1}))
    response = client.get("/cart")
    assert response.status_code == 200 and "购物车是空的" in response.get_data(as_text=True)
