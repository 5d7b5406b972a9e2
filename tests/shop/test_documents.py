"""Order documents as PDF (issue #12): Chinese text readable by pypdf, the order number inside,
frozen once issued, and shown only to those who may see them."""
import hashlib
import io
import json

from pypdf import PdfReader

from core.audit import history_of
from core.extensions import db
from core.models import Role
from shop.models import OrderDocument
from tests.certification.factories import certified_product
from tests.shop.helpers import place
from tests.traceability.factories import batch


def _text(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _canteen_order(client, make):
    """A canteen order paid by bank transfer and shipped; returns (order, buyer, product, coop member)."""
    tea = certified_product(make, name="古丈毛尖 明前特级")
    batch(tea, quantity=50)
    buyer = make.user(Role.CANTEEN_BUYER)
    order = place(client, make, buyer, (tea, 10), payment_method="bank_transfer", purchase_order_no="XZJG-2026-018")
    finance = make.headers(make.user(Role.FINANCE))
    assert client.post(f"/api/v1/orders/{order['id']}/confirm-transfer", headers=finance,
                       json={"amount_fen": order["total_fen"], "reference": "BANK-20261206-01"}).status_code == 200
    coop = make.user(Role.COOPERATIVE, cooperative=tea.cooperative)
    assert client.post(f"/api/v1/orders/{order['id']}/ship", headers=make.headers(coop),
                       json={"carrier": "顺丰", "tracking_number": "SF000111222"}).status_code == 200
    return order, buyer, tea, coop


def test_the_three_documents_are_chinese_pdfs_with_the_order_number(client, make):
    order, buyer, tea, coop = _canteen_order(client, make)
    headers = make.headers(buyer)
    listing = client.get(f"/api/v1/orders/{order['id']}/documents", headers=headers).get_json()["items"]
    assert [item["kind"] for item in listing] == ["purchase_order", "delivery_note", "payment_receipt"]
    expected = {"purchase_order": ["采购单", "XZJG-2026-018", "古丈毛尖"],
                "delivery_note": ["送货单", "顺丰", "SF000111222", "验收人"],
                "payment_receipt": ["付款回单", "BANK-20261206-01", "对公转账"]}
    for item in listing:
        response = client.get(item["url"], headers=headers)
        assert response.status_code == 200 and response.mimetype == "application/pdf"
        assert response.headers["X-Content-SHA256"] == hashlib.sha256(response.data).hexdigest()
        text = _text(response.data)
        assert order["number"] in text
        for needle in expected[item["kind"]]:
            assert needle in text, (item["kind"], needle)


def test_a_document_does_not_change_after_issue(client, make):
    order, buyer, tea, coop = _canteen_order(client, make)
    headers = make.headers(buyer)
    url = f"/api/v1/orders/{order['id']}/documents/purchase_order.pdf"
    first = client.get(url, headers=headers).data
    # What the document names changes afterwards: the unit is renamed, part of the order refunded.
    buyer.budget_unit.name = "改名后的单位"
    db.session.commit()
    client.post(f"/api/v1/orders/{order['id']}/refund", headers=make.headers(make.user(Role.FINANCE)),
                json={"amount_fen": 100, "reason": "差价"})
    again = client.get(url, headers=headers).data
    assert again == first and "改名后的单位" not in _text(again)
    stored = db.session.query(OrderDocument).filter_by(order_id=order["id"], kind="purchase_order").one()
    assert stored.sha256 == hashlib.sha256(first).hexdigest()
    issued = [e for e in history_of("order", order["id"]) if e.action == "document_issued"]
    assert len(issued) == 1 and json.loads(issued[0].data)["sha256"] == stored.sha256


def test_who_may_download_what(client, make):
    order, buyer, tea, coop = _canteen_order(client, make)
    base = f"/api/v1/orders/{order['id']}/documents"
    colleague = make.user(Role.CANTEEN_BUYER, budget_unit_id=buyer.budget_unit_id)
    assert client.get(f"{base}/payment_receipt.pdf", headers=make.headers(colleague)).status_code == 200
    # The cooperative gets its own delivery note, nothing else.
    coop_headers = make.headers(coop)
    kinds = [i["kind"] for i in client.get(base, headers=coop_headers).get_json()["items"]]
    assert kinds == ["delivery_note"]
    assert client.get(f"{base}/delivery_note.pdf?cooperative_id={tea.cooperative_id}",
                      headers=coop_headers).status_code == 200
    assert client.get(f"{base}/purchase_order.pdf", headers=coop_headers).status_code == 404
    for stranger in (make.user(), make.user(Role.CANTEEN_BUYER), make.user(Role.COOPERATIVE)):
        assert client.get(f"{base}/purchase_order.pdf", headers=make.headers(stranger)).status_code == 404
        assert client.get(base, headers=make.headers(stranger)).status_code == 404
    assert client.get(f"{base}/purchase_order.pdf").status_code == 401


def test_documents_wait_for_their_event(client, make):
    tea = certified_product(make)
    batch(tea, quantity=50)
    buyer = make.user(Role.CANTEEN_BUYER)
    order = place(client, make, buyer, (tea, 10), payment_method="bank_transfer")
    headers = make.headers(buyer)
    kinds = [i["kind"] for i in client.get(f"/api/v1/orders/{order['id']}/documents", headers=headers).get_json()["items"]]
    assert kinds == ["purchase_order"]  # not paid, not shipped
    base = f"/api/v1/orders/{order['id']}/documents"
    assert client.get(f"{base}/payment_receipt.pdf", headers=headers).status_code == 404
    assert client.get(f"{base}/delivery_note.pdf?cooperative_id={tea.cooperative_id}", headers=headers).status_code == 404


def test_the_order_page_links_the_documents(client, make):
    order, buyer, tea, coop = _canteen_order(client, make)
    client.post("/login", data={"email": buyer.email, "password": "password123"})
    html = client.get(f"/orders/{order['id']}").get_data(as_text=True)
    assert "单据（PDF）" in html and "付款回单" in html
    response = client.get(f"/orders/{order['id']}/documents/payment_receipt.pdf")
    assert response.status_code == 200 and "付款回单" in _text(response.data)
