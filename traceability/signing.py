"""Signatures of trace URLs: HMAC-SHA256 under rotatable keys from configuration.

``TRACE_SIGNING_KEYS`` (config or environment) lists ``(key_id, secret)`` pairs, newest first:
the first signs, all verify. To rotate, put a new key in front and keep the old one as long
as labels signed with it are in circulation; removing a key makes its labels fail.
The environment form is ``"k2:new-secret,k1:old-secret"``; the secret ``@SECRET_KEY`` means
the default key derived from ``SECRET_KEY``, so the default can be kept while rotating away
from it. Without the setting there is one key, ``k0``, derived from ``SECRET_KEY`` under an
explicit label so it never equals a key used for anything else (sessions, API tokens).

The MAC covers the canonical path (``/01/{gtin14}/10/{lot}/21/{serial}`` or
``/t/{batch_id}/{serial}``) but not the host, so moving the service to another domain does not
void printed labels. It is truncated to 16 base64url characters (96 bits, above the 80-bit
floor) to keep URLs short and QR codes sparse enough for cheap printers.
"""
import base64
import hashlib
import hmac
import os
import re

from flask import current_app

DERIVATION_LABEL = b"xiangban/traceability/trace-url-hmac/v1"
DEFAULT_KEY_ID = "k0"
MAC_CHARS = 16  # 16 base64url characters = 96 bits
SIGNATURE_PARAM = "s"
_KEY_ID = re.compile(r"^[A-Za-z0-9]{1,8}$")
_CACHE_KEY = "traceability.signing_keys"


class SigningConfigError(RuntimeError):
    """``TRACE_SIGNING_KEYS`` is unusable; the app must not sign with a guessed key."""


def derive_default_secret(secret_key: str) -> bytes:
    """Return the default trace key: HMAC(SECRET_KEY, derivation label)."""
    return hmac.new(secret_key.encode("utf-8"), DERIVATION_LABEL, hashlib.sha256).digest()


def _parse(setting, secret_key: str) -> tuple[tuple[str, bytes], ...]:
    """Turn the setting (string or pairs) into ``((key_id, secret_bytes), ...)``, validated."""
    if setting is None or setting == "" or setting == []:
        return ((DEFAULT_KEY_ID, derive_default_secret(secret_key)),)
    if isinstance(setting, str):
        pairs = []
        for item in setting.split(","):
            key_id, sep, secret = item.strip().partition(":")
            if not sep:
                raise SigningConfigError("TRACE_SIGNING_KEYS 的每一项须为 key_id:secret")
            pairs.append((key_id.strip(), secret.strip()))
    else:
        pairs = [tuple(pair) for pair in setting]
    keys, seen = [], set()
    for key_id, secret in pairs:
        if not _KEY_ID.match(key_id or ""):
            raise SigningConfigError(f"密钥编号 {key_id!r} 须为 1–8 位字母或数字")
        if key_id in seen:
            raise SigningConfigError(f"密钥编号 {key_id} 重复")
        seen.add(key_id)
        if secret == "@SECRET_KEY":
            material = derive_default_secret(secret_key)
        else:
            material = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
            if len(material) < 16:
                raise SigningConfigError(f"密钥 {key_id} 过短（至少 16 字节）")
        keys.append((key_id, material))
    return tuple(keys)


# The environment is read once: it does not change while the process runs.
_ENV_SETTING = os.environ.get("TRACE_SIGNING_KEYS") or None


def _key_table() -> tuple[tuple[tuple[str, bytes], ...], dict[str, bytes]]:
    """The configured keys as (ordered pairs, by id), parsed once per configuration value.

    Cached on the app because this runs on every scan; a new setting value (tests, a
    reloaded config) takes effect without a restart.
    """
    config = current_app.config
    setting = config.get("TRACE_SIGNING_KEYS", _ENV_SETTING)
    secret_key = config["SECRET_KEY"]
    cached = current_app.extensions.get(_CACHE_KEY)
    if cached is None or cached[0] is not setting or cached[1] != secret_key:
        keys = _parse(setting, secret_key)
        cached = (setting, secret_key, keys, dict(keys))
        current_app.extensions[_CACHE_KEY] = cached
    return cached[2], cached[3]


def signing_keys() -> tuple[tuple[str, bytes], ...]:
    """The configured ``(key_id, secret)`` pairs, the signing key first."""
    return _key_table()[0]


def _mac(secret: bytes, message: str) -> str:
    digest = hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:MAC_CHARS]


def sign(message: str) -> str:
    """Return ``{key_id}.{mac}`` for a canonical trace path, under the current signing key."""
    key_id, secret = signing_keys()[0]
    return f"{key_id}.{_mac(secret, message)}"


def verify(message: str, signature: str | None, keys: tuple[tuple[str, bytes], ...] | None = None) -> bool:
    """True when ``signature`` is a valid ``{key_id}.{mac}`` of ``message`` under a configured key
    (or under ``keys``, the value of ``signing_keys()``, when given)."""
    # compare_digest refuses non-ASCII text with a TypeError; such a signature is simply wrong.
    if not signature or len(signature) > 40 or not signature.isascii():
        return False
    key_id, sep, mac = signature.partition(".")
    if not sep:
        return False
    secret = (dict(keys) if keys is not None else _key_table()[1]).get(key_id)
    if secret is None:
        return False
    return hmac.compare_digest(_mac(secret, message), mac)
