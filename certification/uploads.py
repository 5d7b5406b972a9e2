"""Uploaded pictures (product photos, scanned evidence): opened for real, re-encoded, stored safely.

Nothing a client sends is written to disk as sent. A file is read with a byte limit, opened
by Pillow restricted to JPEG/PNG/WebP, its declared size checked against a pixel limit
*before* decoding (a 100 kB PNG can declare 30,000 × 30,000 pixels), verified, fully decoded,
then re-encoded as a fresh JPEG without EXIF/ICC/text chunks under a random name. Whatever
fails any step is refused with 422 and leaves nothing behind.
"""
import hashlib
import io
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ValidationFailed

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# A 48-megapixel phone photo is 8000 × 6000; decoding 40 MP RGB costs ~120 MB, our ceiling.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_EDGE = 1600
THUMBNAIL_EDGE = 480
JPEG_QUALITY = 85

# Generated names only: 32 hex characters, optional "-s" (thumbnail), ".jpg".
STORED_NAME = re.compile(r"^[0-9a-f]{32}(-s)?\.jpg$")


@dataclass(frozen=True)
class ProcessedImage:
    """A re-encoded picture ready to store: full size, thumbnail, and their dimensions."""

    data: bytes
    thumbnail: bytes
    width: int
    height: int
    sha256: str


def _setting(name: str, default: int) -> int:
    """Return an integer upload setting from the app config (tests) or the environment."""
    value = current_app.config.get(name)
    if value is None:
        value = os.environ.get(name, default)
    return int(value)


def upload_dir() -> Path:
    """Return the configured upload root (``UPLOAD_DIR``, default ``instance/uploads``)."""
    configured = current_app.config.get("UPLOAD_DIR") or os.environ.get("UPLOAD_DIR")
    return Path(configured) if configured else Path(current_app.instance_path) / "uploads"


def read_limited(stream, field: str = "file") -> bytes:
    """Read an upload stream, refusing more than ``UPLOAD_MAX_BYTES``.

    :raise ValidationFailed: the file is empty or too large.
    """
    max_bytes = _setting("UPLOAD_MAX_BYTES", DEFAULT_MAX_BYTES)
    data = stream.read(max_bytes + 1)
    if not data:
        raise ValidationFailed("文件为空", code="invalid_image", fields={field: ["文件为空"]})
    if len(data) > max_bytes:
        message = f"文件过大（上限 {max_bytes // (1024 * 1024)} MB）"
        raise ValidationFailed(message, code="file_too_large", fields={field: [message]})
    return data


def _refuse(message: str, field: str, code: str = "invalid_image"):
    raise ValidationFailed(message, code=code, fields={field: [message]})


def process_image(data: bytes, field: str = "file") -> ProcessedImage:
    """Validate picture bytes and return them re-encoded (JPEG, metadata stripped, bounded size).

    :raise ValidationFailed: not a JPEG/PNG/WebP, broken, too many pixels, or a decompression bomb.
    """
    max_pixels = _setting("UPLOAD_MAX_PIXELS", DEFAULT_MAX_PIXELS)
    max_edge = _setting("UPLOAD_MAX_EDGE", DEFAULT_MAX_EDGE)
    try:
        # formats= restricts which decoders Pillow may even try: no GIF, TIFF, PSD, EPS ...
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
            width, height = probe.size
            if width < 1 or height < 1 or width * height > max_pixels:
                _refuse(f"图片像素过多（{width}×{height}，上限 {max_pixels // 1_000_000} 百万像素）",
                        field, "too_many_pixels")
            probe.verify()
        # verify() leaves the image unusable; decode again from the start.
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            scale = min(max_edge / width, max_edge / height, 1)
            if image.format == "JPEG" and scale < 1:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 size (never below the target): a 12 MP
                # photo shrunk to 1600 px then costs a fraction of a full decode.
                image.draft("RGB", (max(int(width * scale), 1), max(int(height * scale), 1)))
            image.load()
            picture = _flatten(ImageOps.exif_transpose(image))
    except ValidationFailed:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        _refuse("图片像素过多（疑似解压炸弹）", field, "too_many_pixels")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        _refuse("文件不是有效的 JPEG、PNG 或 WebP 图片", field)
    picture.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS, reducing_gap=2.0)
    full = _encode(picture)
    small = picture.copy()
    small.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return ProcessedImage(full, _encode(small), picture.width, picture.height, hashlib.sha256(full).hexdigest())


def _flatten(image: Image.Image) -> Image.Image:
    """Return an RGB copy, compositing transparency onto white (JPEG has no alpha)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image) -> bytes:
    """Encode as a progressive JPEG; a new file carries no EXIF, GPS, ICC or comments."""
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    return out.getvalue()


def store(kind: str, processed: ProcessedImage) -> str:
    """Write a processed image (and its thumbnail) under a fresh random name; return the name."""
    folder = upload_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    name = f"{token}.jpg"
    for filename, payload in ((name, processed.data), (f"{token}-s.jpg", processed.thumbnail)):
        temporary = folder / f".{filename}.tmp"
        temporary.write_bytes(payload)
        # Atomic rename: a reader never sees half a file.
        os.replace(temporary, folder / filename)
    return name


def thumbnail_name(name: str) -> str:
    """Return the thumbnail's stored name for a full-size stored name."""
    return name[:-4] + "-s.jpg"


def remove(kind: str, name: str | None) -> None:
    """Delete a stored image and its thumbnail, ignoring files already gone."""
    if not name or not STORED_NAME.match(name):
        return
    for filename in (name, thumbnail_name(name)):
        try:
            (upload_dir() / kind / filename).unlink()
        except FileNotFoundError:
            pass


def stored_path(kind: str, name: str) -> Path | None:
    """Return the path of a stored file if ``name`` is one we generate and it exists."""
    if not STORED_NAME.match(name):
        return None
    path = upload_dir() / kind / name
    return path if path.is_file() else None
