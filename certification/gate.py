"""The brand gate: the single answer to "may this product be sold under 湘西香伴 now?".

Listing, product pages, search, ordering and new batches all ask here, so a revocation or an
expiry takes effect on the next request everywhere, without a scheduled job.
"""
from datetime import date

import sqlalchemy as sa

from certification.models import Certification, CertificationStatus, Product
from core.timeutil import shanghai_today


def is_sellable(product: Product, today: date | None = None) -> bool:
    """True while the product's certificate is certified and within its validity (Shanghai date)."""
    certificate = product.certificate
    today = today or shanghai_today()
    return (
        certificate is not None
        and certificate.status == CertificationStatus.CERTIFIED.value
        and certificate.valid_from is not None and certificate.valid_from <= today
        and certificate.valid_until is not None and today <= certificate.valid_until
    )


def sellable_clause(today: date | None = None):
    """A SQL condition on ``Product`` equivalent to ``is_sellable``, for queries."""
    today = today or shanghai_today()
    return Product.certificate_id.in_(
        sa.select(Certification.id).where(
            Certification.status == CertificationStatus.CERTIFIED.value,
            Certification.valid_from <= today,
            Certification.valid_until >= today,
        )
    )
