"""Certification pages: catalogue and CSV, cooperative pages, reviewer queues and decisions."""
import csv
import io
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from certification.models import Certification, Product
from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from tests.certification.factories import (
    EVIDENCE,
    certified_product,
    certified_through_workflow,
    image_bytes,
    member,
    prefecture,
    product,
    reviewer,
    submitted,
)


def _sign_in(client, user):
    client.post("/logout")
    response = client.post("/login", data={"email": user.email, "password": "password123"})
    assert response.status_code == 302


def test_catalogue_lists_certified_products_with_producer_village_and_certificate(client, make):
    sold = certified_product(make, name="保靖黄金茶")
    product(make, name="还在草稿的茶")
    html = client.get("/catalogue").get_data(as_text=True)
    assert "保靖黄金茶" in html and "还在草稿的茶" not in html
    assert sold.cooperative.name in html and sold.villages[0].name in html
    assert sold.certificate.certificate_no in html and sold.certificate.valid_until.isoformat() in html


def test_catalogue_filters_by_county_and_category(client, make):
    certified_product(make, name="古丈毛尖")
    certified_product(make, name="十八洞猕猴桃", category="kiwifruit",
                      cooperative=make.cooperative(village=make.village("花垣县")))
    by_county = client.get("/catalogue?county=花垣县").get_data(as_text=True)
    assert "十八洞猕猴桃" in by_county and "古丈毛尖" not in by_county
    by_category = client.get("/catalogue?category=tea").get_data(as_text=True)
    assert "古丈毛尖" in by_category and "十八洞猕猴桃" not in by_category
    # An unknown filter is ignored rather than failing the page.
    assert client.get("/catalogue?county=长沙县").status_code == 200


def test_catalogue_csv_is_utf8_with_bom_and_neutralises_formulas(client, make):
    certified_product(make, name="=HYPERLINK(\"http://evil\")")
    certified_product(make, name="龙山百合", category="lily")
    response = client.get("/catalogue.csv?category=lily")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    assert rows[0][:3] == ["产品编号", "产品名称", "品类"] and len(rows) == 2
    assert rows[1][1] == "龙山百合" and rows[1][10].startswith("XXXB-")
    everything = list(csv.reader(io.StringIO(client.get("/catalogue.csv").data.decode("utf-8-sig"))))
    assert any(row[1].startswith("'=") for row in everything[1:])


def test_product_page_is_public_when_sellable_and_private_with_a_warning_otherwise(client, make):
    sold = certified_product(make)
    draft = product(make)
    assert "湘西香伴认定产品" in client.get(f"/catalogue/{sold.id}").get_data(as_text=True)
    assert client.get(f"/catalogue/{draft.id}").status_code == 404
    _sign_in(client, member(make, draft.cooperative))
    html = client.get(f"/catalogue/{draft.id}").get_data(as_text=True)
    assert "未通过认定" in html


def test_member_registers_edits_and_applies_from_the_pages(client, make):
    user = member(make)
    _sign_in(client, user)
    village = user.cooperative.village
    form = {"name": "古丈毛尖 雨前一级", "category": "tea", "description": "雨前采摘", "unit": "盒",
            "specification": "250克", "price_yuan": "98.50", "gtin": "", "village_ids_field": "1",
            "village_ids": [str(village.id)], "bulk_field": "1", "bulk_moq": "10",
            "tier_qty_0": "10", "tier_price_0": "88", "tier_qty_1": "", "tier_price_1": ""}
    response = client.post("/my/products/new", data=form)
    assert response.status_code == 302
    item = db.session.scalar(sa.select(Product).where(Product.name == "古丈毛尖 雨前一级"))
    assert item.price_fen == 9_850 and item.bulk_moq == 10 and item.bulk_tiers[0].price_fen == 8_800
    edit = client.post(f"/my/products/{item.id}/edit", data={**form, "price_yuan": "abc"})
    assert edit.status_code == 422 and "请填写价格" in edit.get_data(as_text=True)
    # Unicode digits that int() refuses ("²".isdigit() is True) are bad input, not a crash.
    for field, value in (("bulk_moq", "²"), ("tier_qty_0", "¹⁰"), ("price_yuan", "1e3")):
        odd = client.post(f"/my/products/{item.id}/edit", data={**form, field: value})
        assert odd.status_code == 422, (field, value)
    db.session.expire_all()
    assert db.session.get(Product, item.id).price_fen == 9_850
    upload = client.post(f"/my/products/{item.id}/images", data={"file": (io.BytesIO(image_bytes()), "a.png")},
                         content_type="multipart/form-data")
    assert upload.status_code == 302
    bad = client.post(f"/my/products/{item.id}/images", data={"file": (io.BytesIO(b"nope"), "a.png")},
                      content_type="multipart/form-data", follow_redirects=True)
    assert "图片上传失败" in bad.get_data(as_text=True)
    applied = client.post(f"/my/products/{item.id}/apply", content_type="multipart/form-data", data={
        "ev_type_0": "green_food", "ev_number_0": EVIDENCE["number"], "ev_issuer_0": EVIDENCE["issuer"],
        "ev_valid_until_0": "2029-12-31", "ev_file_0": (io.BytesIO(image_bytes("JPEG")), "scan.jpg"),
        "ev_type_1": "other", "ev_number_1": "", "ev_issuer_1": "", "ev_valid_until_1": ""})
    assert applied.status_code == 302
    application = db.session.scalar(sa.select(Certification).where(Certification.product_id == item.id))
    assert application.status == "submitted" and len(application.evidence) == 1
    assert application.evidence[0].filename
    page = client.get(f"/my/products/{item.id}").get_data(as_text=True)
    assert "待县级审核" in page
    assert client.post(f"/my/products/{item.id}/apply", data={
        "ev_type_0": "green_food", "ev_number_0": "x", "ev_issuer_0": "y", "ev_valid_until_0": "2029-01-01"}
    ).status_code == 409


