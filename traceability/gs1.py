"""GS1 Digital Link URIs for batches and items: building them and parsing what a phone sends.

Only the subset we issue and resolve: primary key ``01`` (GTIN) with the key qualifiers
``22`` (consumer product variant), ``10`` (batch/lot) and ``21`` (serial), which must appear
in that order. A URI that breaks the syntax is *malformed* (the resolver answers 400); one
that parses but names nothing we issued is *unknown* (404).
"""
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from core.identifiers import gtin_check_digit

# Key qualifiers of GTIN in the order GS1 Digital Link 1.1 requires them.
QUALIFIER_ORDER = ("22", "10", "21")
# Maximum lengths of the AI values (GS1 General Specifications: X..20).
MAX_LENGTH = {"22": 20, "10": 20, "21": 20}
# GS1 AI encodable character set 82: what AI (10) and (21) values may contain.
_CSET82 = re.compile(r"""^[!"%&'()*+,\-./0-9:;<=>?A-Z_a-z]+$""")


class MalformedDigitalLink(ValueError):
    """The path is not a well-formed GS1 Digital Link URI (answer 400)."""


@dataclass(frozen=True)
class DigitalLink:
    """The identifiers of a parsed Digital Link path, values decoded."""

    gtin14: str
    lot: str | None = None
    serial: str | None = None
    variant: str | None = None


def is_cset82(value: str) -> bool:
    """True when ``value`` uses only GS1 AI encodable character set 82."""
    return bool(_CSET82.match(value))


def encode_value(value: str) -> str:
    """Percent-encode an AI value for a URI path segment (GS1 DL 1.1 §: all but unreserved)."""
    return quote(value, safe="")


def normalise_gtin(gtin: str) -> str:
    """Return the GTIN-14 form of a GTIN-8/12/13/14.

    :raise MalformedDigitalLink: not 8, 12, 13 or 14 digits, or a wrong check digit.
    """
    if not gtin.isascii() or not gtin.isdigit() or len(gtin) not in (8, 12, 13, 14):
        raise MalformedDigitalLink("GTIN 必须是 8、12、13 或 14 位数字")
    if gtin_check_digit(gtin[:-1]) != int(gtin[-1]):
        raise MalformedDigitalLink("GTIN 校验位错误")
    return gtin.zfill(14)


def build_path(gtin14: str, lot: str, serial: str | None = None) -> str:
    """Return the Digital Link path ``/01/{gtin14}/10/{lot}[/21/{serial}]`` (canonical encoding)."""
    path = f"/01/{gtin14}/10/{encode_value(lot)}"
    if serial is not None:
        path += f"/21/{encode_value(serial)}"
    return path


def parse_path(raw_path: str) -> DigitalLink:
    """Parse the part of a raw (still percent-encoded) URI path from ``/01/`` on.

    Segments are split before decoding, so an encoded ``/`` (``%2F``) in a lot stays part
    of the lot.

    :raise MalformedDigitalLink: missing or bad GTIN, odd segments, unknown or repeated
        qualifier, qualifiers out of order, empty or over-long values, characters outside
        GS1 character set 82.
    """
    segments = raw_path.strip("/").split("/")
    if len(segments) < 2 or segments[0] != "01":
        raise MalformedDigitalLink("缺少 GTIN（/01/…）")
    gtin14 = normalise_gtin(unquote(segments[1]))
    rest = segments[2:]
    if len(rest) % 2:
        raise MalformedDigitalLink("限定符与取值不成对")
    values: dict[str, str] = {}
    last_position = -1
    for index in range(0, len(rest), 2):
        ai, raw_value = rest[index], rest[index + 1]
        if ai not in QUALIFIER_ORDER:
            raise MalformedDigitalLink(f"不支持的限定符 {ai}")
        position = QUALIFIER_ORDER.index(ai)
        if position <= last_position:
            raise MalformedDigitalLink("限定符顺序错误（应为 22、10、21）")
        last_position = position
        try:
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise MalformedDigitalLink(f"限定符 {ai} 的取值编码错误") from None
        if not value or len(value) > MAX_LENGTH[ai] or not is_cset82(value):
            raise MalformedDigitalLink(f"限定符 {ai} 的取值不合规（1–{MAX_LENGTH[ai]} 个 GS1 允许的字符）")
        values[ai] = value
    return DigitalLink(gtin14=gtin14, lot=values.get("10"), serial=values.get("21"), variant=values.get("22"))
