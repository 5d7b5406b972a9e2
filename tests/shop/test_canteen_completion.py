"""A canteen order is complete only when its buyer confirms the delivery (issue #12): the
housekeeping that completes long-shipped online orders never touches it."""
from datetime import timedelta

from core.extensions import db
from core.models import Role
from core.timeutil import utcnow
from shop import services
from shop.models import Order
from tests.certification.factories import certified_product
from tests.shop.helpers import place
from tests.traceability.factories import batch


def test_a_shipped_canteen_order_waits_for_its_buyer_however_long(client, make):
    tea = certified_product(make)
    batch(tea, quantity=50)
    canteen = make.user(Role.CANTEEN_BUYER)
    order = place(client, make, canteen, (tea, 10), payment_method="bank_transfer")
    finance = make.headers(make.user(Role.FINANCE))
    paid = client.post(f"/api/v1/orders/{order['id']}/confirm-transfer", headers=finance,
                       json={"amount_fen": order["total_fen"], "reference": "BANK-1"})
    assert paid.status_code == 200, paid.get_json()
    coop = make.headers(make.user(Role.COOPERATIVE, cooperative=tea.cooperative))
    shipped = client.post(f"/api/v1/orders/{order['id']}/ship", headers=coop,
                          json={"carrier": "顺丰", "tracking_number": "SF000111222"})
    assert shipped.status_code == 200, shipped.get_json()
    assert services.auto_complete_shipped(now=utcnow() + timedelta(days=365)) == 0
    db.session.expire_all()
    assert db.session.get(Order, order["id"]).status == "shipped"
    received = client.post(f"/api/v1/orders/{order['id']}/inspection", headers=make.headers(canteen),
                           json={"lines": [{"product_id": tea.id, "received_quantity": 10}]})
    assert received.status_code == 201 and received.get_json()["status"] == "completed"
