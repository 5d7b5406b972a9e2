"""Certification API: submission, the two-stage decision, revocation, renewal, history, expiry."""
import re
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from certification.models import Certification, Evidence, Product
from certification.services import add_years
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from tests.certification.factories import (
    EVIDENCE,
    certified_product,
    certified_through_workflow,
    member,
    prefecture,
    product,
    reviewer,
    submitted,
)


def _apply(client, make, item, user=None, evidence=None):
    user = user or member(make, item.cooperative)
    return client.post(f"/api/v1/products/{item.id}/certification", headers=make.headers(user),
                       json={"evidence": evidence if evidence is not None else [dict(EVIDENCE)]})


def _decide(client, make, user, certification_id, decision="approve", comment="同意"):
    body = {"decision": decision}
    if comment is not None:
        body["comment"] = comment
    return client.post(f"/api/v1/certifications/{certification_id}/decision", headers=make.headers(user), json=body)


def test_submit_answers_201_submitted_and_the_product_awaits_review(client, make):
    item = product(make)
    response = _apply(client, make, item)
    assert response.status_code == 201, response.json
    assert response.json["status"] == "submitted" and isinstance(response.json["id"], int)
    assert response.json["product_id"] == item.id
    assert response.json["evidence"][0]["number"] == EVIDENCE["number"]
    assert response.json["history"][0]["action"] == "submit"
    db.session.expire_all()
    assert db.session.get(Product, item.id).status == "submitted"


def test_second_application_while_one_is_reviewed_is_409(client, make):
    item = product(make)
    assert _apply(client, make, item).status_code == 201
    again = _apply(client, make, item)
    assert again.status_code == 409 and again.json["error"]["code"] == "application_in_progress"
    assert db.session.scalar(sa.select(sa.func.count(Certification.id))) == 1


@pytest.mark.parametrize("evidence", [
    [],
    [{**EVIDENCE, "type": "hearsay"}],
    [{**EVIDENCE, "valid_until": "31/12/2029"}],
    [{**EVIDENCE, "valid_until": None}],                 # 绿色食品 always has an expiry date
    [{**EVIDENCE, "number": "  "}],
    [{k: v for k, v in EVIDENCE.items() if k != "issuer"}],
    "green_food",
])
def test_invalid_evidence_is_422_and_nothing_is_submitted(client, make, evidence):
    item = product(make)
    response = _apply(client, make, item, evidence=evidence)
    assert response.status_code == 422, response.json
    assert "evidence" in response.json["error"]["fields"]
    assert db.session.scalar(sa.select(sa.func.count(Certification.id))) == 0


def test_compliance_certificate_needs_no_expiry_date(client, make):
    response = _apply(client, make, product(make), evidence=[
        {"type": "compliance_certificate", "number": "GZ-2026-001", "issuer": "本合作社", "valid_until": None}])
    assert response.status_code == 201


def test_only_the_products_cooperative_applies(client, make):
    draft = product(make)
    assert _apply(client, make, draft, user=member(make)).status_code == 404   # cannot even see it
    sellable = certified_product(make)
    assert _apply(client, make, sellable, user=member(make)).status_code == 403
    assert _apply(client, make, draft, user=reviewer(make)).status_code == 403


def test_full_path_county_then_prefecture_certifies_with_number_and_validity(client, make):
    item = product(make)
    certification_id = _apply(client, make, item).json["id"]
    county = _decide(client, make, reviewer(make, "古丈县"), certification_id, comment="材料齐全")
    assert county.status_code == 200 and county.json["status"] == "county_approved"
    assert county.json["certificate_no"] is None
    assert client.get("/api/v1/products").json["total"] == 0   # not sellable before the prefecture decides
    final = _decide(client, make, prefecture(make), certification_id, comment="准予认定")
    assert final.status_code == 200
    body = final.json
    today = shanghai_today()
    assert body["status"] == "certified"
    assert re.fullmatch(rf"XXXB-{today.year}-\d{{6}}", body["certificate_no"])
    assert body["valid_from"] == today.isoformat()
    assert body["valid_until"] == (add_years(today, 3) - timedelta(days=1)).isoformat()
    listed = client.get("/api/v1/products").json["items"]
    assert [p["id"] for p in listed] == [item.id]
    assert listed[0]["certification"]["certificate_no"] == body["certificate_no"]
    assert listed[0]["certification"]["status"] == "certified"


