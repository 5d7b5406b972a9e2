"""Builders for products and certificates, usable by every domain's tests.

These write rows directly (no workflow), so tests of other packages can start from a
certified product in one line. Certification's own tests go through the services.
"""
from datetime import date, timedelta

from certification.models import Certification, CertificationStatus, Product, ProductStatus
from core.extensions import db
from core.timeutil import shanghai_today


def product(make, *, cooperative=None, villages=None, status=ProductStatus.DRAFT.value, **fields) -> Product:
    """A product of ``cooperative`` (a new one if omitted) from ``villages`` (its home village)."""
    cooperative = cooperative or make.cooperative()
    item = Product(
        cooperative=cooperative,
        name=fields.pop("name", "古丈毛尖 明前特级"),
        category=fields.pop("category", "tea"),
        description=fields.pop("description", "高山云雾茶园，明前手工采制。"),
        unit=fields.pop("unit", "盒"),
        specification=fields.pop("specification", "250克"),
        price_fen=fields.pop("price_fen", 12_800),
        status=status,
        **fields,
    )
    item.villages = list(villages or [cooperative.village])
    db.session.add(item)
    db.session.commit()
    return item


def certified_product(make, *, valid_from: date | None = None, valid_until: date | None = None,
                      certificate_no: str | None = None, **fields) -> Product:
    """A product with a certificate valid today (or over the given dates)."""
    item = product(make, status=ProductStatus.CERTIFIED.value, **fields)
    today = shanghai_today()
    certificate = Certification(
        product=item,
        status=CertificationStatus.CERTIFIED.value,
        certificate_no=certificate_no or f"XXXB-TEST-{item.id:06d}",
        valid_from=valid_from or today - timedelta(days=30),
        valid_until=valid_until or today + timedelta(days=3 * 365),
    )
    db.session.add(certificate)
    db.session.flush()
    item.certificate = certificate
    db.session.commit()
    return item


# ---- workflow builders (through the services, as the certification tests need) ----------

EVIDENCE = {"type": "green_food", "number": "LB-15-1711196965A", "issuer": "中国绿色食品发展中心",
            "valid_until": "2029-12-31"}


def member(make, cooperative=None):
    """A cooperative member (of a new cooperative in 古丈县 unless given)."""
    from core.models import Role

    return make.user(Role.COOPERATIVE, cooperative=cooperative or make.cooperative())


def reviewer(make, county="古丈县"):
    """A county reviewer of ``county``."""
    from core.models import Role

    return make.user(Role.COUNTY_REVIEWER, county=county)


def prefecture(make):
    """A prefecture reviewer."""
    from core.models import Role

    return make.user(Role.PREFECTURE_REVIEWER)


def submitted(make, *, product_=None, by=None, evidence=None):
    """An application submitted through the service for ``product_`` (a new draft if omitted)."""
    from certification import services

    item = product_ or product(make)
    actor = by or member(make, item.cooperative)
    return services.submit_application(actor, item.id, {"evidence": evidence or [dict(EVIDENCE)]})


def certified_through_workflow(make, *, product_=None):
    """A product certified by a county reviewer then a prefecture reviewer (real workflow)."""
    from certification import services

    application = submitted(make, product_=product_)
    county = application.product.cooperative.county
    services.decide_application(reviewer(make, county), application.id, {"decision": "approve", "comment": "同意"})
    services.decide_application(prefecture(make), application.id, {"decision": "approve", "comment": "准予认定"})
    return application


def image_bytes(fmt="PNG", size=(64, 48), colour=(200, 30, 30), **save_options) -> bytes:
    """A real picture encoded as ``fmt``."""
    import io

    from PIL import Image

    image = Image.new("RGB", size, colour)
    out = io.BytesIO()
    image.save(out, format=fmt, **save_options)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` × ``height`` pixels (a decompression-bomb shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
