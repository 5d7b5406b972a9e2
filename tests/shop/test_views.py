"""Shop pages: storefront, product page, cart (guest cookie merged at sign-in), checkout, order pages."""
from datetime import timedelta

import sqlalchemy as sa

from core.extensions import db
from core.models import Role
from core.timeutil import shanghai_today
from shop.models import CartItem, Order
from tests.certification.factories import certified_product, product
from tests.shop.helpers import completed_event, deliver, place
from tests.traceability.factories import batch


def _sign_in(client, user):
    client.post("/login", data={"email": user.email, "password": "password123"})


def test_home_shows_products_on_sale_and_villages_behind_target(client, make):
    tea = certified_product(make, name="古丈毛尖 明前特级")
    batch(tea, quantity=5)
    draft = product(make, name="未认定的腊肉")
    batch(draft, quantity=5)
    html = client.get("/").get_data(as_text=True)
    assert "古丈毛尖 明前特级" in html and "未认定的腊肉" not in html
    assert tea.villages[0].name in html and "离年度目标最远的产地村" in html
    assert "逛好物" in html


def test_browse_filters_by_category_and_county(client, make):
    guzhang = make.village("古丈县")
    huayuan = make.village("花垣县")
    tea = certified_product(make, name="古丈毛尖", category="tea", villages=[guzhang])
    kiwi = certified_product(make, name="十八洞猕猴桃", category="kiwifruit", villages=[huayuan])
    batch(tea, quantity=3)
    html = client.get("/shop").get_data(as_text=True)
    assert "古丈毛尖" in html and "十八洞猕猴桃" in html and "已售罄" in html
    assert "十八洞猕猴桃" not in client.get("/shop?category=tea").get_data(as_text=True)
    by_county = client.get("/shop?county=花垣县").get_data(as_text=True)
    assert "十八洞猕猴桃" in by_county and "古丈毛尖" not in by_county
    assert kiwi.id != tea.id


def test_product_page_shows_village_progress_certificate_and_bulk_terms(client, make):
    tea = certified_product(make, price_fen=12_800, bulk_moq=20)
    stock = batch(tea, quantity=10)
    order = place(client, make, make.user(), (tea, 2))
    deliver(client, completed_event(order))
    html = client.get(f"/products/{tea.id}").get_data(as_text=True)
    assert tea.certificate.certificate_no in html
    assert "今年已售 ¥256.00 / 目标 ¥150,000.00" in html
    assert "起订量 20" in html and "加入购物车" in html and "可售 8" in html
    assert stock.village.name in html


def test_unsellable_product_page_is_404_except_for_its_cooperative(client, make):
    draft = product(make)
    assert client.get(f"/products/{draft.id}").status_code == 404
    _sign_in(client, make.user(Role.COOPERATIVE, cooperative=draft.cooperative))
    html = client.get(f"/products/{draft.id}").get_data(as_text=True)
    assert "不能购买" in html and "加入购物车" not in html


def test_guest_cart_survives_sign_in_and_is_merged(client, make):
    tea = certified_product(make, price_fen=1_000)
    batch(tea, quantity=10)
    assert client.post("/cart/add", data={"product_id": tea.id, "quantity": 2}).status_code == 302
    assert "¥20.00" in client.get("/cart").get_data(as_text=True)
    user = make.user()
    db.session.add(CartItem(user_id=user.id, product_id=tea.id, quantity=1))
    db.session.commit()
    _sign_in(client, user)
    html = client.get("/cart").get_data(as_text=True)
    assert "¥30.00" in html
    assert db.session.scalar(sa.select(CartItem.quantity).where(CartItem.user_id == user.id)) == 3
    # The cookie is gone after the merge, so reloading does not add it again.
    client.get("/cart")
    db.session.expire_all()
    assert db.session.scalar(sa.select(CartItem.quantity).where(CartItem.user_id == user.id)) == 3


def test_tampered_cart_cookie_is_ignored(client, make):
    client.set_cookie("xb_cart", "forged.value")
    assert client.get("/cart").status_code == 200


def test_cart_flags_stock_and_removal(client, make):
    tea = certified_product(make)
    batch(tea, quantity=2)
    user = make.user()
    _sign_in(client, user)
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 5})
    html = client.get("/cart").get_data(as_text=True)
    assert "库存不足，当前可售 2" in html and "去结算" not in html
    client.post("/cart/update", data={f"quantity_{tea.id}": 2})
    assert "去结算" in client.get("/cart").get_data(as_text=True)
    client.post("/cart/update", data={"remove": str(tea.id)})
    assert "购物车是空的" in client.get("/cart").get_data(as_text=True)