def test_apply_form_shows_validation_errors(client, make):
    item = product(make)
    _sign_in(client, member(make, item.cooperative))
    response = client.post(f"/my/products/{item.id}/apply", data={
        "ev_type_0": "green_food", "ev_number_0": "LB-1", "ev_issuer_0": "中心", "ev_valid_until_0": ""})
    assert response.status_code == 422
    assert "该类证明须填写有效期" in response.get_data(as_text=True)


def test_edit_page_locks_brand_fields_of_a_certified_product(client, make):
    item = certified_product(make)
    _sign_in(client, member(make, item.cooperative))
    html = client.get(f"/my/products/{item.id}/edit").get_data(as_text=True)
    assert re.search(r'id="name"[^>]*disabled', html)
    response = client.post(f"/my/products/{item.id}/edit",
                           data={"price_yuan": "150", "description": "新描述", "bulk_field": "1"})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Product, item.id).price_fen == 15_000


def test_member_pages_show_only_their_own_products(client, make):
    mine = product(make, name="我的茶")
    other = product(make, name="别人的茶")
    _sign_in(client, member(make, mine.cooperative))
    html = client.get("/my/products").get_data(as_text=True)
    assert "我的茶" in html and "别人的茶" not in html
    assert client.get(f"/my/products/{other.id}").status_code == 404
    assert client.get(f"/my/products/{other.id}/edit").status_code == 404


def test_my_products_reminds_of_certificates_due_for_renewal(client, make):
    soon = certified_product(make, name="快到期的茶", valid_until=shanghai_today() + timedelta(days=20))
    _sign_in(client, member(make, soon.cooperative))
    html = client.get("/my/products").get_data(as_text=True)
    assert "请及时申请续期" in html and "还有 20 天" in html
    submitted(make, product_=soon)
    assert "请及时申请续期" not in client.get("/my/products").get_data(as_text=True)


def test_my_products_shows_what_the_reviewer_said(client, make):
    from certification import services

    application = submitted(make)
    services.decide_application(reviewer(make), application.id,
                                {"decision": "reject", "comment": "承诺达标合格证已过期"})
    _sign_in(client, member(make, application.product.cooperative))
    html = client.get("/my/products").get_data(as_text=True)
    assert "已驳回" in html and "承诺达标合格证已过期" in html


def test_county_queue_shows_its_county_with_waiting_time_and_flags(client, make):
    today = shanghai_today()
    mine = submitted(make, evidence=[{**EVIDENCE, "valid_until": (today - timedelta(days=1)).isoformat()}])
    elsewhere = submitted(make, product_=product(make, name="外县产品",
                                                  cooperative=make.cooperative(village=make.village("花垣县"))))
    _sign_in(client, reviewer(make, "古丈县"))
    html = client.get("/review").get_data(as_text=True)
    assert f'data-certification-id="{mine.id}"' in html
    assert f'data-certification-id="{elsewhere.id}"' not in html
    assert "已等待" in html and "1 项需核实" in html
    detail = client.get(f"/certifications/{mine.id}").get_data(as_text=True)
    assert "已于" in detail and "过期" in detail


def test_prefecture_queue_shows_county_approved_only(client, make):
    from certification import services

    waiting_county = submitted(make)
    waiting_me = submitted(make)
    services.decide_application(reviewer(make), waiting_me.id, {"decision": "approve", "comment": ""})
    _sign_in(client, prefecture(make))
    html = client.get("/review").get_data(as_text=True)
    assert f'data-certification-id="{waiting_me.id}"' in html
    assert f'data-certification-id="{waiting_county.id}"' not in html


