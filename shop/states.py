"""The one order state machine: statuses, allowed transitions, and the audited move between them.

Every service that changes ``Order.status`` goes through ``transition`` so the rules live in
one place and every change lands in the audit chain (subject_type ``"order"``).
"""
import enum

from core.audit import record_event
from core.errors import Conflict


class OrderStatus(str, enum.Enum):
    """Order statuses fixed by the contract."""

    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"

    @property
    def label(self) -> str:
        """Chinese name shown to people."""
        return STATUS_LABELS[self]


STATUS_LABELS = {
    OrderStatus.PENDING_PAYMENT: "待付款",
    OrderStatus.PAID: "已付款",
    OrderStatus.SHIPPED: "已发货",
    OrderStatus.COMPLETED: "已完成",
    OrderStatus.CANCELLED: "已取消",
    OrderStatus.REFUNDED: "已退款",
    OrderStatus.PARTIALLY_REFUNDED: "部分退款",
}

ORDER_STATUS_VALUES = tuple(status.value for status in OrderStatus)

S = OrderStatus
#: from → the statuses it may move to. A partial refund keeps the order in
#: ``partially_refunded`` even when its parts ship later (the refund is the fact finance
#: needs to see); shipping progress lives in the per-cooperative fulfilment rows.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_PAYMENT: frozenset({S.PAID, S.CANCELLED}),
    S.PAID: frozenset({S.SHIPPED, S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.SHIPPED: frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.COMPLETED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.CANCELLED: frozenset(),
    S.REFUNDED: frozenset(),
}

#: Statuses whose order has been paid (sales count them, net of refunds).
PAID_STATUSES = frozenset({S.PAID, S.SHIPPED, S.COMPLETED, S.PARTIALLY_REFUNDED, S.REFUNDED})
#: Statuses in which money may still be refunded.
REFUNDABLE_STATUSES = frozenset({S.PAID, S.SHIPPED, S.COMPLETED, S.PARTIALLY_REFUNDED})
#: Statuses in which cooperatives may still ship their parts.
SHIPPABLE_STATUSES = frozenset({S.PAID, S.SHIPPED, S.PARTIALLY_REFUNDED})


def can_transition(current: str, target: OrderStatus) -> bool:
    """True when an order in ``current`` may move to ``target``."""
    return target in TRANSITIONS[OrderStatus(current)]


def transition(order, target: OrderStatus, *, actor=None, action: str, comment: str = "",
               data: dict | None = None) -> None:
    """Move ``order`` to ``target`` and audit it, inside the caller's transaction.

    :raise Conflict: the move is not allowed from the order's current status (409).
    """
    current = OrderStatus(order.status)
    if not can_transition(current.value, target):
        raise Conflict(f"订单当前状态为“{current.label}”，不能{_ACTION_LABELS.get(action, '执行此操作')}",
                       code="invalid_order_status")
    order.status = target.value
    record_event(subject_type="order", subject_id=order.id, action=action, actor=actor,
                 from_state=current.value, to_state=target.value, comment=comment, data=data)


_ACTION_LABELS = {
    "paid": "标记为已付款",
    "cancelled": "取消",
    "expired": "释放库存",
    "shipped": "标记为已发货",
    "completed": "确认收货",
    "refunded": "退款",
}