def test_checkout_places_the_order_and_goes_to_the_simulated_payment(client, make):
    tea = certified_product(make, price_fen=2_500)
    batch(tea, quantity=10)
    user = make.user()
    _sign_in(client, user)
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 2})
    response = client.post("/checkout", data={"name": "李四", "phone": "13900000000",
                                              "address": "湖南省吉首市乾州街道 8 号", "payment_method": "stripe"})
    assert response.status_code == 302 and "/pay/sandbox/cs_sandbox_" in response.headers["Location"]
    order = db.session.scalars(sa.select(Order)).one()
    assert order.total_fen == 5_000 and order.buyer_id == user.id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(CartItem)) == 0
    client.post(response.headers["Location"])
    page = client.get(f"/orders/{order.id}").get_data(as_text=True)
    assert "已付款" in page and order.number in page
    assert order.number in client.get("/orders").get_data(as_text=True)


def test_checkout_shows_errors_and_keeps_the_cart(client, make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    _sign_in(client, make.user())
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 1})
    response = client.post("/checkout", data={"name": "", "phone": "x", "address": "短"})
    assert response.status_code == 422
    assert "电话号码格式不正确" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(CartItem)) == 1


def test_checkout_needs_sign_in(client):
    response = client.get("/checkout")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_canteen_checkout_by_bank_transfer_and_finance_confirms_on_the_desk(client, make):
    tea = certified_product(make, price_fen=1_000, bulk_moq=10)
    batch(tea, quantity=100)
    canteen = make.user(Role.CANTEEN_BUYER)
    _sign_in(client, canteen)
    client.post("/cart/add", data={"product_id": tea.id, "quantity": 10})
    response = client.post("/checkout", data={"name": "王主任", "phone": "0743-8222222",
                                              "address": "吉首市世纪大道 1 号 州机关食堂", "payment_method": "bank_transfer",
                                              "purchase_order_no": "PO-7", "invoice_title": "州机关事务中心",
                                              "invoice_tax_id": "11433100MB1234567X"})
    assert response.status_code == 302
    order = db.session.scalars(sa.select(Order)).one()
    assert order.channel == "canteen" and "对公转账" in client.get(f"/orders/{order.id}").get_data(as_text=True)
    finance = make.user(Role.FINANCE)
    client.post("/logout")
    _sign_in(client, finance)
    desk = client.get("/finance/orders").get_data(as_text=True)
    assert order.number in desk
    client.post(f"/orders/{order.id}/confirm-transfer", data={"amount_yuan": "100.00", "reference": "B1", "next": "finance"})
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "paid"


def test_cooperative_order_book_lists_its_lines_and_ships(client, make):
    tea = certified_product(make, name="古丈毛尖")
    kiwi = certified_product(make, name="十八洞猕猴桃")
    batch(tea, quantity=5)
    batch(kiwi, quantity=5)
    order = place(client, make, make.user(), (tea, 1), (kiwi, 1))
    deliver(client, completed_event(order))
    _sign_in(client, make.user(Role.COOPERATIVE, cooperative=tea.cooperative))
    book = client.get("/cooperative/orders").get_data(as_text=True)
    assert order["number"] in book and "古丈毛尖" in book and "十八洞猕猴桃" not in book
    client.post(f"/orders/{order['id']}/ship", data={"carrier": "顺丰", "tracking_number": "SF1234567", "next": "book"})
    book = client.get("/cooperative/orders").get_data(as_text=True)
    assert "SF1234567" in book
    detail = client.get(f"/orders/{order['id']}").get_data(as_text=True)
    assert "十八洞猕猴桃" not in detail


def test_finance_refunds_from_the_order_page(client, make):
    tea = certified_product(make, price_fen=1_000)
    batch(tea, quantity=5)
    order = place(client, make, make.user(), (tea, 2))
    deliver(client, completed_event(order))
    _sign_in(client, make.user(Role.FINANCE))
    client.post(f"/orders/{order['id']}/refund", data={"amount_yuan": "5.5", "reason": "少发一盒"})
    db.session.expire_all()
    refreshed = db.session.get(Order, order["id"])
    assert refreshed.refunded_fen == 550 and refreshed.status == "partially_refunded"
    bad = client.post(f"/orders/{order['id']}/refund", data={"amount_yuan": "abc", "reason": "x"}, follow_redirects=True)
    assert bad.status_code == 422 and "退款金额请填写以元为单位的数字" in bad.get_data(as_text=True)


def test_order_pages_hide_other_peoples_orders(client, make):
    tea = certified_product(make)
    batch(tea, quantity=5)
    order = place(client, make, make.user(), (tea, 1))
    _sign_in(client, make.user())
    assert client.get(f"/orders/{order['id']}").status_code == 404


def test_nav_links_follow_roles(client, make):
    _sign_in(client, make.user(Role.COOPERATIVE))
    html = client.get("/").get_data(as_text=True)
    assert "合作社订单" in html and "收款与退款" not in html


def test_expired_certificate_products_leave_the_storefront(client, make):
    today = shanghai_today()
    old = certified_product(make, name="过期认定产品", valid_from=today - timedelta(days=800),
                            valid_until=today - timedelta(days=1))
    batch(old, quantity=5)
    assert "过期认定产品" not in client.get("/shop").get_data(as_text=True)
