"""Filling the cart in bulk (issue #12): 再来一单, and a pasted or uploaded list of product ids or
GTINs with quantities; only sellable products go in, every other line is reported."""
import io
from datetime import timedelta

from core.extensions import db
from core.identifiers import gtin14, gtin_check_digit
from core.models import Role
from core.timeutil import shanghai_today
from shop.models import CartItem
from tests.certification.factories import certified_product, product
from tests.shop.helpers import place
from tests.traceability.factories import batch

GTIN13 = "690123450001" + str(gtin_check_digit("690123450001"))


def _cart(user) -> dict[int, int]:
    db.session.expire_all()
    return {item.product_id: item.quantity for item in db.session.query(CartItem).filter_by(user_id=user.id)}


def _sign_in(client, user):
    assert client.post("/login", data={"email": user.email, "password": "password123"}).status_code == 302


def test_reorder_puts_a_previous_orders_sellable_lines_back(client, make):
    tea, rice = certified_product(make), certified_product(make)
    batch(tea, quantity=50), batch(rice, quantity=50)
    buyer = make.user(Role.CANTEEN_BUYER)
    order = place(client, make, buyer, (tea, 10), (rice, 20), payment_method="bank_transfer")
    rice.certificate.valid_until = shanghai_today() - timedelta(days=1)  # its certificate has lapsed since
    db.session.commit()
    _sign_in(client, buyer)
    response = client.post(f"/orders/{order['id']}/reorder", follow_redirects=True)
    assert _cart(buyer) == {tea.id: 10}
    html = response.get_data(as_text=True)
    assert "已加入购物车：1 种产品" in html and "当前不可销售" in html
    # Not someone else's order.
    _sign_in(client, make.user())
    assert client.post(f"/orders/{order['id']}/reorder").status_code == 404


def test_a_pasted_list_by_id_or_gtin_fills_the_cart_and_reports_the_rest(client, make):
    tea = certified_product(make)
    honey = certified_product(make, gtin=gtin14(GTIN13))  # stored as GTIN-14, as the API does
    draft = product(make)
    buyer = make.user(Role.CANTEEN_BUYER)
    _sign_in(client, buyer)
    text = (f"产品编号,数量\n{tea.id},20\n{GTIN13},5\n{draft.id},3\n99999,1\n{tea.id},abc\n"
            f"{tea.id}\n\n{tea.id}, 5\n")
    html = client.post("/cart/import", data={"lines": text}, follow_redirects=True).get_data(as_text=True)
    assert _cart(buyer) == {tea.id: 25, honey.id: 5}
    assert "第 4 行：产品不存在或当前不可销售" in html  # the draft: not named, not told apart from unknown
    assert "第 5 行：产品不存在或当前不可销售" in html
    assert "第 6 行：数量须为" in html and "第 7 行：须为" in html


def test_an_uploaded_csv_in_gbk_is_read(client, make):
    tea = certified_product(make)
    buyer = make.user(Role.CANTEEN_BUYER)
    _sign_in(client, buyer)
    data = {"file": (io.BytesIO(f"产品,数量\r\n{tea.id},7\r\n".encode("gb18030")), "清单.csv")}
    client.post("/cart/import", data=data, content_type="multipart/form-data")
    assert _cart(buyer) == {tea.id: 7}


def test_an_empty_or_huge_list_changes_nothing(client, make):
    tea = certified_product(make)
    buyer = make.user()
    _sign_in(client, buyer)
    for text in ("", "   \n", "\n".join(f"{tea.id},1" for _ in range(500))):
        response = client.post("/cart/import", data={"lines": text}, follow_redirects=True)
        assert response.status_code == 200
    assert _cart(buyer) == {}
    assert client.post("/logout").status_code in (200, 302)
    assert client.post("/cart/import", data={"lines": f"{tea.id},1"}).status_code == 302  # to sign in
