"""Helpers shared by the traceability tests: QR decoding, GTINs, URL surgery."""
import base64
import io
import re
from urllib.parse import urlsplit

import zxingcpp
from PIL import Image

from core.identifiers import gtin_check_digit


def decode_qr(png: bytes) -> str:
    """The text of the single QR code in a PNG, decoded by zxing-cpp.

    Read as QR codes only, as a phone's scanner does: with every format enabled zxing-cpp
    sometimes also "finds" a short ITF (1D) code in a row of QR modules (about 1 code in
    1,700: https://trace.example.cn/t/1/KRAZS229RQCB?s=k0.CJ_X8DQMjricDTYd also reads as ITF
    "2742"), which says nothing about the QR code, decoded exactly as ever.
    """
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 1, "expected exactly one QR code in the image"
    return results[0].text


def data_uri_pngs(html: str) -> list[bytes]:
    """Every inline ``data:image/png;base64,…`` image of a page, decoded."""
    return [base64.b64decode(chunk) for chunk in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def make_gtin13(body12: str = "690123456789") -> str:
    """A GTIN-13 with a GS1 China prefix and a correct check digit."""
    return body12 + str(gtin_check_digit(body12))


def make_gtin14(body12: str = "690123456789") -> str:
    """The GTIN-14 form (leading zero) of ``make_gtin13``."""
    return "0" + make_gtin13(body12)


def path_of(url: str) -> str:
    """Path and query of an absolute URL, for the test client."""
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")
