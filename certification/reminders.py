"""Daily reminders of certification (``flask --app wsgi notifications remind``): a certificate due
for renewal, and an evidence document of a current certificate about to expire, each told to
the cooperative's members once (``dedupe_key``), however often the command runs.

Registered with ``core.notifications.register_reminder`` in ``core.app``; each returns how many
notices it wrote and leaves the commit to the runner.
"""
from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import orm

from certification.gate import sellable_clause
from certification.models import Certification, Evidence, Product
from certification.services import evidence_type_label, renewal_reminders
from certification.status import evidence_warning_days, renewal_reminder_days
from core.extensions import db
from core.models import Role, User
from core.notifications import active_users, notify
from core.timeutil import shanghai_today


def _members_by_cooperative(cooperative_ids) -> dict[int, list[User]]:
    """Each cooperative's active members, for all the reminders of one run in one query."""
    members: dict[int, list[User]] = defaultdict(list)
    for user in active_users(Role.COOPERATIVE, cooperative_ids=set(cooperative_ids)):
        members[user.cooperative_id].append(user)
    return members


def remind_certificates() -> int:
    """Tell a cooperative once per certificate that it expires within ``CERTIFICATE_RENEWAL_REMINDER_DAYS``
    and no renewal has been submitted (the rule the my-products page shows: ``renewal_reminders``)."""
    today = shanghai_today()
    products = renewal_reminders(list(db.session.scalars(
        sa.select(Product).join(Certification, Product.certificate_id == Certification.id)
        .where(sellable_clause(today), Certification.valid_until <= today + timedelta(days=renewal_reminder_days()))
        .options(orm.selectinload(Product.applications))
        .order_by(Certification.valid_until, Certification.id))))
    members = _members_by_cooperative(product.cooperative_id for product in products)
    written = 0
    for product in products:
        certificate = product.certificate
        written += len(notify(
            members[product.cooperative_id], "certificate_renewal", f"“{product.name}”的认定证书即将到期",
            f"证书 {certificate.certificate_no} 将于 {certificate.valid_until.isoformat()} 到期，到期后产品将无法销售。"
            "请尽快提交续期申请（续期审核期间原证书有效期内照常销售）。",
            f"/my/products/{product.id}", dedupe_key=f"certificate_renewal:{certificate.id}"))
    return written


def remind_evidence() -> int:
    """Tell a cooperative once per document that evidence its current certificate rests on expires
    within ``EVIDENCE_EXPIRY_WARNING_DAYS``."""
    today = shanghai_today()
    rows = db.session.execute(
        sa.select(Product, Certification, Evidence)
        .join(Certification, Product.certificate_id == Certification.id)
        .join(Evidence, Evidence.certification_id == Certification.id)
        .where(sellable_clause(today), Evidence.valid_until.is_not(None), Evidence.valid_until >= today,
               Evidence.valid_until <= today + timedelta(days=evidence_warning_days()))
        .order_by(Evidence.valid_until, Evidence.id)).all()
    members = _members_by_cooperative(product.cooperative_id for product, _, _ in rows)
    written = 0
    for product, certificate, evidence in rows:
        written += len(notify(
            members[product.cooperative_id], "evidence_expiring", f"“{product.name}”的证明材料即将到期",
            f"{evidence_type_label(evidence.type)}（编号 {evidence.number}）将于 {evidence.valid_until.isoformat()} 到期。"
            f"请及时办理延续，并在续期申请中提交新的证明材料（证书 {certificate.certificate_no}）。",
            f"/my/products/{product.id}",
            dedupe_key=f"evidence_expiring:{evidence.id}:{evidence.valid_until.isoformat()}"))
    return written
