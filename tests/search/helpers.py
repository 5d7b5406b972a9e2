"""Builders for search tests: certified products in named villages, indexed the way services do."""
from certification.models import ProductStatus
from core.extensions import db
from core.signals import notify_products_changed
from tests.certification.factories import certified_product, product


def sellable(make, name="古丈毛尖 明前特级", *, county="古丈县", village=None, villages=None, **fields):
    """A certified product from ``villages`` (or one village of ``county``), announced as changed."""
    villages = villages or [make.village(county, village)]
    cooperative = make.cooperative(village=villages[0])
    item = certified_product(make, name=name, cooperative=cooperative, villages=villages, **fields)
    notify_products_changed(item.id)
    return item


def unsellable(make, name, status=ProductStatus.DRAFT.value, **fields):
    """A product that may not be sold (a draft unless ``status`` says otherwise), announced as changed."""
    item = product(make, name=name, status=status, **fields)
    notify_products_changed(item.id)
    return item


def revoke_silently(item) -> None:
    """Revoke the certificate in the database without telling search (a missed signal)."""
    item.certificate.status = "revoked"
    item.status = ProductStatus.REVOKED.value
    db.session.commit()
