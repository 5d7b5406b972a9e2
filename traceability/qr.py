"""QR code images of trace URLs (qrcode + Pillow, error correction level M).

Encoding costs ~12 ms per code (mostly the mask search), so PNG bytes are kept in a
per-process LRU keyed by the exact text: a label sheet or a re-fetched ``qr.png`` is encoded once.
"""
import base64
import io
from functools import lru_cache

import qrcode
from qrcode.constants import ERROR_CORRECT_M


@lru_cache(maxsize=4096)
def qr_png(text: str, box_size: int = 8) -> bytes:
    """Return a PNG QR code (level M, 4-module quiet zone) whose content is exactly ``text``."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box_size, border=4)
    code.add_data(text)
    code.make(fit=True)
    image = code.make_image(fill_color="black", back_color="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def qr_data_uri(text: str, box_size: int = 4) -> str:
    """A ``data:image/png;base64,…`` URI of the QR code, for inline use in printable pages."""
    return "data:image/png;base64," + base64.b64encode(qr_png(text, box_size)).decode("ascii")
