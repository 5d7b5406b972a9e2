"""Product photos: opened for real, size- and pixel-limited, re-encoded, stored under random names."""
import io
import os

import pytest
from PIL import Image

from certification.models import ProductImage
from core.extensions import db
from tests.certification.factories import certified_product, image_bytes, member, png_declaring, product


def _upload(client, make, item, payload: bytes, filename="photo.jpg", user=None):
    user = user or member(make, item.cooperative)
    return client.post(f"/api/v1/products/{item.id}/images", headers=make.headers(user),
                       data={"file": (io.BytesIO(payload), filename)})


def _stored_files(app):
    folder = os.path.join(app.config["UPLOAD_DIR"], "products")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_are_reencoded_as_jpeg_under_a_random_name(client, make, app, fmt):
    item = product(make)
    response = _upload(client, make, item, image_bytes(fmt, (320, 200)), filename="../../etc/passwd.png")
    assert response.status_code == 201, response.json
    image = db.session.get(ProductImage, response.json["id"])
    assert image.filename != "passwd.png" and len(image.filename) == 36 and image.filename.endswith(".jpg")
    assert (image.width, image.height) == (320, 200)
    path = os.path.join(app.config["UPLOAD_DIR"], "products", image.filename)
    with Image.open(path) as stored:
        assert stored.format == "JPEG" and stored.size == (320, 200)


def test_metadata_is_stripped_and_orientation_applied(client, make, app):
    exif = Image.Exif()
    exif[0x0112] = 6          # rotate 90° on display
    exif[0x010F] = "SecretCam"  # camera make: personal data the platform should not republish
    item = product(make)
    payload = image_bytes("JPEG", (300, 100), exif=exif.tobytes())
    response = _upload(client, make, item, payload)
    assert response.status_code == 201
    assert (response.json["width"], response.json["height"]) == (100, 300)
    path = os.path.join(app.config["UPLOAD_DIR"], "products", db.session.get(ProductImage, response.json["id"]).filename)
    with Image.open(path) as stored:
        assert not stored.getexif() and "exif" not in stored.info
    assert b"SecretCam" not in open(path, "rb").read()


def test_large_pictures_are_bounded_and_get_a_thumbnail(client, make):
    item = product(make)
    response = _upload(client, make, item, image_bytes("PNG", (3200, 1600)))
    assert (response.json["width"], response.json["height"]) == (1600, 800)
    thumbnail = client.get(response.json["thumbnail_url"], headers=make.headers(member(make, item.cooperative)))
    assert thumbnail.status_code == 200
    with Image.open(io.BytesIO(thumbnail.data)) as small:
        assert max(small.size) == 480


@pytest.mark.parametrize("payload,filename", [
    (b"this is not an image", "photo.jpg"),
    (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "scan.pdf"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.svg"),
    (image_bytes("GIF"), "anim.gif"),
    (image_bytes("BMP"), "old.bmp"),
    (image_bytes("TIFF"), "scan.tiff"),
    (image_bytes("PNG", (200, 200))[:200], "truncated.png"),
    (image_bytes("JPEG", (200, 200))[:300], "truncated.jpg"),
])
def test_files_that_are_not_allowed_images_are_422_and_nothing_is_stored(client, make, app, payload, filename):
    item = product(make)
    before = _stored_files(app)
    response = _upload(client, make, item, payload, filename)
    assert response.status_code == 422, response.json
    assert response.json["error"]["fields"]["file"]
    assert _stored_files(app) == before
    assert db.session.query(ProductImage).count() == 0


def test_too_many_bytes_is_422(client, make, app):
    item = product(make)
    app.config["UPLOAD_MAX_BYTES"] = 2_000
    try:
        response = _upload(client, make, item, image_bytes("PNG", (400, 400), colour=(1, 2, 3)) + os.urandom(4_000))
    finally:
        app.config.pop("UPLOAD_MAX_BYTES")
    assert response.status_code == 422 and response.json["error"]["code"] == "file_too_large"


def test_body_over_the_request_limit_is_422_not_413(client, make, app):
    item = product(make)
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    try:
        response = _upload(client, make, item, os.urandom(20_000))
    finally:
        app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    assert response.status_code == 422


def test_too_many_pixels_is_refused_before_decoding(client, make):
    response = _upload(client, make, product(make), png_declaring(9_000, 6_000), "huge.png")
    assert response.status_code == 422 and response.json["error"]["code"] == "too_many_pixels"


def test_decompression_bomb_is_refused(client, make, app):
    # Above twice Pillow's MAX_IMAGE_PIXELS Pillow itself raises DecompressionBombError.
    app.config["UPLOAD_MAX_PIXELS"] = 10**12
    try:
        response = _upload(client, make, product(make), png_declaring(20_000, 20_000), "bomb.png")
    finally:
        app.config.pop("UPLOAD_MAX_PIXELS")
    assert response.status_code == 422 and response.json["error"]["code"] == "too_many_pixels"


def test_missing_file_is_422(client, make):
    item = product(make)
    response = client.post(f"/api/v1/products/{item.id}/images", headers=make.headers(member(make, item.cooperative)),
                           data={})
    assert response.status_code == 422


def test_photo_count_is_limited(client, make, app):
    item = product(make)
    app.config["PRODUCT_MAX_IMAGES"] = 2
    try:
        codes = [_upload(client, make, item, image_bytes()).status_code for _ in range(3)]
    finally:
        app.config.pop("PRODUCT_MAX_IMAGES")
    assert codes == [201, 201, 422]


def test_photos_of_unsold_products_are_private_and_of_sold_ones_public(client, make):
    draft = product(make)
    url = _upload(client, make, draft, image_bytes()).json["url"]
    assert client.get(url).status_code == 404
    assert client.get(url, headers=make.headers(member(make, draft.cooperative))).status_code == 200
    sold = certified_product(make)
    public = client.get(_upload(client, make, sold, image_bytes()).json["url"])
    assert public.status_code == 200 and public.mimetype == "image/jpeg"
    assert client.get("/media/products/../../secret_key").status_code == 404
    assert client.get("/media/products/" + "0" * 32 + ".jpg").status_code == 404


def test_only_the_products_cooperative_uploads_and_deletes(client, make, app):
    sold = certified_product(make)
    assert _upload(client, make, sold, image_bytes(), user=member(make)).status_code == 403
    owner = member(make, sold.cooperative)
    image_id = _upload(client, make, sold, image_bytes(), user=owner).json["id"]
    name = db.session.get(ProductImage, image_id).filename
    assert name in _stored_files(app) and name[:-4] + "-s.jpg" in _stored_files(app)
    assert client.delete(f"/api/v1/products/{sold.id}/images/{image_id}",
                         headers=make.headers(member(make))).status_code == 403
    response = client.delete(f"/api/v1/products/{sold.id}/images/{image_id}", headers=make.headers(owner))
    assert response.status_code == 200 and response.json["images"] == []
    assert name not in _stored_files(app) and name[:-4] + "-s.jpg" not in _stored_files(app)
    assert db.session.get(ProductImage, image_id) is None
