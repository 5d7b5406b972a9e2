"""Uploaded files (product photos, scanned evidence): opened for real, re-written, stored safely.

Nothing a client sends is written to disk as sent. A file is read with a byte limit, opened
by Pillow restricted to JPEG/PNG/WebP, its declared size checked against a pixel limit
*before* decoding (a 100 kB PNG can declare 30,000 × 30,000 pixels), verified, fully decoded,
then re-encoded as a fresh JPEG without EXIF/ICC/text chunks under a random name. Whatever
fails any step is refused with 422 and leaves nothing behind.

Evidence may also be a PDF (certificates and test reports usually are). Its kind is decided
by its first bytes, never by the client's name or content type. pypdf opens it (an owner-password
lock that viewers open without asking is opened the same way); password-protected,
unparsable, empty or over-long documents are refused; the pages alone are copied into a new
document (no catalogue: no OpenAction, document JavaScript, forms, attachments, outlines or
metadata), each page reduced to the keys needed to draw it (no annotations, no page actions),
and the result is read back and walked to prove no script, action or attached file survived.
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
from pypdf import PdfReader, PdfWriter
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, NameObject

from core.config import upload_root
from core.errors import ValidationFailed

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# A 48-megapixel phone photo is 8000 × 6000; decoding 40 MP RGB costs ~120 MB, our ceiling.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_EDGE = 1600
THUMBNAIL_EDGE = 480
JPEG_QUALITY = 85

PDF_MAGIC = b"%PDF-"
DEFAULT_MAX_PDF_PAGES = 20
# Decompressed drawing instructions of a whole evidence PDF: text pages are kilobytes each.
MAX_PDF_INFLATED_BYTES = 50 * 1024 * 1024
# What a viewer needs to draw a page. Everything else on a page goes: /Annots (links, form
# widgets, attached files), /AA (actions on open/close), thumbnails, structure, beads, and any
# private key that could drag other objects (even the original catalogue) into the copy.
PDF_PAGE_KEYS = frozenset({"/Type", "/MediaBox", "/CropBox", "/BleedBox", "/TrimBox", "/ArtBox", "/Rotate",
                           "/Resources", "/Contents", "/UserUnit", "/Group"})
PDF_RESOURCE_KEYS = frozenset({"/ExtGState", "/ColorSpace", "/Pattern", "/Shading", "/XObject", "/Font",
                               "/ProcSet", "/Properties"})
# Nothing reachable in a stored PDF may carry these: scripts, automatic actions, forms,
# attached or embedded files, rich media.
PDF_FORBIDDEN_KEYS = frozenset({"/JS", "/JavaScript", "/OpenAction", "/AA", "/AcroForm", "/XFA", "/EmbeddedFile",
                                "/EmbeddedFiles", "/EF", "/RichMediaContent", "/RichMediaSettings"})
PDF_FORBIDDEN_ACTIONS = frozenset({"/JavaScript", "/Launch", "/SubmitForm", "/ImportData", "/GoToE", "/GoToR",
                                   "/RichMediaExecute", "/Rendition", "/Sound", "/Movie", "/URI"})

# Generated names only: 32 hex characters, then "-s" (thumbnail) or nothing, ".jpg"; evidence
# PDFs carry their page count ("-12p.pdf"): a name we wrote is trusted, and pages show the
# count without opening the file (the evidence table has no column for it).
IMAGE_NAME = re.compile(r"^[0-9a-f]{32}(-s)?\.jpg$")
PDF_NAME = re.compile(r"^[0-9a-f]{32}-([1-9][0-9]{0,5})p\.pdf$")
STORED_NAME = re.compile(f"{IMAGE_NAME.pattern}|{PDF_NAME.pattern}")
# Which generated names each upload folder may serve: product photos are never PDFs.
KIND_NAMES = {"products": IMAGE_NAME, "evidence": STORED_NAME}


@dataclass(frozen=True)
class ProcessedImage:
    """A re-encoded picture ready to store: full size, thumbnail, and their dimensions."""

    data: bytes
    thumbnail: bytes
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class ProcessedPdf:
    """A re-written PDF ready to store: its bytes and page count."""

    data: bytes
    pages: int
    sha256: str


def _setting(name: str, default: int) -> int:
    """Return an integer upload setting from the app config (tests) or the environment."""
    value = current_app.config.get(name)
    if value is None:
        value = os.environ.get(name, default)
    return int(value)


def max_pdf_pages() -> int:
    """Return how many pages an evidence PDF may have (``EVIDENCE_MAX_PDF_PAGES``, default 20)."""
    return _setting("EVIDENCE_MAX_PDF_PAGES", DEFAULT_MAX_PDF_PAGES)


def upload_dir() -> Path:
    """Return the configured upload root (``UPLOAD_DIR``, default ``instance/uploads``)."""
    return upload_root(current_app)


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


def process_evidence(data: bytes, field: str = "file") -> ProcessedImage | ProcessedPdf:
    """Validate an evidence scan: a PDF when it starts with ``%PDF-``, otherwise a picture.

    :raise ValidationFailed: neither an acceptable PDF nor a JPEG/PNG/WebP picture.
    """
    if data.startswith(PDF_MAGIC):
        return process_pdf(data, field)
    try:
        return process_image(data, field)
    except ValidationFailed as exc:
        if exc.code != "invalid_image":
            raise
        _refuse("文件不是有效的 JPEG、PNG、WebP 图片或 PDF 文件", field, "invalid_file")


def process_pdf(data: bytes, field: str = "file") -> ProcessedPdf:
    """Open a PDF for real and return its pages re-written into a new, inert document.

    :raise ValidationFailed: not a PDF, needs a password to open, unparsable, no pages or more than
        ``EVIDENCE_MAX_PDF_PAGES``, or something active survived the copy.
    """
    max_pages = max_pdf_pages()
    if not data.startswith(PDF_MAGIC):
        _refuse("文件不是 PDF", field, "invalid_pdf")
    encrypted = "PDF 已加密或设有密码，请上传未加密的文件（可另存为不加密的 PDF，或上传图片）"
    try:
        reader = PdfReader(io.BytesIO(data))
        # Issued certificates are often "encrypted" with an owner password only (no printing or
        # editing), which every viewer opens without asking: open it the same way and store an
        # unencrypted copy. A file that needs a password to open is refused.
        if reader.is_encrypted and not reader.decrypt(""):
            _refuse(encrypted, field, "encrypted_pdf")
        pages = reader.pages
        count = len(pages)
        if count < 1:
            _refuse("PDF 没有页面", field, "invalid_pdf")
        if count > max_pages:
            _refuse(f"PDF 页数过多（{count} 页，上限 {max_pages} 页）", field, "too_many_pages")
        writer = PdfWriter()
        inflated = 0
        for page in pages:
            # Streams are copied compressed; what a reviewer's viewer must inflate is bounded here
            # (a 1 MB file can declare a page that inflates to gigabytes).
            inflated += _inflated_size(page)
            if inflated > MAX_PDF_INFLATED_BYTES:
                _refuse("PDF 内容解压后过大，无法接收", field, "pdf_too_large")
            _keep_only(page, PDF_PAGE_KEYS)
            resources = page.get("/Resources")
            if resources is not None and isinstance(resources.get_object(), DictionaryObject):
                _keep_only(resources.get_object(), PDF_RESOURCE_KEYS)
            writer.add_page(page)
        out = io.BytesIO()
        writer.write(out)
        rewritten = out.getvalue()
        # Read our own output back: it must parse, have the same pages, and hold nothing active.
        check = PdfReader(io.BytesIO(rewritten))
        if len(check.pages) != count or _active_content(check):
            _refuse("PDF 含有脚本、自动动作、表单或附件等不允许的内容", field, "unsafe_pdf")
    except ValidationFailed:
        raise
    except (DependencyError, FileNotDecryptedError):
        _refuse(encrypted, field, "encrypted_pdf")
    except LimitReachedError:
        _refuse("PDF 内容解压后过大，无法接收", field, "pdf_too_large")
    except RecursionError:
        _refuse("PDF 结构过于复杂，无法读取", field, "invalid_pdf")
    except Exception:  # noqa: BLE001 - a parser of untrusted bytes fails in many ways, each one a refusal
        _refuse("文件不是有效的 PDF，无法读取", field, "invalid_pdf")
    return ProcessedPdf(rewritten, count, hashlib.sha256(rewritten).hexdigest())


def _inflated_size(page) -> int:
    """Bytes of a page's drawing instructions once decompressed: its content streams and its
    form XObjects (pypdf also stops any single stream at its own limit, ``LimitReachedError``).

    Images are left out on purpose: a scanned page is legitimately tens of MB of pixels, and
    viewers bound image decoding themselves.
    """
    size = 0
    contents = page.get_contents()
    if contents is not None:
        size += len(contents.get_data())
    resources = page.get("/Resources")
    xobjects = resources.get_object().get("/XObject") if resources is not None else None
    if xobjects is not None:
        for reference in xobjects.get_object().values():
            stream = reference.get_object()
            if stream.get("/Subtype") == "/Form" and hasattr(stream, "get_data"):
                size += len(stream.get_data())
    return size


def _keep_only(dictionary: DictionaryObject, keys: frozenset) -> None:
    """Delete every key of a (reader-side, in-memory) PDF dictionary not in ``keys``."""
    for key in list(dictionary.keys()):
        if key not in keys:
            del dictionary[key]


def _active_content(reader: PdfReader) -> bool:
    """True when any object reachable from the trailer is a script, action, form or attached file."""
    seen: set[tuple[int, int]] = set()
    stack: list = [reader.trailer]
    while stack:
        item = stack.pop()
        if isinstance(item, IndirectObject):
            key = (item.idnum, item.generation)
            if key in seen:
                continue
            seen.add(key)
            item = item.get_object()
        if isinstance(item, DictionaryObject):
            if any(key in PDF_FORBIDDEN_KEYS for key in item.keys()):
                return True
            action, kind = _resolved(item.get("/S")), _resolved(item.get("/Type"))
            if isinstance(action, NameObject) and action in PDF_FORBIDDEN_ACTIONS:
                return True
            if isinstance(kind, NameObject) and kind in ("/Action", "/Filespec", "/EmbeddedFile", "/Annot"):
                return True
            stack.extend(item.values())
        elif isinstance(item, ArrayObject):
            stack.extend(item)
    return False


def _resolved(value):
    """Return the object an indirect reference points at (values pass through)."""
    return value.get_object() if isinstance(value, IndirectObject) else value


def _write_atomically(folder: Path, filename: str, payload: bytes) -> None:
    """Write a file so that a reader never sees half of it (temporary file, then rename)."""
    temporary = folder / f".{filename}.tmp"
    temporary.write_bytes(payload)
    os.replace(temporary, folder / filename)


def store(kind: str, processed: ProcessedImage | ProcessedPdf) -> str:
    """Write a processed image (and its thumbnail) or PDF under a fresh random name; return the name."""
    folder = upload_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    if isinstance(processed, ProcessedPdf):
        if kind != "evidence":
            raise ValueError(f"PDF files are not stored under {kind!r}")
        name = f"{token}-{processed.pages}p.pdf"
        _write_atomically(folder, name, processed.data)
        return name
    name = f"{token}.jpg"
    for filename, payload in ((name, processed.data), (f"{token}-s.jpg", processed.thumbnail)):
        _write_atomically(folder, filename, payload)
    return name


def thumbnail_name(name: str) -> str:
    """Return the thumbnail's stored name for a full-size stored image name."""
    return name[:-4] + "-s.jpg"


def is_pdf(name: str | None) -> bool:
    """True when ``name`` is a stored PDF's generated name."""
    return bool(name) and PDF_NAME.match(name) is not None


def pdf_page_count(name: str | None) -> int | None:
    """Return the page count a stored PDF's generated name carries (None for anything else)."""
    match = PDF_NAME.match(name) if name else None
    return int(match.group(1)) if match else None


def remove(kind: str, name: str | None) -> None:
    """Delete a stored file (and an image's thumbnail), ignoring files already gone."""
    if not name or not KIND_NAMES.get(kind, IMAGE_NAME).match(name):
        return
    for filename in (name,) if is_pdf(name) else (name, thumbnail_name(name)):
        try:
            (upload_dir() / kind / filename).unlink()
        except FileNotFoundError:
            pass


def stored_path(kind: str, name: str) -> Path | None:
    """Return the path of a stored file if ``name`` is one we generate for ``kind`` and it exists."""
    if not KIND_NAMES.get(kind, IMAGE_NAME).match(name):
        return None
    path = upload_dir() / kind / name
    return path if path.is_file() else None
