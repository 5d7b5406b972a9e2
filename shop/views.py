"""Shop pages (Chinese, phone-first): storefront, product page, cart, checkout, the simulated
Stripe checkout, my orders, the cooperative order book and the finance desk. Thin: parse the
form, call a service, render or redirect."""
from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from marshmallow import ValidationError

from core.auth import current_user, require_login, require_roles
from core.errors import AppError
from core.models import Role
from core.navigation import register_nav
from core.village_registry import COUNTIES
from shop import services, storefront
from shop.schemas import OrderCreateSchema, RefundCreateSchema, ShipSchema, TransferConfirmSchema
from shop.states import OrderStatus

bp = Blueprint("shop", __name__)

register_nav("shop.browse", "逛好物", order=10)
register_nav("shop.cart", "购物车", order=12)
register_nav("shop.my_orders", "我的订单", roles=(Role.CONSUMER, Role.CANTEEN_BUYER), order=14)
register_nav("shop.order_book", "合作社订单", roles=(Role.COOPERATIVE,), order=32)
register_nav("shop.finance_desk", "收款与退款", roles=(Role.FINANCE, Role.ADMIN), order=60)

CART_COOKIE = "xb_cart"
PER_PAGE = 20


# ---------------------------------------------------------------- the cart's storage

def _cookie_serializer() -> URLSafeSerializer:
    """Signer of the guest cart cookie."""
    from flask import current_app

    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="xiangban-guest-cart")


def _guest_cart() -> dict[int, int]:
    """A guest's cart from its signed cookie (a separate cookie, so signing in does not clear it)."""
    raw = request.cookies.get(CART_COOKIE)
    if not raw:
        return {}
    try:
        data = _cookie_serializer().loads(raw)
    except BadSignature:
        return {}
    if not isinstance(data, dict):
        return {}
    cart = {}
    for key, value in data.items():
        if str(key).isdigit() and isinstance(value, int) and 0 < value <= services.CART_MAX_QUANTITY:
            cart[int(key)] = value
    return dict(list(cart.items())[:50])


def _store_guest_cart(response, cart: dict[int, int]):
    """Write a guest's cart into its cookie on ``response``."""
    response.set_cookie(CART_COOKIE, _cookie_serializer().dumps({str(k): v for k, v in cart.items()}),
                        max_age=30 * 24 * 3600, httponly=True, samesite="Lax")
    return response


def _cart_quantities() -> dict[int, int]:
    """The caller's cart; a guest cart still in its cookie is merged into the account on first use."""
    user = current_user()
    guest = _guest_cart()
    if user is None:
        return guest
    if guest:
        services.merge_guest_cart(user, guest)
        g.drop_guest_cart = True
    return services.cart_quantities(user)


@bp.after_app_request
def _drop_merged_guest_cart(response):
    """Delete the guest cart cookie once its contents live in the account."""
    if g.get("drop_guest_cart"):
        response.delete_cookie(CART_COOKIE)
    return response


def _quantity(raw, default: int = 1) -> int:
    """A positive quantity from a form field, or ``default``."""
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return default
    return max(0, min(value, services.CART_MAX_QUANTITY))


# ---------------------------------------------------------------- storefront

def home_context() -> dict:
    """What the storefront blocks of the home page show (used by ``core.views.home``)."""
    products, stock = storefront.featured_products()
    return {"featured_products": products, "featured_stock": stock,
            "featured_villages": storefront.featured_villages()}


