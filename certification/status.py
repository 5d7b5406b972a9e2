"""Derived states: what a product or certificate *is* today, computed, never stored.

``expired`` exists only here: a certificate past its ``valid_until`` (an Asia/Shanghai date)
is expired on the next request, with no job to run. A product's stored ``status`` records
the last workflow step; what people see is that step unless the brand gate (``gate.py``)
says otherwise.
"""
import os
import re
from datetime import date, timedelta

from flask import current_app

from certification.gate import is_sellable
from certification.models import Certification, CertificationStatus, Evidence, Product, ProductStatus
from core.timeutil import shanghai_today

DEFAULT_RENEWAL_REMINDER_DAYS = 60
DEFAULT_EVIDENCE_WARNING_DAYS = 30

# Usual shapes of evidence numbers (domain.md). A mismatch is shown to reviewers as a flag;
# it does not refuse the application, because issuers' formats vary over the years.
EVIDENCE_NUMBER_PATTERNS = {
    "green_food": (re.compile(r"^LB-\d{2}-\d{8,13}[A-Z]?$"), "绿色食品编号通常形如 LB-15-1711196965A"),
    "organic": (re.compile(r"^\d{17}$"), "有机码通常为 17 位数字"),
    "geographical_indication": (re.compile(r"^AGI\d{5,}$"), "农产品地理标志登记证书编号通常以 AGI 开头"),
}


def _days_setting(name: str, default: int) -> int:
    """An integer setting from the app config, else the environment, else ``default``."""
    value = current_app.config.get(name)
    return int(value if value is not None else os.environ.get(name, default))


def renewal_reminder_days() -> int:
    """Days before expiry from which a cooperative is reminded to renew (``CERTIFICATE_RENEWAL_REMINDER_DAYS``)."""
    return _days_setting("CERTIFICATE_RENEWAL_REMINDER_DAYS", DEFAULT_RENEWAL_REMINDER_DAYS)


def evidence_warning_days() -> int:
    """Days before an evidence document's expiry that reviewers are warned (``EVIDENCE_EXPIRY_WARNING_DAYS``)."""
    return _days_setting("EVIDENCE_EXPIRY_WARNING_DAYS", DEFAULT_EVIDENCE_WARNING_DAYS)


def certificate_status(certification: Certification, today: date | None = None) -> str:
    """Return an application's status as the contract shows it, deriving ``expired``."""
    today = today or shanghai_today()
    if (certification.status == CertificationStatus.CERTIFIED.value
            and certification.valid_until is not None and certification.valid_until < today):
        return CertificationStatus.EXPIRED.value
    return certification.status


def product_status(product: Product, today: date | None = None) -> str:
    """Return the product's status: ``certified`` whenever the brand gate lets it sell.

    While a renewal is reviewed the stored status follows the renewal (``submitted`` ...),
    but the product still shows ``certified`` as long as its current certificate is valid.
    A stored ``certified`` whose certificate no longer passes the gate is ``revoked`` or
    ``expired``.
    """
    today = today or shanghai_today()
    if is_sellable(product, today):
        return ProductStatus.CERTIFIED.value
    if product.status == ProductStatus.CERTIFIED.value:
        certificate = product.certificate
        if certificate is not None and certificate.status == CertificationStatus.REVOKED.value:
            return ProductStatus.REVOKED.value
        return ProductStatus.EXPIRED.value
    return product.status


def expires_in_days(certification: Certification, today: date | None = None) -> int | None:
    """Days until the certificate's last valid day (0 = expires today, negative = expired)."""
    if certification.valid_until is None or certification.status != CertificationStatus.CERTIFIED.value:
        return None
    return (certification.valid_until - (today or shanghai_today())).days


def renewal_due(certification: Certification, today: date | None = None) -> bool:
    """True when a certified certificate expires within the reminder window (or has expired)."""
    days = expires_in_days(certification, today)
    return days is not None and days <= renewal_reminder_days()


def evidence_flags(evidence: Evidence, today: date | None = None) -> list[dict]:
    """Return warnings reviewers should see about one evidence document."""
    today = today or shanghai_today()
    flags = []
    if evidence.valid_until is None:
        if evidence.type in ("green_food", "organic", "geographical_indication"):
            flags.append({"code": "no_validity", "message": "未填写有效期"})
    elif evidence.valid_until < today:
        flags.append({"code": "expired", "message": f"已于 {evidence.valid_until.isoformat()} 过期"})
    elif evidence.valid_until <= today + timedelta(days=evidence_warning_days()):
        days = (evidence.valid_until - today).days
        flags.append({"code": "expiring", "message": f"{days} 天后（{evidence.valid_until.isoformat()}）到期"})
    pattern = EVIDENCE_NUMBER_PATTERNS.get(evidence.type)
    if pattern and not pattern[0].match(evidence.number or ""):
        flags.append({"code": "unusual_number", "message": f"编号格式少见：{pattern[1]}"})
    return flags