def test_validity_years_come_from_configuration(app, client, make):
    item = product(make)
    certification_id = _apply(client, make, item).json["id"]
    _decide(client, make, reviewer(make), certification_id)
    app.config["CERTIFICATE_VALIDITY_YEARS"] = 1
    try:
        body = _decide(client, make, prefecture(make), certification_id).json
    finally:
        app.config["CERTIFICATE_VALIDITY_YEARS"] = 3
    assert date.fromisoformat(body["valid_until"]) == add_years(shanghai_today(), 1) - timedelta(days=1)


def test_add_years_keeps_the_day_and_handles_29_february():
    assert add_years(date(2026, 11, 29), 3) == date(2029, 11, 29)
    assert add_years(date(2028, 2, 29), 3) == date(2031, 2, 28)


def test_county_reviewer_of_another_county_gets_403_to_decide_and_to_read(client, make):
    application = submitted(make)   # cooperative in 古丈县
    outsider = reviewer(make, "花垣县")
    response = _decide(client, make, outsider, application.id)
    assert response.status_code == 403
    assert client.get(f"/api/v1/certifications/{application.id}", headers=make.headers(outsider)).status_code == 403
    db.session.expire_all()
    assert db.session.get(Certification, application.id).status == "submitted"


@pytest.mark.parametrize("role", [Role.CONSUMER, Role.COOPERATIVE, Role.ADMIN, Role.FINANCE, Role.OFFICIAL,
                                  Role.CANTEEN_BUYER])
def test_roles_that_do_not_review_get_403(client, make, role):
    application = submitted(make)
    user = member(make, application.product.cooperative) if role is Role.COOPERATIVE else make.user(role)
    assert _decide(client, make, user, application.id).status_code == 403


def test_prefecture_deciding_before_the_county_is_wrong_stage_409(client, make):
    application = submitted(make)
    response = _decide(client, make, prefecture(make), application.id)
    assert response.status_code == 409 and response.json["error"]["code"] == "wrong_stage"


def test_county_deciding_twice_is_wrong_stage_409(client, make):
    application = submitted(make)
    county = reviewer(make)
    assert _decide(client, make, county, application.id).status_code == 200
    assert _decide(client, make, county, application.id).status_code == 409
    assert _decide(client, make, county, application.id, "reject", "不行").status_code == 409


def test_deciding_a_certified_or_rejected_application_is_409(client, make):
    done = certified_through_workflow(make)
    assert _decide(client, make, prefecture(make), done.id).status_code == 409
    rejected = submitted(make)
    _decide(client, make, reviewer(make), rejected.id, "reject", "证明过期")
    assert _decide(client, make, reviewer(make), rejected.id).status_code == 409


@pytest.mark.parametrize("comment", [None, "", "   "])
def test_rejection_without_a_reason_is_422_at_either_stage(client, make, comment):
    application = submitted(make)
    response = _decide(client, make, reviewer(make), application.id, "reject", comment)
    assert response.status_code == 422
    assert "comment" in response.json["error"]["fields"]
    _decide(client, make, reviewer(make), application.id)
    assert _decide(client, make, prefecture(make), application.id, "reject", comment).status_code == 422
    db.session.expire_all()
    assert db.session.get(Certification, application.id).status == "county_approved"


