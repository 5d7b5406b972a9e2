"""Trace URLs: shapes, HMAC signatures, key rotation, serials."""
import base64
import re

import pytest
from flask import current_app

from traceability import codes, signing
from tests.traceability.helpers import make_gtin14


@pytest.fixture
def keys(app):
    """Set TRACE_SIGNING_KEYS for one test, restoring the default after."""
    def use(value):
        app.config["TRACE_SIGNING_KEYS"] = value
    yield use
    app.config.pop("TRACE_SIGNING_KEYS", None)


def test_gtin_url_is_a_digital_link_under_the_public_base_url():
    url = codes.trace_url(7, "GZMJ-2026/04", make_gtin14(), "ABCDEFGHJKMN")
    assert url.startswith(f"https://trace.example.cn/01/{make_gtin14()}/10/GZMJ-2026%2F04/21/ABCDEFGHJKMN?s=k0.")


def test_url_without_gtin_is_the_short_platform_path():
    assert re.fullmatch(r"https://trace\.example\.cn/t/7\?s=k0\.[A-Za-z0-9_-]{16}", codes.trace_url(7, "L1", None))
    assert codes.trace_url(7, "L1", None, "ABCDEFGHJKMN").startswith("https://trace.example.cn/t/7/ABCDEFGHJKMN?s=")


def test_mac_is_at_least_80_bits_and_urls_stay_short():
    mac = codes.trace_url(7, "L1", None).rsplit(".", 1)[1]
    assert len(base64.urlsafe_b64decode(mac + "==")) * 8 >= 80
    assert len(codes.trace_url(123456, "GZMJ-20260415-01", make_gtin14(), "ABCDEFGHJKMN")) < 110


def test_a_valid_signature_verifies_and_any_change_fails():
    code = codes.parse_digital_link(f"/01/{make_gtin14()}/10/L1/21/ABCDEFGHJKMN")
    signature = signing.sign(code.canonical_path)
    assert codes.is_authentic(code, signature)
    key_id, mac = signature.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for bad in (f"{key_id}.{flipped}", f"k9.{mac}", mac, "", None, f"{key_id}.{mac}x", f"{key_id}.{mac[:-1]}"):
        assert not codes.is_authentic(code, bad)
    other = codes.parse_digital_link(f"/01/{make_gtin14()}/10/L2/21/ABCDEFGHJKMN")
    assert not codes.is_authentic(other, signature)


def test_default_key_is_derived_from_secret_key_under_its_own_label(app):
    ((key_id, secret),) = signing.signing_keys()
    assert key_id == "k0"
    assert secret == signing.derive_default_secret(current_app.config["SECRET_KEY"])
    assert secret not in (current_app.config["SECRET_KEY"].encode(), signing.derive_default_secret("other"))


def test_rotated_key_still_verifies_old_urls_until_it_is_removed(keys):
    keys([("k1", "first-secret-0123456789")])
    old_path = codes.code_for(5, "L1", None).canonical_path
    old_signature = signing.sign(old_path)
    keys([("k2", "second-secret-0123456789"), ("k1", "first-secret-0123456789")])
    new_signature = signing.sign(old_path)
    assert new_signature.startswith("k2.")
    assert signing.verify(old_path, old_signature) and signing.verify(old_path, new_signature)
    keys([("k2", "second-secret-0123456789")])
    assert not signing.verify(old_path, old_signature)
    assert signing.verify(old_path, new_signature)


def test_keys_from_the_environment_form_and_the_secret_key_alias(keys):
    keys("k1:another-secret-01234567, k0:@SECRET_KEY")
    assert [key_id for key_id, _ in signing.signing_keys()] == ["k1", "k0"]
    assert dict(signing.signing_keys())["k0"] == signing.derive_default_secret(current_app.config["SECRET_KEY"])


@pytest.mark.parametrize("bad", ["k1", "k1:short", "bad id:0123456789abcdef0", "k1:0123456789abcdef,k1:0123456789abcdef"])
def test_unusable_key_settings_are_refused(keys, bad):
    keys(bad)
    with pytest.raises(signing.SigningConfigError):
        signing.signing_keys()


def test_serials_are_unique_crockford_base32_with_60_random_bits():
    serials = {codes.new_serial() for _ in range(5000)}
    assert len(serials) == 5000
    assert all(re.fullmatch(r"[0-9ABCDEFGHJKMNPQRSTVWXYZ]{12}", serial) for serial in serials)


@pytest.mark.parametrize("batch_id,serial", [("0", None), ("01", None), ("x", None), ("12345678901", None),
                                             ("5", "abc"), ("5", "ABCDEFGHJKMNP"), ("5", "ABCDEFGHJKMI")])
def test_short_paths_that_we_never_issue_are_not_codes(batch_id, serial):
    assert codes.parse_short(batch_id, serial) is None


def test_a_qr_code_that_also_looks_like_a_1d_barcode_still_decodes_exactly():
    from tests.traceability.helpers import decode_qr
    from traceability.qr import qr_png

    url = "https://trace.example.cn/t/1/KRAZS229RQCB?s=k0.CJ_X8DQMjricDTYd"  # zxing also reads ITF "2742" in it
    assert decode_qr(qr_png(url)) == url
