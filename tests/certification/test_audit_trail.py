"""Every certification transition lands in the one hash-chained audit trail, and tampering shows."""
import sqlalchemy as sa

from certification import services
from core.audit import AuditEvent, verify_chain
from core.extensions import db
from tests.certification.factories import certified_through_workflow, prefecture, reviewer, submitted


def _certification_events():
    return db.session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "certification")
                              .order_by(AuditEvent.id)).all()


def test_each_transition_is_one_chained_event_with_actor_role_states_and_comment(make):
    application = certified_through_workflow(make)
    chief = prefecture(make)
    services.revoke_certificate(chief, application.id, {"reason": "抽检不合格"})
    events = _certification_events()
    assert [(e.action, e.from_state, e.to_state) for e in events] == [
        ("submit", None, "submitted"), ("approve", "submitted", "county_approved"),
        ("approve", "county_approved", "certified"), ("revoke", "certified", "revoked")]
    assert events[-1].actor_id == chief.id and events[-1].actor_role == "prefecture_reviewer"
    assert events[-1].comment == "抽检不合格"
    assert '"certificate_no"' in events[2].data
    report = verify_chain()
    assert report.ok and report.checked >= 4


def test_cli_audit_verify_detects_a_tampered_certification_decision(runner, make):
    certified_through_workflow(make)
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0
    approval_id = next(e.id for e in _certification_events() if e.action == "approve")
    # Someone with database access "softens" a reviewer's comment after the fact.
    db.session.execute(sa.update(AuditEvent).where(AuditEvent.id == approval_id).values(comment="（已修改）"))
    db.session.commit()
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert f"#{approval_id}" in result.output


def test_deleting_a_rejection_event_breaks_the_chain(make):
    application = submitted(make)
    services.decide_application(reviewer(make), application.id, {"decision": "reject", "comment": "材料不全"})
    services.submit_application(make.user("admin"), application.product_id,
                                {"evidence": [{"type": "other", "number": "X-1", "issuer": "县农业农村局",
                                               "valid_until": "2030-01-01"}]})
    rejection = next(e for e in _certification_events() if e.action == "reject")
    db.session.execute(sa.delete(AuditEvent).where(AuditEvent.id == rejection.id))
    db.session.commit()
    report = verify_chain()
    assert not report.ok and report.broken_at > rejection.id
