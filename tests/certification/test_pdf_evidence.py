"""Evidence scans as PDF: recognised by content, opened by pypdf, re-written to pages only, served inert."""
import io
import os
import re

import pytest
import sqlalchemy as sa
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NumberObject, TextStringObject

from certification.models import Certification, Evidence
from core.audit import AuditEvent
from core.extensions import db
from core.models import Role
from tests.certification.factories import EVIDENCE, image_bytes, member, product, reviewer, submitted

PDF_NAME = re.compile(r"^[0-9a-f]{32}-(\d+)p\.pdf$")
CHINESE = re.compile(r"[\u4e00-\u9fff]")


# ---- building PDFs -----------------------------------------------------------------------


def _written(writer: PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_bytes(pages: int = 1, *, encrypt: str | None = None, author: str | None = None,
              algorithm: str = "RC4-128") -> bytes:
    """A real PDF of ``pages`` blank A4 pages, optionally with an author or encrypted (``encrypt``
    is the user password)."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(595, 842)
    if author:
        writer.add_metadata({"/Author": author})
    if encrypt is not None:
        # An empty user password is the common "owner password only" certificate: opens without asking.
        writer.encrypt(user_password=encrypt, owner_password="owner-secret", algorithm=algorithm)
    return _written(writer)


def _js(code: str) -> DictionaryObject:
    return DictionaryObject({NameObject("/S"): NameObject("/JavaScript"), NameObject("/JS"): TextStringObject(code)})


def booby_trapped_pdf() -> bytes:
    """A PDF carrying everything active a document can: open action, document JavaScript, page
    actions, a link annotation running script, a form and an attached file, plus author metadata."""
    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    writer.add_blank_page(595, 842)
    root = writer.root_object
    root[NameObject("/OpenAction")] = writer._add_object(_js("trapOpen"))
    root[NameObject("/Names")] = DictionaryObject({NameObject("/JavaScript"): DictionaryObject({
        NameObject("/Names"): ArrayObject([TextStringObject("init"), writer._add_object(_js("trapNames"))])})})
    root[NameObject("/AA")] = DictionaryObject({NameObject("/WC"): _js("trapClose")})
    root[NameObject("/AcroForm")] = DictionaryObject({NameObject("/Fields"): ArrayObject()})
    first = writer.pages[0]
    first[NameObject("/AA")] = DictionaryObject({NameObject("/O"): _js("trapPage")})
    link = DictionaryObject({
        NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Link"),
        NameObject("/Rect"): ArrayObject([NumberObject(0), NumberObject(0), NumberObject(100), NumberObject(100)]),
        NameObject("/A"): _js("trapLink")})
    first[NameObject("/Annots")] = ArrayObject([writer._add_object(link)])
    writer.add_attachment("payload.exe", b"MZ not really a program")
    writer.add_metadata({"/Author": "张三 13800000000"})
    data = _written(writer)
    for marker in (b"/OpenAction", b"/JavaScript", b"/AcroForm", b"/EmbeddedFile", b"/Annots", b"trap"):
        assert marker in data, marker  # the trap really is in what the client sends
    return data


def pdf_with_script_hidden_in_a_font() -> bytes:
    """A page whose font dictionary carries a private key holding a JavaScript action."""
    writer = PdfWriter()
    page = writer.add_blank_page(595, 842)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica"),
                             NameObject("/Hidden"): _js("trapFont")})
    page[NameObject("/Resources")] = DictionaryObject({
        NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    return _written(writer)


def handwritten_pdf(trailer_extra: bytes = b"") -> bytes:
    """A minimal one-page PDF written by hand (not by pypdf), with a correct cross-reference table;
    ``trailer_extra`` adds trailer entries."""
    content = b"BT /F1 24 Tf 72 720 Td (LB-15-1711196965A) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer_extra, xref)
    return bytes(out)


def aes256_encrypted_pdf() -> bytes:
    """A hand-written PDF declaring AES-256 encryption whose keys no password opens (not even the
    empty one): it needs a password, so it is refused."""
    return handwritten_pdf(
        b"/Encrypt << /Filter /Standard /V 5 /R 6 /Length 256 /P -4 /StmF /StdCF /StrF /StdCF"
        b" /CF << /StdCF << /CFM /AESV3 /AuthEvent /DocOpen /Length 32 >> >>"
        b" /O <" + b"11" * 48 + b"> /U <" + b"22" * 48 + b"> /OE <" + b"33" * 32 + b"> /UE <" + b"44" * 32 + b">"
        b" /Perms <" + b"55" * 16 + b"> >> /ID [<" + b"66" * 16 + b"> <" + b"66" * 16 + b">] ")


# ---- helpers -------------------------------------------------------------------------------


@pytest.fixture
def new_evidence_files(app):
    """Files written to the evidence folder since the test began (the folder outlives tests)."""
    folder = os.path.join(app.config["UPLOAD_DIR"], "evidence")

    def listing() -> set[str]:
        return set(os.listdir(folder)) if os.path.isdir(folder) else set()

    before = listing()
    return lambda: sorted(listing() - before)


def _attach(client, make, application, payload: bytes, filename="scan.pdf", content_type=None, user=None):
    user = user or member(make, application.product.cooperative)
    evidence_id = application.evidence[0].id
    file = (io.BytesIO(payload), filename, content_type) if content_type else (io.BytesIO(payload), filename)
    return client.post(f"/api/v1/certifications/{application.id}/evidence/{evidence_id}/file",
                       headers=make.headers(user), data={"file": file})


def _file_url(application) -> str:
    return f"/certifications/{application.id}/evidence/{application.evidence[0].id}/file"


def _sign_in(client, user):
    client.post("/logout")
    assert client.post("/login", data={"email": user.email, "password": "password123"}).status_code == 302


def _stored(app, name: str) -> bytes:
    with open(os.path.join(app.config["UPLOAD_DIR"], "evidence", name), "rb") as handle:
        return handle.read()


# ---- accepted and served --------------------------------------------------------------------


def test_accepted_pdf_is_rewritten_under_a_random_name_and_served_inline_with_protective_headers(
        client, make, app, new_evidence_files):
    application = submitted(make)
    sent = pdf_bytes(3, author="Cooperative Scanner")
    response = _attach(client, make, application, sent, filename="../../绿色食品证书.pdf")
    assert response.status_code == 200, response.json
    evidence = db.session.get(Evidence, application.evidence[0].id)
    assert PDF_NAME.match(evidence.filename) and PDF_NAME.match(evidence.filename).group(1) == "3"
    assert new_evidence_files() == [evidence.filename]
    stored = _stored(app, evidence.filename)
    assert stored.startswith(b"%PDF-") and b"Cooperative Scanner" in sent and b"Cooperative Scanner" not in stored
    assert len(PdfReader(io.BytesIO(stored)).pages) == 3
    assert response.json["evidence"][0]["file_url"].endswith(_file_url(application))

    served = client.get(_file_url(application), headers=make.headers(reviewer(make)))
    assert served.status_code == 200
    assert served.mimetype == "application/pdf"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in served.headers["Content-Security-Policy"]
    assert "default-src 'none'" in served.headers["Content-Security-Policy"]
    assert served.headers["Content-Disposition"].startswith("inline")
    assert "no-store" in served.headers["Cache-Control"]
    assert served.data == stored


def test_pdf_is_recognised_by_content_whatever_name_and_type_the_client_claims(client, make, app):
    application = submitted(make)
    response = _attach(client, make, application, pdf_bytes(2), filename="photo.jpg", content_type="image/jpeg")
    assert response.status_code == 200, response.json
    assert db.session.get(Evidence, application.evidence[0].id).filename.endswith("-2p.pdf")
    disguised = _attach(client, make, application, image_bytes("PNG"), filename="证书.pdf",
                        content_type="application/pdf")
    assert disguised.status_code == 200, disguised.json
    assert db.session.get(Evidence, application.evidence[0].id).filename.endswith(".jpg")


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_certificate_locked_by_an_owner_password_only_is_accepted_and_stored_unencrypted(client, make, app,
                                                                                         algorithm):
    application = submitted(make)
    response = _attach(client, make, application, pdf_bytes(2, encrypt="", algorithm=algorithm))
    assert response.status_code == 200, response.json
    stored = PdfReader(io.BytesIO(_stored(app, db.session.get(Evidence, application.evidence[0].id).filename)))
    assert not stored.is_encrypted and len(stored.pages) == 2


def test_handwritten_pdf_from_another_producer_is_accepted(client, make, app):
    application = submitted(make)
    response = _attach(client, make, application, handwritten_pdf())
    assert response.status_code == 200, response.json
    stored = _stored(app, db.session.get(Evidence, application.evidence[0].id).filename)
    page = PdfReader(io.BytesIO(stored)).pages[0]
    assert "LB-15-1711196965A" in page.extract_text()


def test_scripts_actions_forms_attachments_and_metadata_are_not_stored(client, make, app):
    application = submitted(make)
    response = _attach(client, make, application, booby_trapped_pdf())
    assert response.status_code == 200, response.json
    stored = _stored(app, db.session.get(Evidence, application.evidence[0].id).filename)
    for marker in (b"/OpenAction", b"/JavaScript", b"/JS", b"/AA", b"/AcroForm", b"/EmbeddedFile", b"/Annots",
                   b"trap", b"payload.exe", b"MZ not really", "张三".encode("utf-16-be")):
        assert marker not in stored, marker
    reader = PdfReader(io.BytesIO(stored))
    assert len(reader.pages) == 2
    assert set(reader.root_object.keys()) <= {"/Type", "/Pages"}
    assert all("/Annots" not in page and "/AA" not in page for page in reader.pages)
    assert not reader.attachments


def test_pdf_with_a_script_hidden_in_its_resources_is_refused(client, make, app, new_evidence_files):
    application = submitted(make)
    response = _attach(client, make, application, pdf_with_script_hidden_in_a_font())
    assert response.status_code == 422
    assert response.json["error"]["code"] == "unsafe_pdf"
    assert new_evidence_files() == []


def test_application_page_links_a_pdf_with_its_page_count(client, make):
    application = submitted(make)
    assert _attach(client, make, application, pdf_bytes(4)).status_code == 200
    _sign_in(client, reviewer(make))
    html = client.get(f"/certifications/{application.id}").get_data(as_text=True)
    assert "查看 PDF（4 页）" in html
    assert _file_url(application) in html


def test_apply_form_takes_a_pdf_scan_and_offers_pdf_in_the_picker(client, make, app, new_evidence_files):
    item = product(make)
    _sign_in(client, member(make, item.cooperative))
    form_html = client.get(f"/my/products/{item.id}/apply").get_data(as_text=True)
    assert re.search(r'id="ev_file_0"[^>]*accept="[^"]*application/pdf', form_html)
    response = client.post(f"/my/products/{item.id}/apply", content_type="multipart/form-data", data={
        "ev_type_0": "green_food", "ev_number_0": EVIDENCE["number"], "ev_issuer_0": EVIDENCE["issuer"],
        "ev_valid_until_0": "2029-12-31", "ev_file_0": (io.BytesIO(pdf_bytes(2)), "证书.pdf")})
    assert response.status_code == 302
    application = db.session.scalar(sa.select(Certification).where(Certification.product_id == item.id))
    assert application.evidence[0].filename.endswith("-2p.pdf")
    assert new_evidence_files() == [application.evidence[0].filename]


# ---- refused, nothing stored ------------------------------------------------------------------


def _truncated() -> bytes:
    data = pdf_bytes(2)
    return data[: len(data) // 3]


REFUSED = [
    pytest.param(lambda: pdf_bytes(1, encrypt="secret"), "encrypted_pdf", id="encrypted-user-password"),
    pytest.param(lambda: pdf_bytes(1, encrypt="secret", algorithm="AES-256"), "encrypted_pdf",
                 id="encrypted-aes-256-user-password"),
    pytest.param(aes256_encrypted_pdf, "encrypted_pdf", id="encrypted-aes-256-unopenable"),
    pytest.param(lambda: b"%PDF-1.7\nthis is not a document at all\n", "invalid_pdf", id="garbage-after-header"),
    pytest.param(_truncated, "invalid_pdf", id="truncated"),
    pytest.param(lambda: _written(PdfWriter()), "invalid_pdf", id="zero-pages"),
    pytest.param(lambda: pdf_bytes(21), "too_many_pages", id="too-many-pages"),
    pytest.param(lambda: b"<html><script>alert(1)</script></html>", "invalid_file", id="html"),
    pytest.param(lambda: b"PK\x03\x04" + b"\x00" * 64, "invalid_file", id="zip"),
    pytest.param(lambda: image_bytes("GIF"), "invalid_file", id="gif"),
    pytest.param(lambda: b"  %PDF-1.4 shifted header", "invalid_file", id="header-not-at-start"),
]


@pytest.mark.parametrize("build, code", REFUSED)
def test_unacceptable_files_are_422_with_a_chinese_message_and_nothing_changes(client, make, build, code,
                                                                               new_evidence_files):
    application = submitted(make)
    response = _attach(client, make, application, build())
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == code and CHINESE.search(error["message"])
    assert set(error) >= {"code", "message", "fields"}
    assert new_evidence_files() == []
    assert db.session.get(Evidence, application.evidence[0].id).filename is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "attach_file")) == 0


def test_page_limit_is_configurable(client, make, app):
    application = submitted(make)
    app.config["EVIDENCE_MAX_PDF_PAGES"] = 2
    try:
        refused = _attach(client, make, application, pdf_bytes(3))
        accepted = _attach(client, make, application, pdf_bytes(2))
    finally:
        app.config.pop("EVIDENCE_MAX_PDF_PAGES")
    assert refused.status_code == 422 and "上限 2 页" in refused.json["error"]["message"]
    assert accepted.status_code == 200


def test_pdf_over_the_byte_limit_is_refused(client, make, app, new_evidence_files):
    application = submitted(make)
    data = pdf_bytes(1)
    app.config["UPLOAD_MAX_BYTES"] = len(data) - 1
    try:
        response = _attach(client, make, application, data)
    finally:
        app.config.pop("UPLOAD_MAX_BYTES")
    assert response.status_code == 422 and response.json["error"]["code"] == "file_too_large"
    assert new_evidence_files() == []


def test_refused_pdf_on_the_apply_form_creates_no_application(client, make, app, new_evidence_files):
    item = product(make)
    _sign_in(client, member(make, item.cooperative))
    response = client.post(f"/my/products/{item.id}/apply", content_type="multipart/form-data", data={
        "ev_type_0": "green_food", "ev_number_0": EVIDENCE["number"], "ev_issuer_0": EVIDENCE["issuer"],
        "ev_valid_until_0": "2029-12-31", "ev_file_0": (io.BytesIO(pdf_bytes(1, encrypt="secret")), "证书.pdf")})
    assert response.status_code == 422
    assert "PDF 已加密" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Certification)) == 0
    assert new_evidence_files() == []


# ---- pictures still work; replacing cleans up ------------------------------------------------


def test_image_evidence_still_works_and_replacing_a_pdf_removes_its_file(client, make, app, new_evidence_files):
    application = submitted(make)
    assert _attach(client, make, application, pdf_bytes(1)).status_code == 200
    pdf_name = db.session.get(Evidence, application.evidence[0].id).filename
    response = _attach(client, make, application, image_bytes("JPEG", (800, 600)), filename="scan.jpg")
    assert response.status_code == 200, response.json
    name = db.session.get(Evidence, application.evidence[0].id).filename
    assert name.endswith(".jpg") and pdf_name not in new_evidence_files()
    served = client.get(_file_url(application), headers=make.headers(reviewer(make)))
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    _sign_in(client, reviewer(make))
    html = client.get(f"/certifications/{application.id}").get_data(as_text=True)
    assert "扫描件" in html and "查看 PDF" not in html


# ---- who may read it ------------------------------------------------------------------------


def test_only_those_who_may_read_the_application_get_the_pdf(client, make):
    application = submitted(make)
    assert _attach(client, make, application, pdf_bytes(1)).status_code == 200
    url = _file_url(application)
    assert client.get(url, headers=make.headers(member(make, application.product.cooperative))).status_code == 200
    assert client.get(url, headers=make.headers(make.user(Role.PREFECTURE_REVIEWER))).status_code == 200
    assert client.get(url, headers=make.headers(reviewer(make, "花垣县"))).status_code == 403
    assert client.get(url, headers=make.headers(member(make))).status_code == 404
    assert client.get(url, headers=make.headers(make.user(Role.CONSUMER))).status_code == 404
    assert client.get(url).status_code in (302, 401)
    other = submitted(make)
    crossed = f"/certifications/{other.id}/evidence/{application.evidence[0].id}/file"
    assert client.get(crossed, headers=make.headers(make.user(Role.PREFECTURE_REVIEWER))).status_code == 404


def test_a_stored_pdf_is_never_served_as_a_product_photo(client, make):
    application = submitted(make)
    assert _attach(client, make, application, pdf_bytes(1)).status_code == 200
    name = db.session.get(Evidence, application.evidence[0].id).filename
    admin = make.user(Role.ADMIN)
    assert client.get(f"/media/products/{name}", headers=make.headers(admin)).status_code == 404


def test_a_page_whose_drawing_inflates_past_the_limit_is_refused(client, make, app, new_evidence_files):
    """A 60 kB file whose page content stream inflates to 55 MB (a decompression bomb for viewers)."""
    import zlib

    from pypdf.generic import StreamObject

    writer = PdfWriter()
    page = writer.add_blank_page(595, 842)
    stream = StreamObject()
    stream._data = zlib.compress(b" " * (55 * 1024 * 1024), 9)
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    page[NameObject("/Contents")] = writer._add_object(stream)
    bomb = _written(writer)
    assert len(bomb) < 200_000
    application = submitted(make)
    response = _attach(client, make, application, bomb)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "pdf_too_large"
    assert new_evidence_files() == []
