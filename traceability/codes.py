"""Trace codes: the public, signed URL printed as a QR code on a batch or item label.

Two shapes: a GS1 Digital Link URI when the product has a GTIN
(``/01/{gtin14}/10/{lot}[/21/{serial}]``), otherwise the platform's short path
(``/t/{batch_id}[/{serial}]``). Both carry ``?s={key_id}.{mac}`` (see ``signing``).
"""
import re
import secrets
from dataclasses import dataclass
from functools import cached_property, lru_cache

from flask import current_app

from core.identifiers import ID_MAX
from traceability import gs1, signing

# Crockford base32 without I, L, O, U: readable aloud, no look-alikes, URL-safe, in GS1 CSET 82.
SERIAL_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SERIAL_LENGTH = 12  # 60 random bits per serial
_SERIAL = re.compile(rf"^[{SERIAL_ALPHABET}]{{{SERIAL_LENGTH}}}$")
_BATCH_ID = re.compile(r"^[1-9][0-9]{0,9}$")


@dataclass(frozen=True)
class TraceCode:
    """What a scanned URL names: a batch (by id, or by GTIN + lot) and maybe an item serial."""

    batch_id: int | None = None
    gtin14: str | None = None
    lot: str | None = None
    serial: str | None = None
    variant: str | None = None

    @property
    def is_item(self) -> bool:
        return self.serial is not None

    @cached_property
    def batch_key(self) -> str:
        """The canonical path of the batch-level code this code belongs to (item serial dropped)."""
        if self.gtin14 is not None:
            return f"/01/{self.gtin14}/10/{gs1.encode_value(self.lot or '')}"
        return f"/t/{self.batch_id}"

    @cached_property
    def canonical_path(self) -> str:
        """The path the signature covers, in its one canonical encoding."""
        if self.gtin14 is not None:
            path = f"/01/{self.gtin14}"
            if self.variant is not None:
                path += f"/22/{gs1.encode_value(self.variant)}"
            if self.lot is not None:
                path += f"/10/{gs1.encode_value(self.lot)}"
            if self.serial is not None:
                path += f"/21/{gs1.encode_value(self.serial)}"
            return path
        path = f"/t/{self.batch_id}"
        if self.serial is not None:
            path += f"/{self.serial}"
        return path


def new_serial() -> str:
    """Return a fresh unguessable item serial (``secrets``, 60 bits)."""
    return "".join(secrets.choice(SERIAL_ALPHABET) for _ in range(SERIAL_LENGTH))


def gtin14_of(gtin: str | None) -> str | None:
    """The GTIN-14 form of a stored GTIN (stored forms may be 8/12/13/14 digits)."""
    return gtin.zfill(14) if gtin else None


def stored_gtin_forms(gtin14: str) -> list[str]:
    """Every shorter GTIN spelling that pads to ``gtin14`` (how a product may have stored it)."""
    forms = [gtin14]
    for length in (13, 12, 8):
        if gtin14[: 14 - length] == "0" * (14 - length):
            forms.append(gtin14[14 - length:])
    return forms


def code_for(batch_id: int, lot: str, gtin: str | None, serial: str | None = None) -> TraceCode:
    """The code we issue for a batch (or one of its items)."""
    if gtin:
        return TraceCode(gtin14=gtin14_of(gtin), lot=lot, serial=serial)
    return TraceCode(batch_id=batch_id, serial=serial)


def trace_url(batch_id: int, lot: str, gtin: str | None, serial: str | None = None) -> str:
    """The signed public URL of a batch or item: ``PUBLIC_BASE_URL`` + path + ``?s=``."""
    path = code_for(batch_id, lot, gtin, serial).canonical_path
    return f"{current_app.config['PUBLIC_BASE_URL']}{path}?{signing.SIGNATURE_PARAM}={signing.sign(path)}"


def parse_short(batch_id: str, serial: str | None) -> TraceCode | None:
    """Parse ``/t/{batch_id}[/{serial}]``; None when it cannot be one of ours (→ 404)."""
    if not _BATCH_ID.match(batch_id) or int(batch_id) > ID_MAX or (serial is not None and not _SERIAL.match(serial)):
        return None
    return TraceCode(batch_id=int(batch_id), serial=serial)


@lru_cache(maxsize=20_000)
def parse_digital_link(raw_path: str) -> TraceCode:
    """Parse a raw Digital Link path starting at ``/01/`` (cached: labels are scanned repeatedly).

    :raise gs1.MalformedDigitalLink: the URI is malformed (→ 400).
    """
    link = gs1.parse_path(raw_path)
    return TraceCode(gtin14=link.gtin14, lot=link.lot, serial=link.serial, variant=link.variant)


def is_authentic(code: TraceCode, signature: str | None) -> bool:
    """True when the URL's signature verifies under a configured key."""
    return _verified(code, signature, signing.signing_keys())


@lru_cache(maxsize=20_000)
def _verified(code: TraceCode, signature: str | None, keys) -> bool:
    """``is_authentic`` for one key set, remembered: the same label is verified once per worker."""
    return signing.verify(code.canonical_path, signature, keys)