@bp.get("/shop")
def browse():
    """Browse products on sale by category and county."""
    category = request.args.get("category") or None
    county = request.args.get("county") or None
    if category not in storefront.CATEGORIES:
        category = None
    if county not in COUNTIES:
        county = None
    page = max(1, _quantity(request.args.get("page"), 1))
    products, total, stock = storefront.browse(category, county, (page - 1) * PER_PAGE, PER_PAGE)
    return render_template("shop/browse.html", products=products, stock=stock, total=total, page=page,
                           pages=max(1, -(-total // PER_PAGE)), categories=storefront.CATEGORIES,
                           counties=storefront.counties_with_products(),
                           filters={k: v for k, v in (("category", category), ("county", county)) if v})


@bp.get("/products/<int:product_id>")
def product_page(product_id: int):
    """A product: photos, cooperative, origin villages and their progress, certificate, bulk terms."""
    page = storefront.product_page(current_user(), product_id)
    return render_template("shop/product.html", page=page, product=page.product)


# ---------------------------------------------------------------- cart and checkout

@bp.get("/cart")
def cart():
    """The cart, priced by the server, with anything that would stop the order."""
    return render_template("shop/cart.html", cart=storefront.price_cart(current_user(), _cart_quantities()))


@bp.post("/cart/add")
def cart_add():
    """Add a product to the cart (a guest's cart lives in a signed cookie)."""
    product_id = _quantity(request.form.get("product_id"), 0)
    quantity = _quantity(request.form.get("quantity"), 1) or 1
    storefront.product_page(current_user(), product_id)  # 404 for products one may not buy
    user = current_user()
    flash("已加入购物车")
    response = redirect(request.form.get("next") if request.form.get("next") == "/cart" else url_for("shop.cart"))
    if user is not None:
        _cart_quantities()
        services.set_cart_quantity(user, product_id, quantity, add=True)
        return response
    cart_now = _guest_cart()
    cart_now[product_id] = min(cart_now.get(product_id, 0) + quantity, services.CART_MAX_QUANTITY)
    return _store_guest_cart(response, cart_now)


@bp.post("/cart/update")
def cart_update():
    """Change quantities (0 removes a line)."""
    user = current_user()
    quantities = _cart_quantities()
    for product_id in list(quantities):
        field = f"quantity_{product_id}"
        if field in request.form:
            quantities[product_id] = _quantity(request.form.get(field), quantities[product_id])
        if request.form.get("remove") == str(product_id):
            quantities[product_id] = 0
    response = redirect(url_for("shop.cart"))
    if user is not None:
        for product_id, quantity in quantities.items():
            services.set_cart_quantity(user, product_id, quantity)
        return response
    return _store_guest_cart(response, {k: v for k, v in quantities.items() if v > 0})


@bp.route("/checkout", methods=["GET", "POST"])
@require_login
def checkout():
    """Confirm the cart, give shipping (and for canteens the purchase order and invoice), then pay."""
    user = current_user()
    priced = storefront.price_cart(user, _cart_quantities())
    canteen = user.has_role(Role.CANTEEN_BUYER)
    errors, status = {}, 200
    form = request.form
    if request.method == "POST" and priced.lines:
        data = {
            "lines": [{"product_id": line.product.id, "quantity": line.quantity} for line in priced.lines],
            "payment_method": form.get("payment_method") or ("bank_transfer" if canteen else "stripe"),
            "shipping": {"name": form.get("name", ""), "phone": form.get("phone", ""),
                         "address": form.get("address", "")},
            "purchase_order_no": form.get("purchase_order_no") or None,
            "invoice": ({"title": form.get("invoice_title", ""), "tax_id": form.get("invoice_tax_id", "")}
                        if form.get("invoice_title") or form.get("invoice_tax_id") else None),
        }
        try:
            order, _ = services.place_order(user, OrderCreateSchema().load(data))
        except ValidationError as exc:
            errors, status = exc.messages, 422
        except AppError as exc:
            errors, status = {"_": [exc.message], **exc.fields}, exc.status
        else:
            services.remove_from_cart(user, [line.product.id for line in priced.lines])
            return _to_payment(order)
    elif request.method == "POST":
        errors, status = {"_": ["购物车是空的"]}, 422
    return render_template("shop/checkout.html", cart=priced, canteen=canteen, errors=errors, form=form,
                           user=user), status


def _to_payment(order):
    """Send the buyer to pay: the simulated checkout, Stripe, or transfer instructions."""
    if order.payment_provider == "sandbox":
        return redirect(url_for("shop.sandbox_checkout", session_id=order.checkout_session_id))
    if order.payment_provider == "stripe":
        return redirect(order.checkout_url)
    flash("订单已提交，请按页面上的账户信息对公转账，财务确认到账后即安排发货。")
    return redirect(url_for("shop.order_detail", order_id=order.id))


@bp.route("/pay/sandbox/<session_id>", methods=["GET", "POST"])
def sandbox_checkout(session_id: str):
    """The clearly labelled offline checkout: paying here sends a signed event to the real webhook code."""
    order = services.sandbox_order(session_id)
    if request.method == "POST":
        order = services.pay_in_sandbox(session_id)
        flash("模拟支付成功（未真实扣款）")
        return redirect(url_for("shop.order_detail", order_id=order.id))
    return render_template("shop/sandbox_checkout.html", order=order,
                           payable=order.status == OrderStatus.PENDING_PAYMENT.value)


# ---------------------------------------------------------------- orders

@bp.get("/orders")
@require_login
def my_orders():
    """The signed-in user's own orders, newest first."""
    user = current_user()
    page = max(1, _quantity(request.args.get("page"), 1))
    orders, total = services.list_orders(user, own_only=True, offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
    return render_template("shop/my_orders.html", orders=orders, total=total, page=page,
                           pages=max(1, -(-total // PER_PAGE)))


@bp.get("/orders/<int:order_id>")
@require_login
def order_detail(order_id: int):
    """One order: the buyer's, finance's and admins' full view, or a cooperative's own part."""
    user = current_user()
    order, scope = services.get_order(user, order_id)
    lines = [line for line in order.lines if scope is None or line.cooperative_id == scope]
    fulfilments = [f for f in order.fulfilments if scope is None or f.cooperative_id == scope]
    return render_template("shop/order.html", order=order, scope=scope, lines=lines, fulfilments=fulfilments,
                           is_buyer=order.buyer_id == user.id, just_paid=request.args.get("paid") == "1",
                           finance=user.has_role(Role.FINANCE, Role.ADMIN), user=user,
                           refundable=services.refundable(order))


def _act(order_id: int, action, success: str):
    """Run an order action from a form, flash its outcome, and go back to the order."""
    try:
        action()
    except ValidationError as exc:
        flash("输入有误：" + "；".join(f"{k}: {v}" for k, v in exc.messages.items()))
    except AppError as exc:
        flash(exc.message + ("：" + "；".join(str(v) for v in exc.fields.values()) if exc.fields else ""))
    else:
        flash(success)
    target = request.form.get("next")
    if target not in ("book", "finance"):
        return redirect(url_for("shop.order_detail", order_id=order_id))
    return redirect(url_for("shop.order_book" if target == "book" else "shop.finance_desk"))


@bp.post("/orders/<int:order_id>/cancel")
@require_login
def cancel(order_id: int):
    """The buyer cancels an unpaid order."""
    return _act(order_id, lambda: services.cancel_order(current_user(), order_id), "订单已取消，库存已释放")


@bp.post("/orders/<int:order_id>/receipt")
@require_login
def confirm_receipt(order_id: int):
    """The buyer confirms receipt."""
    return _act(order_id, lambda: services.confirm_receipt(current_user(), order_id), "已确认收货，感谢支持脱贫村")


@bp.post("/orders/<int:order_id>/ship")
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def ship(order_id: int):
    """A cooperative marks its part shipped with a tracking number."""
    def action():
        """Load the form and call the service."""
        data = ShipSchema().load({"carrier": request.form.get("carrier", ""),
                                  "tracking_number": request.form.get("tracking_number", "").strip(),
                                  "cooperative_id": _quantity(request.form.get("cooperative_id"), 0) or None})
        services.ship_part(current_user(), order_id, data)
    return _act(order_id, action, "已标记发货")


@bp.post("/orders/<int:order_id>/confirm-transfer")
@require_roles(Role.FINANCE)
def confirm_transfer(order_id: int):
    """Finance confirms a bank transfer."""
    def action():
        """Load the form and call the service."""
        data = TransferConfirmSchema().load({"amount_fen": _fen(request.form.get("amount_yuan")),
                                             "reference": request.form.get("reference", "")})
        services.confirm_transfer(current_user(), order_id, data)
    return _act(order_id, action, "已确认到账，订单已付款")


@bp.post("/orders/<int:order_id>/refund")
@require_roles(Role.FINANCE, Role.ADMIN)
def refund(order_id: int):
    """Finance or an admin refunds part or all of a paid order."""
    def action():
        """Load the form and call the service."""
        data = RefundCreateSchema().load({"amount_fen": _fen(request.form.get("amount_yuan")),
                                          "reason": request.form.get("reason", "")})
        services.refund_order(current_user(), order_id, data)
    return _act(order_id, action, "退款已完成")


def _fen(raw: str | None):
    """Parse a yuan amount typed by a person ("12.5") into integer fen, or return the raw text
    so the schema reports it as invalid."""
    text = (raw or "").strip().replace(",", "").replace("¥", "")
    whole, _, cents = text.partition(".")
    if whole.isdigit() and (cents == "" or (cents.isdigit() and len(cents) <= 2)):
        return int(whole) * 100 + int((cents + "00")[:2])
    return text


@bp.get("/cooperative/orders")
@require_roles(Role.COOPERATIVE)
def order_book():
    """The cooperative's order book: its paid lines, those to ship first."""
    user = current_user()
    return render_template("shop/order_book.html", book=services.cooperative_order_book(user),
                           cooperative=storefront.cooperative_name(user.cooperative_id))


@bp.get("/finance/orders")
@require_roles(Role.FINANCE, Role.ADMIN)
def finance_desk():
    """Payments awaiting confirmation, recent payments, refunds and payment alerts."""
    return render_template("shop/finance.html", **services.finance_overview(),
                           can_confirm=current_user().has_role(Role.FINANCE))