def test_reviewer_decides_from_the_page_and_rejection_needs_a_reason(client, make):
    application = submitted(make)
    _sign_in(client, reviewer(make))
    refused = client.post(f"/certifications/{application.id}/decision", data={"decision": "reject", "comment": ""})
    assert refused.status_code == 422 and "驳回必须填写理由" in refused.get_data(as_text=True)
    approved = client.post(f"/certifications/{application.id}/decision", data={"decision": "approve", "comment": "同意"})
    assert approved.status_code == 302
    again = client.post(f"/certifications/{application.id}/decision", data={"decision": "approve"})
    assert again.status_code == 409
    _sign_in(client, prefecture(make))
    page = client.get(f"/certifications/{application.id}").get_data(as_text=True)
    assert "通过，发放证书" in page and "同意" in page
    client.post(f"/certifications/{application.id}/decision", data={"decision": "approve", "comment": "准予"})
    db.session.expire_all()
    assert db.session.get(Certification, application.id).status == "certified"


def test_wrong_county_reviewer_gets_403_pages(client, make):
    application = submitted(make)
    _sign_in(client, reviewer(make, "花垣县"))
    assert client.get(f"/certifications/{application.id}").status_code == 403
    assert client.post(f"/certifications/{application.id}/decision",
                       data={"decision": "approve"}).status_code == 403


def test_application_page_shows_earlier_applications_and_decisions(client, make):
    from certification import services

    first = submitted(make)
    services.decide_application(reviewer(make), first.id, {"decision": "reject", "comment": "缺少检测报告"})
    second = submitted(make, product_=first.product)
    _sign_in(client, reviewer(make))
    html = client.get(f"/certifications/{second.id}").get_data(as_text=True)
    assert "该产品此前的申请" in html and "缺少检测报告" in html


def test_prefecture_revokes_from_the_page_and_the_product_leaves_the_catalogue(client, make):
    application = certified_through_workflow(make)
    name = application.product.name
    assert name in client.get("/catalogue").get_data(as_text=True)
    _sign_in(client, prefecture(make))
    assert client.post(f"/certifications/{application.id}/revoke", data={"reason": ""}).status_code == 422
    assert client.post(f"/certifications/{application.id}/revoke", data={"reason": "冒用品牌"}).status_code == 302
    client.post("/logout")
    assert name not in client.get("/catalogue").get_data(as_text=True)


def test_certificates_page_lists_current_certificates_and_expiring_ones(client, make):
    soon = certified_product(make, name="快到期", valid_until=shanghai_today() + timedelta(days=5))
    later = certified_product(make, name="还早")
    _sign_in(client, prefecture(make))
    html = client.get("/review/certificates?expiring=1").get_data(as_text=True)
    assert soon.certificate.certificate_no in html and later.certificate.certificate_no not in html


@pytest.mark.parametrize("role,visible,hidden", [
    (Role.COOPERATIVE, ["我的产品", "产品目录"], ["审核队列"]),
    (Role.COUNTY_REVIEWER, ["审核队列", "证书管理"], ["我的产品"]),
    (Role.PREFECTURE_REVIEWER, ["审核队列", "证书管理"], ["我的产品"]),
    (Role.CONSUMER, ["产品目录"], ["审核队列", "我的产品"]),
])
def test_navigation_links_follow_the_role(client, make, role, visible, hidden):
    _sign_in(client, make.user(role))
    nav = client.get("/").get_data(as_text=True).split('aria-label="主导航"')[1].split("</nav>")[0]
    assert all(label in nav for label in visible) and not any(label in nav for label in hidden)


@pytest.mark.parametrize("url", ["/my/products", "/review", "/review/certificates"])
def test_role_pages_refuse_other_roles(client, make, url):
    _sign_in(client, make.user(Role.CONSUMER))
    assert client.get(url).status_code == 403


def test_apply_form_errors_stay_with_the_row_they_belong_to(client, make):
    item = product(make)
    _sign_in(client, member(make, item.cooperative))
    response = client.post(f"/my/products/{item.id}/apply", data={
        "ev_type_0": "other", "ev_number_0": "", "ev_issuer_0": "", "ev_valid_until_0": "",
        "ev_type_1": "organic", "ev_number_1": "12345678901234567", "ev_issuer_1": "认证机构", "ev_valid_until_1": ""})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    second = html.split("证明材料 2")[1].split("证明材料 3")[0]
    assert "该类证明须填写有效期" in second
