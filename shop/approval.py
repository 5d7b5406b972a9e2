"""内部审批: a budget unit's orders above its approval threshold wait for the unit's approver.

A canteen buyer's order whose total is above ``BudgetUnit.approval_threshold_fen`` is placed
with its stock reserved and ``approval_status`` ``pending``; finance cannot confirm its transfer
and no payment page is opened until a canteen buyer of the same unit flagged ``is_approver``
approves it. Approving restarts the reservation clock (the approver may take a day); rejecting
cancels the order and puts the stock back. Nobody approves their own order: segregation of
duties is the point of the rule. Both decisions are audited on the order.
"""
from flask import current_app

from core.audit import record_event
from core.db import transaction
from core.errors import Conflict, Forbidden
from core.models import Role, User
from core.signals import notify_products_changed
from core.timeutil import utcnow
from shop import payments, services
from shop.models import Order
from shop.states import OrderStatus


def can_decide(user: User, order: Order) -> bool:
    """True when ``user`` may approve or reject ``order`` now."""
    return (order.approval_status == "pending" and order.status == OrderStatus.PENDING_PAYMENT.value
            and services.is_unit_approver(user, order) and order.buyer_id != user.id)


def decide(user: User, order_id: int, data: dict) -> Order:
    """Approve or reject an order waiting for internal approval.

    :param data: ``{"decision": "approve"|"reject", "comment": str}`` (comment required to reject).
    :raise NotFound: the caller cannot see the order.
    :raise Forbidden: not an approver of the order's unit, or the caller's own order.
    :raise Conflict: the order is not waiting for approval (decided, cancelled or never needed it).
    """
    order, _ = services.get_order(user, order_id)
    if not services.is_unit_approver(user, order):
        raise Forbidden("只有本单位的审批人可以审批订单", code="not_approver")
    if order.buyer_id == user.id:
        raise Forbidden("不能审批自己提交的订单，请由本单位其他审批人审批", code="own_order")
    comment = data.get("comment", "").strip()
    released: list[int] = []
    with transaction():
        order = services.lock_order(order_id)
        if order.approval_status != "pending" or order.status != OrderStatus.PENDING_PAYMENT.value:
            raise Conflict("该订单不在待审批状态", code="not_awaiting_approval")
        now = utcnow()
        order.approval_by_id = user.id
        order.approval_at = now
        order.approval_comment = comment or None
        if data["decision"] == "approve":
            order.approval_status = "approved"
            # A full reservation period again from the approval: the approver may take a day.
            order.reserved_until = max(order.reserved_until, services.reservation_deadline(order.payment_method, now))
            if order.payment_provider == "sandbox":
                order.checkout_session_id, order.checkout_url = payments.create_checkout_session(
                    order, expires_at=order.reserved_until, base_url=current_app.config["PUBLIC_BASE_URL"])
            if order.payment_method == "bank_transfer":
                services.notify_transfer_waiting(order)
            record_event(subject_type="order", subject_id=order.id, action="approval_approved", actor=user,
                         from_state=order.status, to_state=order.status, comment=comment,
                         data={"total_fen": order.total_fen, "reserved_until": order.reserved_until.isoformat()})
        else:
            order.approval_status = "rejected"
            released = services.release_locked(order, actor=user, action="approval_rejected",
                                               reason=f"内部审批未通过：{comment}")
    notify_products_changed(*released)
    if order.approval_status == "approved" and order.payment_provider == "stripe":
        services.attach_stripe_checkout(order)  # needs the network: after commit
    return order


def waiting_for(user: User, limit: int = 50) -> list[Order]:
    """Orders of the approver's unit waiting for a decision, oldest first (its to-do list)."""
    if not (user.is_approver and user.has_role(Role.CANTEEN_BUYER)):
        return []
    orders, _ = services.list_orders(user, approval="pending", status=OrderStatus.PENDING_PAYMENT.value,
                                     limit=limit)
    return sorted((o for o in orders if o.buyer_id != user.id), key=lambda o: o.id)
