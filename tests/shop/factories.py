"""Builders for orders written directly as rows (no workflow), for tests of sales figures.

Shop's own behaviour tests go through ``shop.services``; these let reports and scan-page
tests start from a paid order in one line.
"""
from datetime import timedelta

from core.extensions import db
from core.timeutil import utcnow
from shop.models import Order, OrderAllocation, OrderFulfilment, OrderLine


def paid_order(buyer, parts, *, paid_at=None, channel="online", refunded=None, status="paid") -> Order:
    """An order of ``buyer`` paid at ``paid_at`` with one line per batch in ``parts`` [(batch, qty)].

    ``refunded`` maps a batch to refunded fen on its allocation (order status follows it).
    ``paid_at=None`` with ``status="pending_payment"`` builds an unpaid order.
    """
    now = utcnow()
    refunded = refunded or {}
    order = Order(number=f"T{now.timestamp():.6f}", buyer_id=buyer.id, channel=channel, status=status,
                  payment_method="stripe", payment_provider="sandbox", total_fen=1,
                  shipping_name="收货人", shipping_phone="13800000000", shipping_address="吉首市人民路1号",
                  reserved_until=now + timedelta(minutes=30), paid_at=paid_at)
    db.session.add(order)
    db.session.flush()
    order.number = f"TEST-{order.id:06d}"
    total = refunded_total = 0
    lines = {}
    for batch, quantity in parts:
        product = batch.product
        price = product.price_fen
        line = lines.get(product.id)
        if line is None:
            line = lines[product.id] = OrderLine(order=order, product_id=product.id,
                                                 cooperative_id=product.cooperative_id, product_name=product.name,
                                                 unit=product.unit, unit_price_fen=price, quantity=0,
                                                 line_total_fen=0, refunded_fen=0)
        line.quantity += quantity
        line.line_total_fen += price * quantity
        line.refunded_fen += refunded.get(batch, 0)
        db.session.add(OrderAllocation(order=order, line=line, batch_id=batch.id, village_id=batch.village_id,
                                       product_id=product.id, channel=channel, quantity=quantity,
                                       amount_fen=price * quantity, refunded_fen=refunded.get(batch, 0),
                                       paid_at=paid_at))
        batch.available_quantity -= quantity
        total += price * quantity
        refunded_total += refunded.get(batch, 0)
        if not any(f.cooperative_id == product.cooperative_id for f in order.fulfilments):
            order.fulfilments.append(OrderFulfilment(cooperative_id=product.cooperative_id))
    order.total_fen = total
    order.refunded_fen = refunded_total
    db.session.commit()
    return order
