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
