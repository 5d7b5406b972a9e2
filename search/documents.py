"""Index documents built from the database: the only place search reads products for indexing.

A product is indexed while its current certificate is certified and not past its end date;
the dates go into the document so that a query drops it the day it expires, and the brand
gate (certification.gate) is asked again for every page shown.
"""
from datetime import date
from typing import Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from certification.models import Certification, CertificationStatus, Product
from core.extensions import db
from core.timeutil import shanghai_today
from search.engine import ProductDocument, date_key
from traceability.services import available_quantities


def _indexable_certificate(product: Product, today: date) -> Certification | None:
    """The product's certificate if it grants the brand today or will later, else None."""
    certificate = product.certificate
    if (certificate is None or certificate.status != CertificationStatus.CERTIFIED.value
            or certificate.valid_from is None or certificate.valid_until is None
            or certificate.valid_until < today):
        return None
    return certificate


def to_document(product: Product, available: int, today: date) -> ProductDocument | None:
    """The index document for ``product``, or None when it must not be in the index."""
    certificate = _indexable_certificate(product, today)
    if certificate is None:
        return None
    villages = list(product.villages)
    return ProductDocument(
        product_id=product.id,
        name=product.name,
        description=product.description or "",
        category=product.category,
        category_label=product.category_label,
        cooperative=product.cooperative.name if product.cooperative else "",
        counties=tuple(v.county for v in villages),
        townships=tuple(v.township for v in villages),
        villages=tuple(v.name for v in villages),
        evidence_types=tuple(sorted({e.type for e in certificate.evidence})),
        price_fen=int(product.price_fen),
        available=int(available),
        valid_from=date_key(certificate.valid_from),
        valid_until=date_key(certificate.valid_until),
    )


def _load(session, product_ids: Iterable[int]) -> list[Product]:
    """Products by id with what a document needs loaded in a few queries."""
    return list(session.scalars(
        sa.select(Product).where(Product.id.in_(list(product_ids)))
        .options(selectinload(Product.villages), selectinload(Product.certificate).selectinload(Certification.evidence))
        .order_by(Product.id)
    ))


def documents_for(product_ids: Iterable[int]) -> tuple[list[ProductDocument], set[int]]:
    """Return (documents to write, ids to delete) for these products, read from the database now."""
    ids = sorted({int(pid) for pid in product_ids})
    if not ids:
        return [], set()
    today = shanghai_today()
    stock = available_quantities(ids)
    documents = []
    remove = set(ids)
    for product in _load(db.session, ids):
        document = to_document(product, stock.get(product.id, 0), today)
        if document is not None:
            documents.append(document)
            remove.discard(product.id)
    return documents, remove


def all_documents(chunk_size: int = 500) -> Iterator[ProductDocument]:
    """Yield the document of every product that may be indexed, in id order, chunk by chunk.

    Uses its own session so that a rebuild of a large catalogue does not pile every product into
    the caller's session (and never touches objects the caller holds).
    """
    today = shanghai_today()
    with Session(db.engine) as session:
        ids = list(session.scalars(
            sa.select(Product.id).join(Certification, Product.certificate_id == Certification.id)
            .where(Certification.status == CertificationStatus.CERTIFIED.value,
                   Certification.valid_until >= today)
            .order_by(Product.id)
        ))
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start:start + chunk_size]
            stock = available_quantities(chunk)
            for product in _load(session, chunk):
                document = to_document(product, stock.get(product.id, 0), today)
                if document is not None:
                    yield document
            session.expunge_all()