@pytest.mark.parametrize("body", [{"decision": "maybe", "comment": "x"}, {"comment": "x"}, {"decision": True}])
def test_unknown_decision_is_422(client, make, body):
    application = submitted(make)
    response = client.post(f"/api/v1/certifications/{application.id}/decision",
                           headers=make.headers(reviewer(make)), json=body)
    assert response.status_code == 422


def test_unknown_application_is_404(client, make):
    assert _decide(client, make, reviewer(make), 999_999).status_code == 404
    assert client.get("/api/v1/certifications/999999", headers=make.headers(prefecture(make))).status_code == 404


def test_rejection_returns_the_product_to_the_cooperative_who_may_apply_again(client, make):
    application = submitted(make)
    item = application.product
    rejected = _decide(client, make, reviewer(make), application.id, "reject", "绿色食品证书编号与产品不符")
    assert rejected.json["status"] == "rejected"
    owner = member(make, item.cooperative)
    seen = client.get(f"/api/v1/products/{item.id}", headers=make.headers(owner)).json
    assert seen["status"] == "rejected"
    again = _apply(client, make, item, user=owner)
    assert again.status_code == 201 and again.json["id"] != application.id


def test_history_records_who_when_from_to_and_why(client, make):
    application = submitted(make)
    county = reviewer(make)
    chief = prefecture(make)
    _decide(client, make, county, application.id, comment="产地核实无误")
    _decide(client, make, chief, application.id, comment="准予认定")
    history = client.get(f"/api/v1/certifications/{application.id}", headers=make.headers(chief)).json["history"]
    assert [(h["action"], h["from"], h["to"]) for h in history] == [
        ("submit", None, "submitted"), ("approve", "submitted", "county_approved"),
        ("approve", "county_approved", "certified")]
    assert [h["actor_id"] for h in history[1:]] == [county.id, chief.id]
    assert [h["actor_role"] for h in history] == ["cooperative", "county_reviewer", "prefecture_reviewer"]
    assert [h["comment"] for h in history[1:]] == ["产地核实无误", "准予认定"]
    assert all(h["at"].endswith("+08:00") for h in history)


def test_list_is_scoped_to_the_county_reviewers_county(client, make):
    guzhang = submitted(make)
    huayuan = submitted(make, product_=product(make, cooperative=make.cooperative(village=make.village("花垣县"))))

    def ids(user, query=""):
        response = client.get(f"/api/v1/certifications{query}", headers=make.headers(user))
        assert response.status_code == 200
        return {item["id"] for item in response.json["items"]}

    assert ids(reviewer(make, "古丈县")) == {guzhang.id}
    assert ids(reviewer(make, "花垣县"), "?status=submitted") == {huayuan.id}
    assert ids(prefecture(make)) == {guzhang.id, huayuan.id}
    assert ids(prefecture(make), "?status=county_approved") == set()
    assert ids(make.user(Role.ADMIN), "?county=花垣县") == {huayuan.id}
    assert ids(member(make, guzhang.product.cooperative)) == {guzhang.id}
    assert client.get("/api/v1/certifications", headers=make.headers(make.user(Role.CONSUMER))).status_code == 403
    assert client.get("/api/v1/certifications?status=lost", headers=make.headers(prefecture(make))).status_code == 422


def test_expired_is_derived_from_the_date_in_lists_and_detail(client, make):
    today = shanghai_today()
    old = certified_product(make, valid_from=today - timedelta(days=1200), valid_until=today - timedelta(days=1))
    fresh = certified_product(make)
    chief = prefecture(make)
    expired = client.get("/api/v1/certifications?status=expired", headers=make.headers(chief)).json["items"]
    assert [item["id"] for item in expired] == [old.certificate_id]
    certified = client.get("/api/v1/certifications?status=certified", headers=make.headers(chief)).json["items"]
    assert [item["id"] for item in certified] == [fresh.certificate_id]
    detail = client.get(f"/api/v1/certifications/{old.certificate_id}", headers=make.headers(chief)).json
    assert detail["status"] == "expired"


