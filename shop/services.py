"""Shop use cases: place, pay, cancel, expire, ship, receive and refund orders; carts.

The only module of the shop that commits. Every status change goes through
``shop.states.transition`` (audited); side effects (stock signals, Stripe calls that need no
lock) happen after commit.

Lock order, so concurrent use cases never deadlock on PostgreSQL: an order row first (when
the use case has one), then batch rows in id order. (``record_event`` takes no lock: events are
sealed into the audit chain after commit, see ``core.audit``.)
"""
import functools
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import orm
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from certification.gate import is_sellable
from certification.models import BulkTier, Certification, Product
from core.audit import insert_event, record_event
from core.db import transaction
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.identifiers import whole_number
from core.models import Role, User
from core.money import format_yuan
from core.notifications import active_users, notify
from core.signals import notify_products_changed
from core.timeutil import shanghai_today, to_shanghai, utcnow
from shop import payments, stock
from shop.models import (CartItem, Order, OrderAllocation, OrderFulfilment, OrderLine, PaymentEvent, Refund,
                         RefundAllocation, RefundIntent, RefundRequest)
from shop.settings import setting
from shop.states import (PAID_STATUSES, REFUNDABLE_STATUSES, SHIPPABLE_STATUSES, OrderStatus, can_transition,
                         transition)

log = logging.getLogger(__name__)

CART_MAX_QUANTITY = 10_000


def lock_order(order_id: int) -> Order:
    """Load an order with its row locked for this transaction, fresh from the database.

    :raise NotFound: no such order.
    """
    stock.take_write_lock()
    query = sa.select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
    if stock.dialect() == "postgresql":
        query = query.with_for_update(of=Order)
    order = db.session.scalar(query)
    if order is None:
        raise NotFound("订单不存在")
    return order


# ---------------------------------------------------------------- who sees what

def order_scope(user: User | None, order: Order) -> int | None | bool:
    """What ``user`` may see of ``order``: None (all of it), a cooperative id (its part) or False."""
    if user is None:
        return False
    if order.buyer_id == user.id or user.has_role(Role.FINANCE, Role.ADMIN) or is_unit_approver(user, order):
        return None
    if user.has_role(Role.COOPERATIVE) and user.cooperative_id is not None \
            and any(line.cooperative_id == user.cooperative_id for line in order.lines):
        return user.cooperative_id
    return False


def is_unit_approver(user: User, order: Order) -> bool:
    """True when ``user`` approves orders of the budget unit ``order`` was placed for."""
    return (user.is_approver and user.has_role(Role.CANTEEN_BUYER) and order.budget_unit_id is not None
            and user.budget_unit_id == order.budget_unit_id)


def get_order(user: User, order_id: int) -> tuple[Order, int | None]:
    """Return an order and the caller's scope of it; releases it first if its reservation lapsed.

    :raise NotFound: absent, or not visible to this caller (404 by contract).
    """
    order = db.session.get(Order, order_id)
    if order is None or order_scope(user, order) is False:
        raise NotFound("订单不存在")
    if order.status == OrderStatus.PENDING_PAYMENT.value and _is_stale(order, utcnow()):
        _release_if_stale(order.id)
        order = db.session.get(Order, order_id)
    return order, order_scope(user, order)


def list_orders(user: User, *, status: str | None = None, own_only: bool = False, offset: int = 0,
                limit: int = 50, approval: str | None = None) -> tuple[list[Order], int]:
    """Orders the caller may see, newest first: own, a cooperative's, or all (finance, admin);
    an approver also sees every order of its budget unit.

    ``own_only`` restricts anyone to the orders they placed themselves ("my orders");
    ``approval`` filters by internal approval state (``pending`` is an approver's to-do list).
    """
    query = sa.select(Order)
    if approval:
        query = query.where(Order.approval_status == approval)
    if own_only:
        query = query.where(Order.buyer_id == user.id)
    elif user.has_role(Role.FINANCE, Role.ADMIN):
        pass
    elif user.is_approver and user.has_role(Role.CANTEEN_BUYER) and user.budget_unit_id is not None:
        query = query.where(sa.or_(Order.buyer_id == user.id, Order.budget_unit_id == user.budget_unit_id))
    elif user.has_role(Role.COOPERATIVE) and user.cooperative_id is not None:
        query = query.where(Order.id.in_(
            sa.select(OrderLine.order_id).where(OrderLine.cooperative_id == user.cooperative_id)))
    else:
        query = query.where(Order.buyer_id == user.id)
    if status:
        query = query.where(Order.status == status)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    items = list(db.session.scalars(query.order_by(Order.id.desc()).offset(offset).limit(limit)))
    return items, int(total or 0)


# ---------------------------------------------------------------- prices

def unit_price_fen(product: Product, quantity: int, canteen: bool) -> int:
    """The server's unit price: list price, or for canteens the best tier the quantity reaches.

    Never above the list price, even for a tier saved before tiers had to be below it."""
    price = product.price_fen
    if canteen:
        for tier in product.bulk_tiers:  # ordered by min_qty
            if quantity >= tier.min_qty:
                price = min(tier.price_fen, product.price_fen)
    return price


def reservation_deadline(payment_method: str, now: datetime) -> datetime:
    """When an unpaid order's stock goes back on sale."""
    if payment_method == "bank_transfer":
        return now + timedelta(hours=setting("BANK_TRANSFER_RESERVATION_HOURS"))
    return now + timedelta(minutes=setting("ORDER_RESERVATION_MINUTES"))


