"""Filling a signed-in buyer's cart in bulk: a previous order again (再来一单), or a pasted or
uploaded list of lines (a canteen's weekly purchase list: product id or GTIN, quantity).

Only products that may be sold now go in; everything else is reported line by line, so a buyer
sees at once what did not carry over. Prices are never taken from the list: the cart and the
order price every line on the server, as always.
"""
import csv
import io
from dataclasses import dataclass, field

import sqlalchemy as sa

from certification.gate import is_sellable
from certification.models import Product
from core.errors import NotFound, ValidationFailed
from core.extensions import db
from core.identifiers import gtin14, is_valid_gtin, whole_number
from core.models import User
from shop.models import Order
from shop.services import CART_MAX_QUANTITY, set_cart_quantity

#: A pasted list longer than this is not a purchase list.
MAX_LINES = 200
MAX_TEXT = 20_000


@dataclass
class CartFill:
    """What a bulk fill did: products added (name, quantity) and the lines left out, with why."""

    added: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def reorder(buyer: User, order_id: int) -> CartFill:
    """Put the lines of one of the buyer's orders back in the cart (quantities added).

    :raise NotFound: no such order of this buyer.
    """
    order = db.session.get(Order, order_id)
    if order is None or order.buyer_id != buyer.id:
        raise NotFound("订单不存在")
    wanted = [(line.product_id, line.quantity, f"“{line.product_name}”") for line in order.lines]
    return _fill(buyer, wanted, CartFill())


def import_lines(buyer: User, text: str) -> CartFill:
    """Add a pasted or uploaded list to the cart: one line per product, ``product id or GTIN,
    quantity`` (comma, tab or spaces between; a header row and blank lines are skipped).

    :raise ValidationFailed: the list is empty, too long, or no line could be read at all.
    """
    if not text or not text.strip():
        raise ValidationFailed("请粘贴或上传采购清单", code="empty_list", fields={"lines": ["不能为空"]})
    if len(text) > MAX_TEXT or len(text.splitlines()) > MAX_LINES + 1:
        raise ValidationFailed(f"清单最多 {MAX_LINES} 行", code="list_too_long", fields={"lines": [f"最多 {MAX_LINES} 行"]})
    fill = CartFill()
    parsed: list[tuple[str, int, int]] = []  # (code, quantity, line number)
    for number, cells in enumerate(_rows(text), start=1):
        cells = [cell.strip() for cell in cells if cell.strip()]
        if not cells:
            continue
        if len(cells) < 2:
            fill.skipped.append(f"第 {number} 行：须为“产品编号或 GTIN, 数量”")
            continue
        code, raw_quantity = cells[0], cells[1]
        quantity = whole_number(raw_quantity, CART_MAX_QUANTITY)
        if quantity is None or quantity == 0:
            if number == 1 and whole_number(code) is None and not is_valid_gtin(code):
                continue  # a header row such as “产品编号,数量”
            fill.skipped.append(f"第 {number} 行：数量须为 1 到 {CART_MAX_QUANTITY} 的整数")
            continue
        parsed.append((code, quantity, number))
    if not parsed and not fill.skipped:
        raise ValidationFailed("清单中没有可读的行", code="empty_list", fields={"lines": ["没有可读的行"]})
    by_gtin = _products_by_gtin([gtin14(code) for code, _, _ in parsed if len(code) >= 8 and is_valid_gtin(code)])
    wanted = []
    for code, quantity, number in parsed:
        if len(code) >= 8 and is_valid_gtin(code):
            product_id = by_gtin.get(gtin14(code))
        else:
            product_id = whole_number(code)
        if product_id is None:
            fill.skipped.append(f"第 {number} 行：找不到产品“{code[:30]}”")
            continue
        wanted.append((product_id, quantity, f"第 {number} 行"))
    return _fill(buyer, wanted, fill)


def _rows(text: str):
    """CSV when the text has commas or tabs, else whitespace-separated."""
    sample = text[:2000]
    if "," in sample or "\t" in sample or "，" in sample:
        yield from csv.reader(io.StringIO(text.replace("，", ",")), delimiter="\t" if "\t" in sample else ",")
    else:
        for line in text.splitlines():
            yield line.split()


def _products_by_gtin(gtins: list[str]) -> dict[str, int]:
    if not gtins:
        return {}
    return dict(db.session.execute(sa.select(Product.gtin, Product.id).where(Product.gtin.in_(gtins))).all())


def _fill(buyer: User, wanted: list[tuple[int, int, str]], fill: CartFill) -> CartFill:
    """Add each sellable product; note the rest (unknown and not sellable read the same to a buyer)."""
    products = {p.id: p for p in db.session.scalars(
        sa.select(Product).where(Product.id.in_([pid for pid, _, _ in wanted])))}
    for product_id, quantity, where in wanted:
        product = products.get(product_id)
        if product is None or not is_sellable(product):
            fill.skipped.append(f"{where}：产品不存在或当前不可销售")
            continue
        if buyer.cooperative_id is not None and product.cooperative_id == buyer.cooperative_id:
            fill.skipped.append(f"{where}：本社产品不能购买")
            continue
        set_cart_quantity(buyer, product_id, quantity, add=True)
        fill.added.append((product.name, quantity))
    return fill