def test_cooperative_reads_its_own_application_and_not_others(client, make):
    application = submitted(make)
    owner = member(make, application.product.cooperative)
    assert client.get(f"/api/v1/certifications/{application.id}", headers=make.headers(owner)).status_code == 200
    assert client.get(f"/api/v1/certifications/{application.id}", headers=make.headers(member(make))).status_code == 404
    assert client.get(f"/api/v1/certifications/{application.id}",
                      headers=make.headers(make.user(Role.CONSUMER))).status_code == 404
    assert client.get(f"/api/v1/certifications/{application.id}").status_code == 401


def test_revocation_needs_a_prefecture_reviewer_and_a_reason_and_delists_at_once(client, make):
    application = certified_through_workflow(make)
    url = f"/api/v1/certifications/{application.id}/revoke"
    assert client.post(url, headers=make.headers(reviewer(make)), json={"reason": "抽检不合格"}).status_code == 403
    assert client.post(url, headers=make.headers(make.user(Role.ADMIN)), json={"reason": "x"}).status_code == 403
    chief = prefecture(make)
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": 5}):
        assert client.post(url, headers=make.headers(chief), json=body).status_code == 422
    assert client.get(f"/api/v1/products/{application.product_id}").status_code == 200
    response = client.post(url, headers=make.headers(chief), json={"reason": "抽检农残超标"})
    assert response.status_code == 200 and response.json["status"] == "revoked"
    assert response.json["revoked_reason"] == "抽检农残超标"
    assert client.get("/api/v1/products").json["total"] == 0
    assert client.get(f"/api/v1/products/{application.product_id}").status_code == 404
    assert client.post(url, headers=make.headers(chief), json={"reason": "再撤一次"}).status_code == 409
    owner = member(make, application.product.cooperative)
    assert client.get(f"/api/v1/products/{application.product_id}", headers=make.headers(owner)).json["status"] == "revoked"


def test_revocation_closes_a_renewal_under_review(client, make):
    application = certified_through_workflow(make)
    renewal = submitted(make, product_=application.product)
    chief = prefecture(make)
    client.post(f"/api/v1/certifications/{application.id}/revoke", headers=make.headers(chief),
                json={"reason": "冒用品牌"})
    closed = client.get(f"/api/v1/certifications/{renewal.id}", headers=make.headers(chief)).json
    assert closed["status"] == "rejected"
    assert "冒用品牌" in closed["history"][-1]["comment"]


def test_renewal_keeps_the_product_sellable_and_switches_the_certificate_on_approval(client, make):
    first = certified_through_workflow(make)
    item_id = first.product_id
    renewal_id = _apply(client, make, first.product).json["id"]
    assert client.get(f"/api/v1/certifications/{renewal_id}",
                      headers=make.headers(prefecture(make))).json["renews_id"] == first.id
    for user, _ in ((reviewer(make), "county"), (prefecture(make), "prefecture")):
        assert item_id in {p["id"] for p in client.get("/api/v1/products").json["items"]}
        assert client.get(f"/api/v1/products/{item_id}").json["certification"]["id"] == first.id
        assert _decide(client, make, user, renewal_id).status_code == 200
    shown = client.get(f"/api/v1/products/{item_id}").json
    assert shown["certification"]["id"] == renewal_id and shown["status"] == "certified"
    old = client.get(f"/api/v1/certifications/{first.id}", headers=make.headers(prefecture(make))).json
    assert old["current"] is False
    # The superseded certificate cannot be revoked by mistake; the current one can.
    assert client.post(f"/api/v1/certifications/{first.id}/revoke", headers=make.headers(prefecture(make)),
                       json={"reason": "x"}).status_code == 409