def _fingerprint(data: dict) -> str:
    """A stable hash of a loaded order request, to recognise an Idempotency-Key replay."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _order_number(order_id: int, created_at: datetime) -> str:
    """Human-readable, unique: XB + Shanghai date + the order id (XB20261129-000123)."""
    return f"XB{to_shanghai(created_at):%Y%m%d}-{order_id:06d}"


# ---------------------------------------------------------------- placing an order

def public_name(product: Product) -> str:
    """How an error may name a product to any buyer: by name once it has been certified (it was
    in the public catalogue), otherwise by number only (a draft's name is its cooperative's)."""
    return product.name if product.certificate_id is not None else f"产品 #{product.id}"


@dataclass(frozen=True)
class OrderedProduct:
    """What placing an order reads of a product. Read with one Core query on every order rather
    than as ORM ``Product`` objects (loading those cost a tenth of a placement's Python time);
    ``is_sellable``, ``unit_price_fen`` and ``public_name`` read the same attribute names."""

    id: int
    cooperative_id: int
    name: str
    unit: str
    price_fen: int
    bulk_moq: int | None
    certificate_id: int | None
    certificate: Any  # a row with status, valid_from, valid_until; None without a certificate
    bulk_tiers: tuple = ()  # (min_qty, price_fen) rows by min_qty; read for canteens only


_products, _certificates, _tiers = Product.__table__, Certification.__table__, BulkTier.__table__
_ORDERED_PRODUCTS = (
    sa.select(_products.c.id, _products.c.cooperative_id, _products.c.name, _products.c.unit,
              _products.c.price_fen, _products.c.bulk_moq, _products.c.certificate_id,
              _certificates.c.status, _certificates.c.valid_from, _certificates.c.valid_until)
    .select_from(_products.outerjoin(_certificates, _certificates.c.id == _products.c.certificate_id))
    .where(_products.c.id.in_(sa.bindparam("ids", expanding=True)))
)
_ORDERED_TIERS = (sa.select(_tiers.c.product_id, _tiers.c.min_qty, _tiers.c.price_fen)
                  .where(_tiers.c.product_id.in_(sa.bindparam("ids", expanding=True)))
                  .order_by(_tiers.c.product_id, _tiers.c.min_qty))


def ordered_products(product_ids: list[int], *, with_tiers: bool) -> dict[int, OrderedProduct]:
    """The products an order names that exist, by id; tier prices only ``with_tiers`` (canteens)."""
    connection = db.session.connection()
    tiers: dict[int, list] = {}
    if with_tiers:
        for tier in connection.execute(_ORDERED_TIERS, {"ids": product_ids}):
            tiers.setdefault(tier.product_id, []).append(tier)
    return {row.id: OrderedProduct(
        id=row.id, cooperative_id=row.cooperative_id, name=row.name, unit=row.unit, price_fen=row.price_fen,
        bulk_moq=row.bulk_moq, certificate_id=row.certificate_id,
        certificate=row if row.certificate_id is not None else None, bulk_tiers=tuple(tiers.get(row.id, ())))
        for row in connection.execute(_ORDERED_PRODUCTS, {"ids": product_ids})}


def place_order(buyer: User, data: dict, idempotency_key: str | None = None) -> tuple[Order, bool]:
    """Validate, price, reserve stock per batch and create an order awaiting payment.

    Duplicate product lines are merged (quantities added) before pricing and checks.
    Returns (order, created): ``created`` is False when an Idempotency-Key replay returned the
    earlier order.

    :raise Forbidden: bank transfer by a non-canteen buyer; a cooperative buying its own products.
    :raise ValidationFailed: unknown product, canteen quantity below the product's bulk MOQ,
        or an Idempotency-Key reused with another body.
    :raise Conflict: a product not sellable now (409 ``product_not_sellable``), or not enough
        stock (409 ``insufficient_stock``, nothing reserved).
    :raise PaymentsUnavailable: online payment with neither Stripe nor the simulated checkout on (503).
    """
    fingerprint = _fingerprint(data)
    if idempotency_key:
        existing = _order_by_key(buyer, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    canteen = buyer.has_role(Role.CANTEEN_BUYER)
    if data["payment_method"] == "bank_transfer" and not canteen:
        raise Forbidden("对公转账仅限机关食堂采购员使用", code="bank_transfer_not_allowed")
    if canteen and buyer.budget_unit_id is None:
        raise Forbidden("该采购员账号未关联预算单位", code="no_budget_unit")
    if data["payment_method"] == "stripe":
        payments.ensure_online_payments()  # before any stock is reserved

    wanted: dict[int, int] = {}
    first_index: dict[int, int] = {}
    for index, line in enumerate(data["lines"]):
        wanted[line["product_id"]] = wanted.get(line["product_id"], 0) + line["quantity"]
        first_index.setdefault(line["product_id"], index)
    products = ordered_products(list(wanted), with_tiers=canteen)

    def line_errors(pids, message) -> dict:
        """Field errors for these products, keyed by the line index they first appeared at."""
        return {"lines": {str(first_index[pid]): {"product_id": [message(pid)]} for pid in pids}}

    unknown = [pid for pid in wanted if pid not in products]
    if unknown:
        raise ValidationFailed("订单中有不存在的产品", code="unknown_product",
                               fields=line_errors(unknown, lambda pid: "产品不存在"))
    too_many = [pid for pid, qty in wanted.items() if qty > CART_MAX_QUANTITY * 10]
    if too_many:
        raise ValidationFailed(fields={"lines": {str(first_index[p]): {"quantity": ["数量过大"]} for p in too_many}})
    today = shanghai_today()
    unsellable = [pid for pid in wanted if not is_sellable(products[pid], today)]
    if unsellable:
        raise Conflict("订单中有当前不可销售的产品（未认定、认定已过期或已撤销）", code="product_not_sellable",
                       fields=line_errors(unsellable, lambda pid: f"“{public_name(products[pid])}”当前不可销售"))
    if buyer.cooperative_id is not None and any(p.cooperative_id == buyer.cooperative_id for p in products.values()):
        raise Forbidden("合作社账号不能购买本社产品（会虚增本村销售额）", code="own_products")
    if canteen:
        below = {pid: products[pid].bulk_moq for pid, qty in wanted.items()
                 if products[pid].bulk_moq and qty < products[pid].bulk_moq}
        if below:
            raise ValidationFailed("低于机关食堂起订量", code="below_moq", fields={"lines": {
                str(first_index[pid]): {"quantity": [f"起订量为 {moq}{products[pid].unit}"]} for pid, moq in below.items()}})
    prices = {pid: unit_price_fen(products[pid], qty, canteen) for pid, qty in wanted.items()}
    total = sum(prices[pid] * qty for pid, qty in wanted.items())
    approval = "pending" if canteen and needs_approval(buyer.budget_unit, total) else None

    for attempt in (1, 2):
        try:
            order, sold_out = _reserve(buyer, data, wanted, products, prices, canteen, idempotency_key,
                                       fingerprint, today, approval)
        except StockShortage as shortage:
            # Stock held by lapsed reservations is stock: release them, then try once more.
            if attempt == 1 and expire_stale_reservations(limit=100):
                continue
            raise Conflict("库存不足，未预留任何商品", code="insufficient_stock", fields={"lines": {
                str(first_index[pid]): {"quantity": [f"“{products[pid].name}”当前可售 {available}"]}
                for pid, available in shortage.available.items()}}) from None
        except IntegrityError:
            # Two requests with one Idempotency-Key raced; the other one won and holds the stock.
            existing = _order_by_key(buyer, idempotency_key, fingerprint) if idempotency_key else None
            if existing is None:
                raise
            return existing, False
        break
    # Listings read live stock; only a product running out changes what search indexes
    # (in stock or not), so most orders announce nothing and cost the indexer nothing.
    notify_products_changed(*sold_out)
    if order.payment_provider == "stripe" and order.approval_status is None:
        attach_stripe_checkout(order)
    return order, True


def needs_approval(unit, total_fen: int) -> bool:
    """True when a canteen order of ``total_fen`` must wait for its unit's approver (内部审批):
    the unit set a threshold and the order is above it."""
    return unit is not None and unit.approval_threshold_fen is not None and total_fen > unit.approval_threshold_fen


class StockShortage(Exception):
    """Not enough sellable units; ``available`` maps each short product to what there is."""

    def __init__(self, available: dict[int, int]):
        """Remember what each short product has."""
        super().__init__(available)
        self.available = available


def _reserve(buyer, data, wanted, products, prices, canteen, idempotency_key, fingerprint,
             today, approval) -> tuple[Order, list[int]]:
    """One transaction: write the order, then lock, allocate and decrement the batches, audit, commit.

    The order's own rows are written before the batch rows are locked, so the locks on shared
    (hot) batch rows are held only for the allocation, the audit append and the commit.

    Every row here is written with Core statements on the session's connection, not through the
    ORM's unit of work: placement is the busiest write of the shop and its cost was mostly ORM
    flush bookkeeping. The statements are built once (module constants), not per order: building
    one cost about as much Python time as executing it. The ORM objects are built alongside and become the session's persistent
    objects after the commit (``_adopt``), so callers get the usual ``Order`` without reloading it.
    The reports summary needs no notice: a new allocation is unpaid and moves no sale
    (``shop.reports.summary`` ignores it too).

    :return: the order and the products it sold out (no sellable unit left).

    :raise StockShortage: not enough units (everything rolled back, nothing reserved).
    """
    with transaction():
        stock.take_write_lock()
        connection = db.session.connection()
        order, lines, fulfilments = _create_order_rows(connection, buyer, data, wanted, products, prices,
                                                       utcnow(), canteen, idempotency_key, fingerprint, approval)
        # Bank-transfer orders only. Before the batch row locks (PostgreSQL holds them until the
        # commit); on SQLite the write lock taken above is held from here on anyway.
        notify_order_waiting(order, buyer)
        candidates = stock.lock_candidate_batches(wanted, today)
        takes, short = stock.plan_allocation(wanted, candidates)
        if short:
            raise StockShortage(short)
        stock.apply_takes(takes)
        sold_out = [pid for pid, quantity in wanted.items()
                    if sum(row["available_quantity"] for row in candidates.get(pid, [])) == quantity]
        line_ids = {line.product_id: line.id for line in lines}
        allocations = _insert_rows(connection, OrderAllocation, [
            {"order_id": order.id, "line_id": line_ids[pid], "batch_id": take.batch_id,
             "village_id": take.village_id, "product_id": pid, "channel": order.channel,
             "quantity": take.quantity, "amount_fen": prices[pid] * take.quantity, "refunded_fen": 0}
            for pid, plan in takes.items() for take in plan])
        insert_event(subject_type="order", subject_id=order.id, action="placed", actor=buyer,
                     to_state=OrderStatus.PENDING_PAYMENT.value,
                     data={"number": order.number, "total_fen": order.total_fen, "channel": order.channel,
                           "approval": order.approval_status,
                           "allocations": [[t.batch_id, t.quantity] for plan in takes.values() for t in plan]})
    _adopt(order, lines, fulfilments, allocations)
    return order, sold_out


def _full_row(model, values: dict) -> dict:
    """Every column of a new ``model`` row as the ORM would have inserted it: the given values,
    else the column's scalar default, else NULL (the primary key only when given)."""
    row = {}
    for key, default in _column_defaults(model):
        if key in values:
            row[key] = values[key]
        elif default is _NOT_CONSTANT:
            raise TypeError(f"{model.__name__}.{key}: give a value (its default is not a constant)")
        elif default is not _PRIMARY_KEY:
            row[key] = default
    return row


_PRIMARY_KEY, _NOT_CONSTANT = object(), object()


@functools.cache
def _column_defaults(model) -> tuple[tuple[str, Any], ...]:
    """(column key, value when not given) for every column of ``model``, read from the table once;
    the primary key and defaults that are not constants are marked."""
    defaults = []
    for column in model.__table__.columns:
        if column.primary_key:
            defaults.append((column.key, _PRIMARY_KEY))
        elif column.default is None:
            defaults.append((column.key, None))
        else:
            defaults.append((column.key, column.default.arg if column.default.is_scalar else _NOT_CONSTANT))
    return tuple(defaults)


@functools.cache
def _insert_returning_ids(table: sa.Table, many: bool) -> sa.Insert:
    """``INSERT … RETURNING id`` for ``table`` (built once); for ``many`` rows, the ids come back
    in the order of the rows."""
    return table.insert().returning(table.c.id, sort_by_parameter_order=many)


def _insert_rows(connection, model, rows: list[dict]) -> list:
    """INSERT ``rows`` of ``model`` in one statement; return objects carrying the new ids."""
    if not rows:
        return []
    rows = [_full_row(model, row) for row in rows]
    if len(rows) == 1:  # most orders: one product, one cooperative; a single row is the cheaper call
        ids = [connection.execute(_insert_returning_ids(model.__table__, False), rows[0]).scalar_one()]
    else:
        ids = connection.execute(_insert_returning_ids(model.__table__, True), rows).scalars().all()
    return [_as_loaded(model, {"id": id_, **row}) for id_, row in zip(ids, rows)]


def _as_loaded(model, values: dict):
    """A ``model`` object holding ``values`` as if loaded from its row (not yet in a session).

    Placement writes its rows with Core; building the objects through the mapped constructor
    (one instrumented attribute event per column) cost more than the INSERTs. The values go into
    the instance state's dict directly, which is what loading a row does.
    """
    instance = orm.class_mapper(model).class_manager.new_instance()
    instance.__dict__.update(values)
    return instance


_NEXT_ORDER_ID = {
    # PostgreSQL: the id the next order will have; its sequence is the one the column was created with.
    "postgresql": sa.select(sa.func.nextval(sa.func.pg_get_serial_sequence("orders", "id"))),
    # SQLite: the caller holds the database write lock (stock.take_write_lock), and an INTEGER
    # PRIMARY KEY without AUTOINCREMENT would itself get max(id) + 1.
    "sqlite": sa.select(sa.func.coalesce(sa.func.max(Order.__table__.c.id), 0) + 1),
}
_INSERT_ORDER = sa.insert(Order.__table__)


def _next_order_id(connection) -> int:
    """The id the next order will have, taken before its INSERT so its number goes in with it."""
    return connection.execute(_NEXT_ORDER_ID[connection.dialect.name]).scalar_one()


def _adopt(order: Order, lines: list[OrderLine], fulfilments: list[OrderFulfilment],
           allocations: list[OrderAllocation]) -> None:
    """Make the committed order's objects persistent in the session, relationships filled in, as
    if they had been loaded (their rows were written with Core, see ``_reserve``)."""
    for obj in (order, *lines, *fulfilments, *allocations):
        orm.make_transient_to_detached(obj)
    set_committed_value(order, "lines", lines)
    set_committed_value(order, "fulfilments", fulfilments)
    set_committed_value(order, "allocations", allocations)
    set_committed_value(order, "refunds", [])
    for line in lines:
        set_committed_value(line, "order", order)
        set_committed_value(line, "allocations", [a for a in allocations if a.line_id == line.id])
    by_line = {line.id: line for line in lines}
    for allocation in allocations:
        set_committed_value(allocation, "order", order)
        set_committed_value(allocation, "line", by_line[allocation.line_id])
    for fulfilment in fulfilments:
        set_committed_value(fulfilment, "order", order)
    db.session.add(order)  # cascades to its lines, fulfilments and allocations


def _order_by_key(buyer: User, key: str, fingerprint: str) -> Order | None:
    """The buyer's earlier order made with this Idempotency-Key, if any.

    :raise ValidationFailed: the key was used with a different request body.
    """
    existing = db.session.scalar(sa.select(Order).where(Order.buyer_id == buyer.id, Order.idempotency_key == key))
    if existing is not None and existing.request_fingerprint != fingerprint:
        raise ValidationFailed("该 Idempotency-Key 已用于另一笔不同的订单", code="idempotency_key_reused")
    return existing


def _create_order_rows(connection, buyer, data, wanted, products, prices, now, canteen, idempotency_key,
                       fingerprint, approval) -> tuple[Order, list[OrderLine], list[OrderFulfilment]]:
    """Insert the order, its lines and one fulfilment per cooperative (Core, no commit, no stock yet).

    Return the order, its lines and fulfilments as transient objects with their ids, not yet
    related to each other (``_adopt`` does that after the commit). The order's id is taken first, so its number (and the offline
    sandbox's checkout session, made here in the same transaction) go in with the INSERT; a real
    Stripe session needs the network and is attached after commit (``attach_stripe_checkout``).
    """
    shipping = data["shipping"]
    invoice = data.get("invoice") or {}
    channel = "canteen" if canteen else "online"
    method = data["payment_method"]
    provider = "bank_transfer" if method == "bank_transfer" else ("stripe" if payments.stripe_enabled() else "sandbox")
    values = _full_row(Order, dict(
        id=_next_order_id(connection),
        buyer_id=buyer.id, budget_unit_id=buyer.budget_unit_id if canteen else None,
        channel=channel, status=OrderStatus.PENDING_PAYMENT.value, payment_method=method,
        payment_provider=provider,
        total_fen=sum(prices[pid] * qty for pid, qty in wanted.items()), refunded_fen=0,
        shipping_name=shipping["name"].strip(), shipping_phone=shipping["phone"].strip(),
        shipping_address=shipping["address"].strip(), purchase_order_no=data.get("purchase_order_no"),
        delivery_date=data.get("delivery_date"),
        invoice_title=invoice.get("title"), invoice_tax_id=invoice.get("tax_id"),
        idempotency_key=idempotency_key, request_fingerprint=fingerprint,
        reserved_until=reservation_deadline(method, now), created_at=now,
        approval_status=approval,
    ))
    values["number"] = _order_number(values["id"], now)
    if provider == "sandbox" and approval is None:  # else once approved
        values["checkout_session_id"], values["checkout_url"] = payments.sandbox_checkout_session(
            current_app.config["PUBLIC_BASE_URL"])
    connection.execute(_INSERT_ORDER, values)
    order = _as_loaded(Order, values)
    lines = _insert_rows(connection, OrderLine, [
        {"order_id": order.id, "product_id": pid, "cooperative_id": products[pid].cooperative_id,
         "product_name": products[pid].name, "unit": products[pid].unit, "unit_price_fen": prices[pid],
         "quantity": quantity, "line_total_fen": prices[pid] * quantity, "refunded_fen": 0}
        for pid, quantity in wanted.items()])
    fulfilments = _insert_rows(connection, OrderFulfilment, [
        {"order_id": order.id, "cooperative_id": cooperative_id, "status": "pending"}
        for cooperative_id in sorted({products[pid].cooperative_id for pid in wanted})])
    return order, lines, fulfilments


def attach_stripe_checkout(order: Order) -> None:
    """Open a Stripe Checkout Session for a new order (after commit: it needs the network).

    The session expires with the reservation (clamped to Stripe's 30 min – 24 h window; the
    reservation is stretched to match, never shortened).

    :raise PaymentProviderError: Stripe failed; the order is cancelled and its stock released.
    """
    now = utcnow()
    expires_at = payments.session_expiry(order.reserved_until, now)
    try:
        session_id, url = payments.create_checkout_session(order, expires_at=expires_at,
                                                           base_url=current_app.config["PUBLIC_BASE_URL"])
    except payments.PaymentProviderError:
        _release(order.id, actor=None, action="cancelled", reason="支付服务不可用，订单已自动取消")
        raise
    with transaction():
        locked = lock_order(order.id)
        locked.checkout_session_id = session_id
        locked.checkout_url = url
        locked.reserved_until = max(locked.reserved_until, expires_at)


# ---------------------------------------------------------------- releasing stock

def _is_stale(order: Order, now: datetime) -> bool:
    """True when a pending order's reservation has lapsed (real Stripe gets a grace period)."""
    deadline = order.reserved_until
    if order.payment_provider == "stripe":
        deadline += timedelta(minutes=setting("STRIPE_EXPIRY_GRACE_MINUTES"))
    return deadline < now


def _release(order_id: int, *, actor, action: str, reason: str, only_if_stale: bool = False,
             now: datetime | None = None) -> bool:
    """Cancel a pending order and give its units back to the same batches, exactly once.

    The status check under the order's row lock is the once-only gate; the allocation rows'
    ``released_at`` guard is a second one. Returns False when there was nothing to release.
    """
    with transaction():
        order = lock_order(order_id)
        if order.status != OrderStatus.PENDING_PAYMENT.value or (only_if_stale and not _is_stale(order, now or utcnow())):
            return False
        product_ids = release_locked(order, actor=actor, action=action, reason=reason)
    notify_products_changed(*product_ids)
    return True


def release_locked(order: Order, *, actor, action: str, reason: str) -> list[int]:
    """Cancel a locked pending order and put its units back, in the caller's transaction.

    :return: the products whose stock changed (announce them after commit).
    """
    product_ids = stock.release_allocations(order.allocations)
    order.cancelled_at = utcnow()
    order.cancel_reason = reason
    for fulfilment in order.fulfilments:
        fulfilment.status = "cancelled"
    transition(order, OrderStatus.CANCELLED, actor=actor, action=action, comment=reason,
               data={"released": [[a.batch_id, a.quantity] for a in order.allocations]})
    return product_ids


def _release_if_stale(order_id: int, now: datetime | None = None) -> bool:
    """Expire one order if its reservation lapsed (used lazily by requests that touch it)."""
    return _release(order_id, actor=None, action="expired", reason="超时未付款，库存已释放", only_if_stale=True,
                    now=now)


def expire_stale_reservations(now: datetime | None = None, limit: int | None = None) -> int:
    """Release every pending order whose reservation lapsed; return how many were released.

    Called lazily before placing orders and by ``flask --app wsgi orders expire``.
    """
    now = now or utcnow()
    grace = timedelta(minutes=setting("STRIPE_EXPIRY_GRACE_MINUTES"))
    query = (sa.select(Order.id)
             .where(Order.status == OrderStatus.PENDING_PAYMENT.value, Order.reserved_until < now,
                    sa.or_(Order.payment_provider != "stripe", Order.reserved_until < now - grace))
             .order_by(Order.reserved_until))
    if limit:
        query = query.limit(limit)
    ids = list(db.session.scalars(query))
    db.session.rollback()  # end the read so SQLite's next writer is not blocked by it
    return sum(1 for order_id in ids if _release_if_stale(order_id, now))


def cancel_order(user: User, order_id: int) -> Order:
    """The buyer cancels an unpaid order; its stock goes back on sale at once.

    :raise NotFound: not visible to the caller.
    :raise Forbidden: visible but not the caller's own order.
    :raise Conflict: not awaiting payment, or Stripe reports it was just paid.
    """
    order, _ = get_order(user, order_id)
    if order.buyer_id != user.id:
        raise Forbidden("只有下单人可以取消订单")
    if order.status != OrderStatus.PENDING_PAYMENT.value:
        raise Conflict(f"订单当前状态为“{order.status_label}”，只有待付款订单可以取消", code="invalid_order_status")
    if order.payment_provider == "stripe" and order.checkout_session_id:
        # Close the payment page first, so the buyer cannot pay for a cancelled order.
        if payments.expire_checkout_session(order.checkout_session_id) == "complete":
            raise Conflict("该订单已完成支付，正在确认中，不能取消", code="payment_in_progress")
    if not _release(order_id, actor=user, action="cancelled", reason="买家取消订单"):
        raise Conflict("订单状态已变化，不能取消", code="invalid_order_status")
    return db.session.get(Order, order_id)


# ---------------------------------------------------------------- payment

def _mark_paid(order: Order, *, paid_at: datetime, actor, data: dict, comment: str = "") -> None:
    """Record a payment on a locked pending order: the sale now counts for its villages."""
    order.paid_at = paid_at
    db.session.execute(
        sa.update(OrderAllocation).where(OrderAllocation.order_id == order.id).values(paid_at=paid_at)
        .execution_options(synchronize_session=False))
    for allocation in order.allocations:
        db.session.expire(allocation, ["paid_at"])
    notify_goods_to_ship(order)
    transition(order, OrderStatus.PAID, actor=actor, action="paid", comment=comment, data=data)


def notify_goods_to_ship(order: Order) -> None:
    """Tell each cooperative with goods to ship in a newly paid order (caller's transaction)."""
    for fulfilment in sorted(order.fulfilments, key=lambda f: f.cooperative_id):
        if fulfilment.status != "pending":
            continue
        goods = "、".join(f"{line.product_name} × {line.quantity}{line.unit}" for line in order.lines
                         if line.cooperative_id == fulfilment.cooperative_id)
        when = f"，要求送达日期 {order.delivery_date.isoformat()}" if order.delivery_date else ""
        notify(active_users(Role.COOPERATIVE, cooperative_ids=[fulfilment.cooperative_id]), "order_to_ship",
               f"新订单待发货：{order.number}",
               f"订单 {order.number}（{'机关食堂' if order.channel == 'canteen' else '线上'}）已付款，本社商品：{goods}{when}。"
               "请按时发货并填写物流单号。", "/cooperative/orders")


def notify_transfer_waiting(order: Order) -> None:
    """Tell finance that a bank-transfer order may now be paid and waits for their confirmation."""
    notify(active_users(Role.FINANCE), "transfer_waiting", f"对公转账待确认：{order.number}",
           f"机关食堂订单 {order.number} 应付 {format_yuan(order.total_fen)}，采购单位将按订单号对公转账。"
           "到账后请核对银行流水并确认到账。", "/finance/orders")


def notify_order_waiting(order: Order, buyer: User) -> None:
    """A new canteen order: finance waits for its transfer, or the unit's approvers for their decision."""
    if order.payment_method != "bank_transfer":
        return
    if order.approval_status == "pending":
        approvers = [user for user in active_users(Role.CANTEEN_BUYER, budget_unit_id=order.budget_unit_id)
                     if is_unit_approver(user, order) and user.id != buyer.id]
        notify(approvers, "approval_waiting", f"订单待内部审批：{order.number}",
               f"{buyer.display_name or buyer.email}提交的订单 {order.number} 金额 {format_yuan(order.total_fen)}，"
               "超过本单位审批限额，需要您审批。", "/canteen/approvals")
    elif order.approval_status is None:
        notify_transfer_waiting(order)


def handle_stripe_webhook(raw_body: bytes, signature_header: str | None) -> dict:
    """Verify and apply one Stripe event exactly once; return what was done.

    :raise BadRequest: the signature does not verify or is stale (400; nothing changes).
    """
    event = payments.verify_event(raw_body, signature_header)
    session = event["data"]["object"]
    released: list[int] = []
    try:
        with transaction():
            stock.take_write_lock()
            record = PaymentEvent(provider="stripe", event_id=event["id"], type=event["type"], outcome="received")
            db.session.add(record)
            db.session.flush()  # a redelivered event stops here on the unique event id
            outcome, order_id, released = _apply_event(event, session)
            record.outcome = outcome
            record.order_id = order_id
    except IntegrityError:
        return {"received": True, "duplicate": True, "outcome": "duplicate"}
    notify_products_changed(*released)
    return {"received": True, "duplicate": False, "outcome": outcome}


def _apply_event(event: dict, session: dict) -> tuple[str, int | None, list[int]]:
    """Apply a verified event inside the caller's transaction; return (outcome, order id, released products)."""
    kind = event["type"]
    if kind in ("charge.refunded", "charge.dispute.created"):
        return (*_apply_charge_event(event, session), [])
    if not kind.startswith("checkout.session."):
        return "ignored", None, []
    session_id = session.get("id")
    order_id = db.session.scalar(sa.select(Order.id).where(Order.checkout_session_id == session_id)) \
        if isinstance(session_id, str) else None
    if order_id is None:
        claimed = _int_or_none(session.get("client_reference_id"))
        if claimed is not None and db.session.get(Order, claimed) is not None:
            order = lock_order(claimed)
            _alert(order, event, ["checkout_session_id 与订单不符"])
            return "session_mismatch", order.id, []
        return "unknown_session", None, []
    order = lock_order(order_id)

    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        if session.get("payment_status") != "paid":
            # Delayed methods: completed now, money later (async_payment_succeeded).
            return "awaiting_payment", order.id, []
        problems = _payment_problems(order, session)
        if problems:
            _alert(order, event, problems)
            return "mismatch", order.id, []
        if order.status in {s.value for s in PAID_STATUSES}:
            return "already_paid", order.id, []
        if order.status == OrderStatus.CANCELLED.value:
            # Money arrived for an order whose stock was released: finance must refund it.
            _alert(order, event, ["订单已取消（库存已释放）后收到付款，需人工退款"], action="paid_after_cancel")
            return "paid_after_cancel", order.id, []
        paid_at = _event_time(event)
        order.payment_intent_id = session.get("payment_intent") if isinstance(session.get("payment_intent"), str) else None
        _mark_paid(order, paid_at=paid_at, actor=None,
                   data={"event_id": event["id"], "session_id": session_id, "amount_fen": session.get("amount_total"),
                         "provider": order.payment_provider})
        return "paid", order.id, []

    if kind in ("checkout.session.expired", "checkout.session.async_payment_failed"):
        if order.status != OrderStatus.PENDING_PAYMENT.value:
            # e.g. expired arriving after completed: the payment stands.
            return "ignored_not_pending", order.id, []
        reason = "支付会话已过期，库存已释放" if kind.endswith("expired") else "支付失败，库存已释放"
        released = stock.release_allocations(order.allocations)
        order.cancelled_at = utcnow()
        order.cancel_reason = reason
        for fulfilment in order.fulfilments:
            fulfilment.status = "cancelled"
        transition(order, OrderStatus.CANCELLED, action="expired", comment=reason, data={"event_id": event["id"]})
        return "cancelled", order.id, released
    return "ignored", order.id, []


def _apply_charge_event(event: dict, charge: dict) -> tuple[str, int | None]:
    """A refund made in Stripe's dashboard (``charge.refunded``) or a dispute opened by the card
    holder (``charge.dispute.created``), on the order paid by that payment intent.

    ``charge.refunded`` carries the charge's cumulative ``amount_refunded``: whatever exceeds what
    the order already records or has reserved (a refund made here is reserved before Stripe is
    asked, so Stripe's report of it, even one arriving before it is finished here, adds nothing) is
    recorded as one refund, split over the allocations like any other, so the village reports
    drop by exactly that. A redelivered or late event finds nothing left to record. No call to
    Stripe is made here: the money has already moved.
    """
    intent = charge.get("payment_intent")
    order_id = db.session.scalar(sa.select(Order.id).where(Order.payment_intent_id == intent)) \
        if isinstance(intent, str) and intent else None
    if order_id is None:
        return "unknown_payment", None
    order = lock_order(order_id)
    if event["type"] == "charge.dispute.created":
        amount = charge.get("amount") if isinstance(charge.get("amount"), int) else None
        _alert(order, event, [f"持卡人发起争议（{charge.get('reason') or '未说明原因'}），"
                              f"争议金额 {format_yuan(amount) if amount is not None else '未知'}，请在 Stripe 后台应诉或退款"],
               action="disputed")
        return "disputed", order.id
    refunded = charge.get("amount_refunded")
    if not isinstance(refunded, int) or isinstance(refunded, bool) or refunded < 0:
        _alert(order, event, ["charge.refunded 缺少有效的 amount_refunded"])
        return "mismatch", order.id
    # Refunds this app started are reserved on the order before Stripe is asked, and Stripe may
    # report them (charge.refunded) before they are finished here: they are not the dashboard's.
    missing = min(refunded, order.total_fen) - order.refunded_fen - order.refund_reserved_fen
    if refunded > order.total_fen:
        _alert(order, event, [f"Stripe 退款合计 {refunded} 分超过订单金额 {order.total_fen} 分"])
    if missing <= 0:
        return "refund_already_recorded", order.id
    if order.status not in {s.value for s in REFUNDABLE_STATUSES}:
        _alert(order, event, [f"订单状态为“{order.status_label}”，Stripe 退款 {format_yuan(missing)} 未能入账"])
        return "mismatch", order.id
    known = set(db.session.scalars(sa.select(Refund.provider_refund_id).where(Refund.order_id == order.id)))
    refund_ids = [r.get("id") for r in ((charge.get("refunds") or {}).get("data") or [])
                  if isinstance(r, dict) and isinstance(r.get("id"), str) and r.get("id") not in known]
    parts = split_refund(missing, [(a.id, a.amount_fen - a.refunded_fen)
                                   for a in sorted(order.allocations, key=lambda a: a.id)])
    _record_refund(order, missing, "在 Stripe 后台退款", None, parts,
                   provider_refund_id=refund_ids[0] if len(refund_ids) == 1 else None,
                   extra={"event_id": event["id"]})
    return "refunded", order.id


def _payment_problems(order: Order, session: dict) -> list[str]:
    """Why a completed session does not pay this order (empty when it does)."""
    problems = []
    if str(session.get("client_reference_id")) != str(order.id):
        problems.append("client_reference_id 与订单不符")
    if session.get("currency") != "cny":
        problems.append(f"币种为 {session.get('currency')!r}，应为 cny")
    if not isinstance(session.get("amount_total"), int) or session["amount_total"] != order.total_fen:
        problems.append(f"金额 {session.get('amount_total')!r} 与订单应付 {order.total_fen} 分不符")
    return problems


def _alert(order: Order, event: dict, problems: list[str], action: str = "payment_mismatch") -> None:
    """Audit a payment event that did not (and must not) mark the order paid."""
    record_event(subject_type="order", subject_id=order.id, action=action, from_state=order.status,
                 to_state=order.status, comment="；".join(problems),
                 data={"event_id": event["id"], "type": event["type"],
                       "session_id": event["data"]["object"].get("id")})


def _event_time(event: dict) -> datetime:
    """When Stripe says the event happened (the payment time), never in the future."""
    created = event.get("created")
    now = utcnow()
    # Compared as numbers first: a timestamp centuries ahead would overflow datetime.
    if isinstance(created, int) and not isinstance(created, bool) and 0 < created < now.timestamp():
        return datetime.fromtimestamp(created, tz=timezone.utc)
    return now


def _int_or_none(value) -> int | None:
    """Parse a row id sent as text (ASCII digits, at most ``ID_MAX``), or None."""
    return whole_number(value) if isinstance(value, str) else None


def pay_in_sandbox(buyer: User, session_id: str) -> Order:
    """The offline simulated checkout: sign a completed-session event and deliver it to the webhook.

    :raise NotFound: the simulated checkout is off, the session is unknown, or not ``buyer``'s.
    :raise Conflict: the order is no longer awaiting payment.
    """
    order = sandbox_order(buyer, session_id)
    if order.status != OrderStatus.PENDING_PAYMENT.value:
        raise Conflict(f"订单当前状态为“{order.status_label}”，无需支付", code="invalid_order_status")
    body = payments.sandbox_completed_event(order)
    handle_stripe_webhook(body.encode("utf-8"), payments.sign_payload(body, payments.webhook_secret()))
    return db.session.get(Order, order.id)


def sandbox_order(buyer: User, session_id: str) -> Order:
    """``buyer``'s order behind a sandbox checkout session, released first if its reservation lapsed.

    Only the buyer may pay it here: a checkout link that leaks (a shared screen, a log) must not
    let anyone else turn the order into a village sale.

    :raise NotFound: the simulated checkout is off, no such session, or someone else's order.
    """
    if not payments.sandbox_enabled() or not session_id.startswith(payments.SANDBOX_PREFIX):
        raise NotFound("模拟支付页面不存在")
    order = db.session.scalar(sa.select(Order).where(Order.checkout_session_id == session_id))
    if order is None or order.buyer_id != buyer.id:
        raise NotFound("模拟支付页面不存在")
    if order.status == OrderStatus.PENDING_PAYMENT.value and _is_stale(order, utcnow()):
        _release_if_stale(order.id)
        order = db.session.get(Order, order.id)
    return order


def confirm_transfer(user: User, order_id: int, data: dict) -> Order:
    """Finance confirms a bank transfer (对公转账) for exactly the order's total.

    :raise NotFound: no such order.
    :raise Conflict: not a bank-transfer order, or not awaiting payment.
    :raise ValidationFailed: the amount differs from the total.
    """
    with transaction():
        order = lock_order(order_id)
        if order.payment_method != "bank_transfer":
            raise Conflict("该订单不是对公转账订单", code="not_bank_transfer")
        if order.status != OrderStatus.PENDING_PAYMENT.value:
            raise Conflict(f"订单当前状态为“{order.status_label}”，不能确认到账", code="invalid_order_status")
        if order.approval_status == "pending":
            raise Conflict("该订单尚未通过采购单位内部审批，不能确认到账", code="approval_pending")
        if data["amount_fen"] != order.total_fen:
            raise ValidationFailed(f"到账金额 {format_yuan(data['amount_fen'])} 与订单应付金额 "
                                   f"{format_yuan(order.total_fen)} 不符，请核对银行流水。", code="amount_mismatch",
                                   fields={"amount_fen": [f"须等于订单应付金额 {format_yuan(order.total_fen)}"]})
        order.payment_reference = data["reference"].strip()
        _mark_paid(order, paid_at=utcnow(), actor=user, comment=f"银行流水号 {order.payment_reference}",
                   data={"amount_fen": data["amount_fen"], "reference": order.payment_reference})
    return order


# ---------------------------------------------------------------- refunds

def split_refund(amount_fen: int, remaining: list[tuple[int, int]]) -> dict[int, int]:
    """Split a refund over allocations in proportion to what each still holds, exact to the fen.

    ``remaining`` is [(allocation id, unrefunded fen)]. Each gets floor(amount × its share);
    the fen left over go one each to the allocations with the largest fractional remainders,
    ties broken by the lower allocation id. No allocation is given more than it holds.
    """
    total = sum(value for _, value in remaining)
    if amount_fen > total:
        raise ValueError("refund exceeds what is left to refund")
    parts = {}
    remainders = []
    for allocation_id, value in remaining:
        share, remainder = divmod(amount_fen * value, total) if total else (0, 0)
        parts[allocation_id] = share
        remainders.append((-remainder, allocation_id))
    leftover = amount_fen - sum(parts.values())
    for _, allocation_id in sorted(remainders)[:leftover]:
        parts[allocation_id] += 1
    return {allocation_id: share for allocation_id, share in parts.items() if share}


def refund_order(user: User, order_id: int, data: dict) -> Order:
    """Refund part or all of a paid order; the amount leaves the villages' sales.

    The amount is split over all the order's allocations in proportion to what each still holds.
    Three steps, so that no row lock is held while Stripe is asked (``RefundIntent``): reserve the
    amount on the locked order and commit; ask Stripe (Stripe-paid orders only) outside any
    transaction with the intent's idempotency key; finish (or, if Stripe refused, release the
    reservation: nothing changes for the reports) in a new transaction. When Stripe's answer is
    unknown the intent stays pending and reserved (``carry_out_refund``).

    :raise NotFound: no such order.
    :raise Conflict: the order was never paid, or is already fully refunded (or reserved).
    :raise ValidationFailed: more than what is left to refund.
    :raise RefundRefused: Stripe refused (502; nothing changed).
    :raise RefundUnconfirmed: Stripe's answer is unknown (502 ``refund_unconfirmed``; the refund
        stays pending and reserved until ``payments resume-refunds`` confirms it).
    """
    amount = data["amount_fen"]
    with transaction():
        order = lock_order(order_id)
        check_refundable(order, amount)
        intent = reserve_refund(order, amount, data["reason"].strip(), user)
    return carry_out_refund(intent.id)


def check_refundable(order: Order, amount: int) -> None:
    """Refuse refunding ``amount`` from a locked order that was never paid or has less left.

    What is left excludes refunds in flight (reserved by pending ``RefundIntent`` rows).

    :raise Conflict: not in a refundable status (409).
    :raise ValidationFailed: more than what is left to refund (422).
    """
    if order.status not in {s.value for s in REFUNDABLE_STATUSES}:
        raise Conflict(f"订单当前状态为“{order.status_label}”，不能退款", code="invalid_order_status")
    left = order.total_fen - order.refunded_fen - order.refund_reserved_fen
    if amount > left:
        in_flight = f"（另有 {format_yuan(order.refund_reserved_fen)} 正在退款处理中）" if order.refund_reserved_fen else ""
        raise ValidationFailed(f"退款金额 {format_yuan(amount)} 超过可退金额，该订单最多还可退 {format_yuan(left)}{in_flight}。",
                               code="refund_exceeds_paid",
                               fields={"amount_fen": [f"超过可退金额，最多还可退 {format_yuan(left)}"]})


def line_refund_parts(order: Order, line_amounts: dict[int, int]) -> dict[int, int]:
    """Split per-line refund amounts over each line's own allocations (so a shortfall of one
    product leaves the villages that supplied that product, and no other)."""
    parts: dict[int, int] = {}
    for line_id, amount in line_amounts.items():
        if amount:
            parts.update(split_refund(amount, [(a.id, a.amount_fen - a.refunded_fen)
                                               for a in sorted(order.allocations, key=lambda a: a.id)
                                               if a.line_id == line_id]))
    return parts


def reserve_refund(order: Order, amount: int, reason: str, actor: User | None, *,
                   line_amounts: dict[int, int] | None = None, refund_request_id: int | None = None) -> RefundIntent:
    """Write a pending refund intent for a checked amount on a locked order and reserve the amount
    on the order, in the caller's transaction (which must commit before ``carry_out_refund``).

    :raise Conflict: a Stripe payment without a recorded payment intent (nothing to refund against).
    """
    if order.payment_provider == "stripe" and not order.payment_intent_id:
        raise Conflict("该订单没有记录 Stripe 支付单号，无法在线退款", code="no_payment_intent")
    intent = RefundIntent(order_id=order.id, amount_fen=amount, reason=reason, actor_id=actor.id if actor else None,
                          idempotency_key=f"xiangban-refund-{order.number}-{secrets.token_hex(8)}", status="pending",
                          line_amounts=json.dumps({str(k): v for k, v in line_amounts.items()}) if line_amounts else None,
                          refund_request_id=refund_request_id, attempts=0)
    db.session.add(intent)
    order.refund_reserved_fen += amount
    db.session.flush()
    record_event(subject_type="order", subject_id=order.id, action="refund_reserved", actor=actor,
                 from_state=order.status, to_state=order.status, comment=reason,
                 data={"refund_intent_id": intent.id, "amount_fen": amount, "provider": order.payment_provider,
                       "idempotency_key": intent.idempotency_key})
    return intent


def carry_out_refund(intent_id: int, *, asked_before: bool = False) -> Order:
    """Move the money of a committed pending intent and finish it; return the order.

    The provider is called outside any transaction (the session's transaction is ended first, so
    neither a PostgreSQL row lock nor SQLite's write lock is held while Stripe answers). Running
    it twice for one intent (a resumed crash, a slow request) moves the money once: Stripe
    answers a repeated idempotency key with the first refund, and only a pending intent finishes.

    Only a definite refusal fails the intent and releases its reservation. When Stripe's answer
    is unknown (connection dropped, timeout, 5xx, 429, or the key busy at Stripe), Stripe may have
    refunded: the intent stays pending with its amount reserved, so neither a second refund nor
    the ``charge.refunded`` webhook can take that amount again, and ``payments resume-refunds``
    asks again with the same idempotency key.

    ``asked_before``: Stripe may have been asked already (a resumed or retried intent): first look
    for the refund that request made (``payments.find_refund``), because Stripe forgets an
    idempotency key after 24 hours and would then refund again.

    :raise RefundInProgress: Stripe is still handling this intent's key for another worker (409;
        the intent stays pending).
    :raise RefundUnconfirmed: Stripe's answer is unknown (502 ``refund_unconfirmed``; the intent
        stays pending and the amount reserved).
    :raise RefundRefused: Stripe refused; the intent is failed and its reservation released
        (502; nothing changed for the reports).
    """
    intent = db.session.get(RefundIntent, intent_id, populate_existing=True)
    order = intent.order
    if intent.status != "pending":
        return order
    call = None
    if order.payment_provider == "stripe":
        call = dict(payment_intent_id=order.payment_intent_id, amount_fen=intent.amount_fen,
                    idempotency_key=intent.idempotency_key, order_number=order.number)
    # End the read transaction the lines above began (nothing was written, and a rollback can
    # never commit what a caller left pending): the Stripe call below holds nothing.
    db.session.rollback()
    provider_refund_id = None
    if call is not None:
        try:
            if asked_before:
                provider_refund_id = payments.find_refund(call["payment_intent_id"], call["idempotency_key"])
            if provider_refund_id is None:
                provider_refund_id = payments.refund_payment(call.pop("payment_intent_id"), call.pop("amount_fen"),
                                                             **call)
        except payments.RefundUnconfirmed as exc:
            # Maybe refunded at Stripe: keep the intent pending and the amount reserved (resumed later).
            _note_unconfirmed_refund(intent_id, exc.message)
            raise
        except payments.RefundRefused as exc:
            _fail_refund(intent_id, exc.message)
            raise
    return _finish_refund(intent_id, provider_refund_id)


def _note_unconfirmed_refund(intent_id: int, message: str) -> None:
    """Count and audit an attempt whose outcome Stripe did not tell; the intent stays pending."""
    with transaction():
        order, intent = _lock_intent(intent_id)
        if intent.status != "pending":
            return
        intent.attempts += 1
        record_event(subject_type="order", subject_id=order.id, action="refund_unconfirmed",
                     actor=intent.actor,
                     from_state=order.status, to_state=order.status, comment=message,
                     data={"refund_intent_id": intent.id, "amount_fen": intent.amount_fen,
                           "idempotency_key": intent.idempotency_key})


def _lock_intent(intent_id: int) -> tuple[Order, RefundIntent]:
    """The intent's order locked (lock order: order first), and the intent re-read under it."""
    order_id = db.session.scalar(sa.select(RefundIntent.order_id).where(RefundIntent.id == intent_id))
    order = lock_order(order_id)
    intent = db.session.get(RefundIntent, intent_id, populate_existing=True)
    return order, intent


def _finish_refund(intent_id: int, provider_refund_id: str | None) -> Order:
    """Apply a refund whose money has moved: release the reservation, record the refund over the
    allocations (as before intents existed), mark the intent succeeded. Once only."""
    with transaction():
        order, intent = _lock_intent(intent_id)
        if intent.status != "pending":
            return order
        order.refund_reserved_fen -= intent.amount_fen
        line_amounts = {int(k): v for k, v in json.loads(intent.line_amounts).items()} if intent.line_amounts else None
        actor = intent.actor
        refund = _record_refund(order, intent.amount_fen, intent.reason, actor,
                                _refund_parts(order, intent.amount_fen, line_amounts),
                                provider_refund_id=provider_refund_id, extra={"refund_intent_id": intent.id})
        db.session.flush()
        intent.status = "succeeded"
        intent.refund_id = refund.id
        intent.provider_refund_id = provider_refund_id
        intent.finished_at = utcnow()
        intent.attempts += 1
        if intent.refund_request_id:
            request = db.session.get(RefundRequest, intent.refund_request_id)
            if request is not None and request.status == "open":
                request.status = "refunded"
                request.amount_fen = intent.amount_fen
                request.refund_id = refund.id
    return order


def _fail_refund(intent_id: int, failure: str) -> None:
    """Stripe refused: the intent is failed and its reservation released; nothing else changes."""
    with transaction():
        order, intent = _lock_intent(intent_id)
        if intent.status != "pending":
            return
        order.refund_reserved_fen -= intent.amount_fen
        intent.status = "failed"
        intent.failure = failure[:500]
        intent.finished_at = utcnow()
        intent.attempts += 1
        if intent.refund_request_id:
            request = db.session.get(RefundRequest, intent.refund_request_id)
            if request is not None and request.status == "open":
                # The decision did not happen: the request waits for finance again.
                request.decided_by_id = request.decided_at = request.decision_comment = None
        record_event(subject_type="order", subject_id=order.id, action="refund_failed",
                     actor=intent.actor,
                     from_state=order.status, to_state=order.status, comment=failure,
                     data={"refund_intent_id": intent.id, "amount_fen": intent.amount_fen})


def _refund_parts(order: Order, amount: int, line_amounts: dict[int, int] | None) -> dict[int, int]:
    """How a refund of ``amount`` is taken from the order's allocations: from the given lines'
    own allocations (capped at what each line still holds; any rest from the whole order), or
    from the whole order in proportion."""
    allocations = sorted(order.allocations, key=lambda a: a.id)
    parts: dict[int, int] = {}
    if line_amounts:
        lines = {line.id: line for line in order.lines}
        capped = {line_id: min(fen, lines[line_id].line_total_fen - lines[line_id].refunded_fen)
                  for line_id, fen in line_amounts.items() if line_id in lines}
        parts = line_refund_parts(order, capped)
        amount -= sum(parts.values())
    if amount > 0:
        for allocation_id, share in split_refund(amount, [(a.id, a.amount_fen - a.refunded_fen - parts.get(a.id, 0))
                                                          for a in allocations]).items():
            parts[allocation_id] = parts.get(allocation_id, 0) + share
    return parts


#: A pending intent older than this is taken as left by a crash (a live request finishes in seconds).
RESUME_REFUNDS_AFTER_MINUTES = 10


def resume_pending_refunds(older_than_minutes: int = RESUME_REFUNDS_AFTER_MINUTES) -> dict[str, int]:
    """Carry out pending refund intents older than ``older_than_minutes`` again, each with its own
    idempotency key, after looking for the refund an earlier attempt made (so money that already
    moved is not moved twice, even past the 24 hours Stripe keeps a key); return counts by outcome.
    """
    cutoff = utcnow() - timedelta(minutes=older_than_minutes)
    ids = list(db.session.scalars(sa.select(RefundIntent.id).where(
        RefundIntent.status == "pending", RefundIntent.created_at < cutoff).order_by(RefundIntent.id)))
    db.session.commit()
    outcome = {"succeeded": 0, "failed": 0, "in_progress": 0}
    for intent_id in ids:
        try:
            carry_out_refund(intent_id, asked_before=True)
        except payments.RefundUnconfirmed:  # also RefundInProgress: still pending, asked again next run
            outcome["in_progress"] += 1
            continue
        except payments.RefundRefused:
            outcome["failed"] += 1
            continue
        outcome["succeeded"] += 1
    return outcome


def _record_refund(order: Order, amount: int, reason: str, actor: User | None, parts: dict[int, int], *,
                   provider_refund_id: str | None, extra: dict | None = None) -> Refund:
    """Write a refund whose money has moved: its rows, the allocations' and lines' refunded fen,
    the order's status (audited)."""
    allocations = {a.id: a for a in order.allocations}
    refund = Refund(order=order, amount_fen=amount, reason=reason, provider=order.payment_provider,
                    provider_refund_id=provider_refund_id, actor_id=actor.id if actor else None)
    db.session.add(refund)
    lines = {line.id: line for line in order.lines}
    for allocation_id, share in sorted(parts.items()):
        allocation = allocations[allocation_id]
        allocation.refunded_fen += share
        lines[allocation.line_id].refunded_fen += share
        refund.parts.append(RefundAllocation(allocation_id=allocation_id, amount_fen=share))
    order.refunded_fen += amount
    full = order.refunded_fen == order.total_fen
    if full:
        for fulfilment in order.fulfilments:
            if fulfilment.status == "pending":
                fulfilment.status = "cancelled"
    transition(order, OrderStatus.REFUNDED if full else OrderStatus.PARTIALLY_REFUNDED, actor=actor,
               action="refunded", comment=reason,
               data={"amount_fen": amount, "refunded_fen": order.refunded_fen, "provider": order.payment_provider,
                     "provider_refund_id": provider_refund_id, "parts": sorted(parts.items()), **(extra or {})})
    return refund


# ---------------------------------------------------------------- fulfilment

def ship_part(user: User, order_id: int, data: dict) -> Order:
    """A cooperative ships its own lines with a tracking number; the order is shipped when all parts are.

    :raise NotFound: not visible to the caller.
    :raise Forbidden: not a cooperative of this order (admins must name one).
    :raise Conflict: not paid yet, refunded or cancelled, or this part already shipped.
    """
    order, scope = get_order(user, order_id)
    if user.has_role(Role.ADMIN) and data.get("cooperative_id"):
        cooperative_id = data["cooperative_id"]
    elif user.has_role(Role.COOPERATIVE) and isinstance(scope, int):
        cooperative_id = scope
    else:
        raise Forbidden("只有订单中的合作社可以发货")
    with transaction():
        order = lock_order(order_id)
        fulfilment = next((f for f in order.fulfilments if f.cooperative_id == cooperative_id), None)
        if fulfilment is None:
            raise NotFound("该合作社在此订单中没有商品")
        if order.status not in {s.value for s in SHIPPABLE_STATUSES}:
            raise Conflict(f"订单当前状态为“{order.status_label}”，不能发货", code="invalid_order_status")
        if fulfilment.status != "pending":
            raise Conflict("本社商品已发货", code="already_shipped")
        now = utcnow()
        fulfilment.status = "shipped"
        fulfilment.carrier = data["carrier"].strip()
        fulfilment.tracking_number = data["tracking_number"].strip()
        fulfilment.shipped_at = now
        fulfilment.shipped_by_id = user.id
        all_shipped = all(f.status in ("shipped", "received", "cancelled") for f in order.fulfilments)
        details = {"cooperative_id": cooperative_id, "carrier": fulfilment.carrier,
                   "tracking_number": fulfilment.tracking_number}
        if all_shipped and order.status == OrderStatus.PAID.value:
            order.shipped_at = now
            transition(order, OrderStatus.SHIPPED, actor=user, action="shipped", data=details)
        else:
            record_event(subject_type="order", subject_id=order.id, action="part_shipped", actor=user,
                         from_state=order.status, to_state=order.status, data=details)
    return order


def confirm_receipt(user: User, order_id: int) -> Order:
    """The buyer confirms receipt (验货) of a shipped order, completing it.

    :raise Forbidden: visible but not the caller's own order.
    :raise Conflict: not shipped.
    """
    order, _ = get_order(user, order_id)
    if order.buyer_id != user.id:
        raise Forbidden("只有下单人可以确认收货")
    if order.channel == "canteen":
        raise ValidationFailed("机关食堂订单须逐项验货：请填写每种商品的实收数量（POST …/inspection）",
                               code="inspection_required")
    with transaction():
        order = lock_order(order_id)
        if not can_transition(order.status, OrderStatus.COMPLETED):
            raise Conflict(f"订单当前状态为“{order.status_label}”，不能确认收货", code="invalid_order_status")
        complete_locked(order, actor=user, comment="买家确认收货")
    return order


def complete_locked(order: Order, *, actor, comment: str, data: dict | None = None) -> None:
    """Mark a locked order whose parts have all shipped completed and its parts received.

    An order partially refunded before delivery keeps that status (the refund is what finance
    must see); it is completed all the same, and its parts received."""
    order.completed_at = utcnow()
    for fulfilment in order.fulfilments:
        if fulfilment.status == "shipped":
            fulfilment.status = "received"
    if order.status == OrderStatus.SHIPPED.value:
        transition(order, OrderStatus.COMPLETED, actor=actor, action="completed", comment=comment, data=data)
    else:
        record_event(subject_type="order", subject_id=order.id, action="completed", actor=actor,
                     from_state=order.status, to_state=order.status, comment=comment, data=data)


def auto_complete_shipped(now: datetime | None = None) -> int:
    """Complete online orders shipped more than ORDER_AUTO_COMPLETE_DAYS ago (自动确认收货).

    Never a canteen order: a public body's purchase is complete only when its buyer has inspected
    the delivery and confirmed it (验货), because that confirmation is what its audit asks for.
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=setting("ORDER_AUTO_COMPLETE_DAYS"))
    ids = list(db.session.scalars(sa.select(Order.id).where(Order.status == OrderStatus.SHIPPED.value,
                                                            Order.channel == "online", Order.shipped_at < cutoff)))
    db.session.rollback()
    done = 0
    for order_id in ids:
        with transaction():
            order = lock_order(order_id)
            if order.status == OrderStatus.SHIPPED.value:
                complete_locked(order, actor=None, comment="发货超期未确认，系统自动确认收货")
                done += 1
    return done


def cooperative_order_book(user: User, *, to_ship_only: bool = False, limit: int = 100) -> list[dict]:
    """A cooperative's paid orders: its lines, its fulfilment and the shipping address."""
    if user.cooperative_id is None:
        raise Forbidden("账号未关联合作社")
    paid = [s.value for s in PAID_STATUSES]
    query = (sa.select(OrderFulfilment)
             .join(Order, Order.id == OrderFulfilment.order_id)
             .where(OrderFulfilment.cooperative_id == user.cooperative_id, Order.status.in_(paid))
             .order_by(OrderFulfilment.status != "pending", Order.paid_at.desc()).limit(limit))
    if to_ship_only:
        query = query.where(OrderFulfilment.status == "pending")
    book = []
    for fulfilment in db.session.scalars(query):
        order = fulfilment.order
        lines = [line for line in order.lines if line.cooperative_id == user.cooperative_id]
        book.append({"order": order, "fulfilment": fulfilment, "lines": lines,
                     "total_fen": sum(line.line_total_fen for line in lines)})
    return book


def refundable(order: Order) -> int:
    """Fen still refundable on an order (0 when it cannot be refunded)."""
    if order.status not in {s.value for s in REFUNDABLE_STATUSES}:
        return 0
    return order.total_fen - order.refunded_fen


def finance_overview(limit: int = 50) -> dict:
    """What the finance desk shows: transfers to confirm, recent payments, refunds and alerts."""
    pending = list(db.session.scalars(
        sa.select(Order).where(Order.payment_method == "bank_transfer",
                               Order.status == OrderStatus.PENDING_PAYMENT.value,
                               # Not yet approved inside the buyer's unit: not finance's to confirm.
                               sa.or_(Order.approval_status.is_(None), Order.approval_status != "pending"))
        .order_by(Order.id)))
    paid = list(db.session.scalars(
        sa.select(Order).where(Order.paid_at.is_not(None)).order_by(Order.paid_at.desc()).limit(limit)))
    refunds = list(db.session.scalars(sa.select(Refund).order_by(Refund.id.desc()).limit(limit)))
    return {"pending_transfers": pending, "recent_paid": paid, "recent_refunds": refunds,
            "alerts": payment_alerts(limit), **refunds_in_flight(limit)}


#: How far back the finance desk lists refunds the payment provider refused.
REFUSED_REFUNDS_SHOWN_DAYS = 30


def refunds_in_flight(limit: int = 50) -> dict[str, list[RefundIntent]]:
    """Refunds asked of the payment provider and not finished (``refunds_pending``, oldest first:
    the longest unconfirmed is the one to look at), and those it refused lately (``refunds_refused``)."""
    with_order = orm.joinedload(RefundIntent.order)
    pending = list(db.session.scalars(
        sa.select(RefundIntent).where(RefundIntent.status == "pending").options(with_order)
        .order_by(RefundIntent.id).limit(limit)))
    refused = list(db.session.scalars(
        sa.select(RefundIntent).where(RefundIntent.status == "failed",
                                      RefundIntent.finished_at >= utcnow() - timedelta(days=REFUSED_REFUNDS_SHOWN_DAYS))
        .options(with_order).order_by(RefundIntent.finished_at.desc()).limit(limit)))
    return {"refunds_pending": pending, "refunds_refused": refused}


def refund_intent_order_id(intent_id: int) -> int:
    """The order a refund intent belongs to.

    :raise NotFound: no such refund intent.
    """
    order_id = db.session.scalar(sa.select(RefundIntent.order_id).where(RefundIntent.id == intent_id))
    if order_id is None:
        raise NotFound("退款记录不存在")
    return order_id


def retry_refund(user: User, intent_id: int) -> Order:
    """Finance asks the payment provider again about a refund still pending (its answer was lost),
    with the refund's own idempotency key, so money that already moved does not move twice: what
    ``payments resume-refunds`` does, for one refund and now.

    :raise Forbidden: not finance or an admin.
    :raise NotFound: no such refund intent.
    :raise Conflict: it is not pending any more (``refund_not_pending``).
    :raise RefundUnconfirmed, RefundInProgress, RefundRefused: as ``carry_out_refund``.
    """
    if not user.has_role(Role.FINANCE, Role.ADMIN):
        raise Forbidden("仅财务人员或管理员可以处理退款")
    refund_intent_order_id(intent_id)
    with transaction():
        order, intent = _lock_intent(intent_id)
        if intent.status != "pending":
            label = "已完成" if intent.status == "succeeded" else "已被支付服务拒绝"
            raise Conflict(f"该退款{label}，无需再确认", code="refund_not_pending")
        record_event(subject_type="order", subject_id=order.id, action="refund_retried", actor=user,
                     from_state=order.status, to_state=order.status,
                     data={"refund_intent_id": intent.id, "amount_fen": intent.amount_fen,
                           "idempotency_key": intent.idempotency_key})
    order = carry_out_refund(intent_id, asked_before=True)
    # Another worker may have settled it in between (carry_out_refund then returns at once).
    settled = db.session.get(RefundIntent, intent_id, populate_existing=True)
    if settled.status == "failed":
        raise payments.RefundRefused(settled.failure)
    return order


def payment_alerts(limit: int = 50) -> list[PaymentEvent]:
    """Payment events finance must look at: mismatches, money received for cancelled orders, disputes."""
    return list(db.session.scalars(
        sa.select(PaymentEvent).where(PaymentEvent.outcome.in_(("mismatch", "session_mismatch", "paid_after_cancel",
                                                                "disputed")))
        .order_by(PaymentEvent.id.desc()).limit(limit)))


# ---------------------------------------------------------------- carts

def cart_quantities(user: User) -> dict[int, int]:
    """A signed-in user's cart as {product id: quantity}."""
    return {item.product_id: item.quantity for item in
            db.session.scalars(sa.select(CartItem).where(CartItem.user_id == user.id).order_by(CartItem.added_at))}


def set_cart_quantity(user: User, product_id: int, quantity: int, *, add: bool = False) -> None:
    """Put a product in the user's cart (``add``: on top of what is there); 0 removes it.

    :raise NotFound: no such product.
    """
    if db.session.get(Product, product_id) is None:
        raise NotFound("产品不存在")
    with transaction():
        item = db.session.get(CartItem, (user.id, product_id))
        new = (item.quantity if item and add else 0) + quantity
        new = min(new, CART_MAX_QUANTITY)
        if new <= 0:
            if item is not None:
                db.session.delete(item)
        elif item is None:
            db.session.add(CartItem(user_id=user.id, product_id=product_id, quantity=new))
        else:
            item.quantity = new


def merge_guest_cart(user: User, guest: dict[int, int]) -> None:
    """Add a guest's cart (kept in a cookie before sign-in) to the user's saved cart."""
    existing = {pid for pid, in db.session.execute(sa.select(Product.id).where(Product.id.in_(list(guest))))}
    with transaction():
        for product_id, quantity in guest.items():
            if product_id not in existing or quantity <= 0:
                continue
            item = db.session.get(CartItem, (user.id, product_id))
            if item is None:
                db.session.add(CartItem(user_id=user.id, product_id=product_id,
                                        quantity=min(quantity, CART_MAX_QUANTITY)))
            else:
                item.quantity = min(item.quantity + quantity, CART_MAX_QUANTITY)


def remove_from_cart(user: User, product_ids) -> None:
    """Drop products from the user's cart (after they were ordered)."""
    with transaction():
        db.session.execute(sa.delete(CartItem).where(CartItem.user_id == user.id,
                                                     CartItem.product_id.in_(list(product_ids))))