def test_rejected_renewal_leaves_the_old_certificate_selling(client, make):
    first = certified_through_workflow(make)
    renewal_id = _apply(client, make, first.product).json["id"]
    _decide(client, make, reviewer(make), renewal_id, "reject", "补充新的检测报告")
    shown = client.get(f"/api/v1/products/{first.product_id}").json
    assert shown["status"] == "certified" and shown["certification"]["id"] == first.id


def test_certificate_numbers_are_unique(client, make):
    numbers = {certified_through_workflow(make).certificate_no for _ in range(3)}
    assert len(numbers) == 3
    clash = Certification(product=product(make), status="certified", certificate_no=next(iter(numbers)),
                          valid_from=shanghai_today(), valid_until=shanghai_today())
    db.session.add(clash)
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_renewal_reminder_fields(client, make):
    soon = certified_product(make, valid_until=shanghai_today() + timedelta(days=10))
    later = certified_product(make)
    assert client.get(f"/api/v1/products/{soon.id}").json["certification"]["renewal_due"] is True
    assert client.get(f"/api/v1/products/{soon.id}").json["certification"]["expires_in_days"] == 10
    assert client.get(f"/api/v1/products/{later.id}").json["certification"]["renewal_due"] is False


def test_evidence_flags_warn_reviewers_of_expired_expiring_and_odd_documents(client, make):
    today = shanghai_today()
    application = submitted(make, evidence=[
        {**EVIDENCE, "valid_until": (today - timedelta(days=3)).isoformat()},
        {**EVIDENCE, "type": "organic", "number": "12345678901234567",
         "valid_until": (today + timedelta(days=10)).isoformat()},
        {**EVIDENCE, "type": "geographical_indication", "number": "GI-001", "valid_until": "2031-01-01"},
        {**EVIDENCE, "valid_until": "2031-01-01"},
    ])
    body = client.get(f"/api/v1/certifications/{application.id}", headers=make.headers(reviewer(make))).json
    codes = [[flag["code"] for flag in item["flags"]] for item in body["evidence"]]
    assert codes == [["expired"], ["expiring"], ["unusual_number"], []]


def test_evidence_scan_is_attached_served_and_then_frozen(client, make):
    from io import BytesIO

    from tests.certification.factories import image_bytes

    application = submitted(make)
    owner = member(make, application.product.cooperative)
    evidence_id = application.evidence[0].id
    url = f"/api/v1/certifications/{application.id}/evidence/{evidence_id}/file"
    refused = client.post(url, headers=make.headers(owner), data={"file": (BytesIO(b"%PDF-1.4 fake"), "scan.pdf")})
    assert refused.status_code == 422
    response = client.post(url, headers=make.headers(owner),
                           data={"file": (BytesIO(image_bytes("JPEG", (1200, 900))), "scan.jpg")})
    assert response.status_code == 200, response.json
    file_url = response.json["evidence"][0]["file_url"]
    assert client.get(file_url, headers=make.headers(reviewer(make))).status_code == 200
    assert client.get(file_url, headers=make.headers(reviewer(make, "花垣县"))).status_code == 403
    assert client.get(file_url).status_code in (302, 401)
    assert db.session.get(Evidence, evidence_id).filename.endswith(".jpg")
    _decide(client, make, reviewer(make), application.id)
    late = client.post(url, headers=make.headers(owner),
                       data={"file": (BytesIO(image_bytes("PNG")), "scan.png")})
    assert late.status_code == 409


def test_renewal_reminder_window_is_configurable(app, client, make):
    soon = certified_product(make, valid_until=shanghai_today() + timedelta(days=10))
    app.config["CERTIFICATE_RENEWAL_REMINDER_DAYS"] = 5
    try:
        assert client.get(f"/api/v1/products/{soon.id}").json["certification"]["renewal_due"] is False
    finally:
        app.config.pop("CERTIFICATE_RENEWAL_REMINDER_DAYS")
    assert client.get(f"/api/v1/products/{soon.id}").json["certification"]["renewal_due"] is True
