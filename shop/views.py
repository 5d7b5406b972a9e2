"""Shop pages (Chinese, phone-first): storefront, product page, cart, checkout, the simulated
Stripe checkout, my orders, the cooperative order book and the finance desk. Thin: parse the
form, call a service, render or redirect."""
from dataclasses import dataclass, field

from flask import Blueprint, flash, g, redirect, render_template, request, send_file, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from marshmallow import ValidationError

from core.auth import current_user, require_login, require_roles
from core.errors import AppError, Forbidden, NotFound
from core.http import file_download
from core.identifiers import whole_number
from core.models import Role
from core.money import format_yuan, parse_yuan
from core.navigation import register_nav
from core.village_registry import COUNTIES
from shop import cart as bulk_cart
from shop import approval, documents, inspection, ratings, services, settings, settlements, storefront
from shop.models import RATING_ASPECT_LABELS, RATING_ASPECTS
from shop.schemas import (CooperativeRatingSchema, DecisionSchema, InspectionSchema, OrderCreateSchema,
                          ProductReviewSchema, RefundCreateSchema, RefundDecisionSchema, SettlementIssueSchema,
                          SettlementPaySchema, ShipSchema, TransferConfirmSchema)
from shop.states import OrderStatus

bp = Blueprint("shop", __name__)

register_nav("shop.browse", "逛好物", order=10)
register_nav("shop.cart", "购物车", order=12)
register_nav("shop.my_orders", "我的订单", roles=(Role.CONSUMER, Role.CANTEEN_BUYER), order=14)
register_nav("shop.order_book", "合作社订单", roles=(Role.COOPERATIVE,), order=32)
register_nav("shop.finance_desk", "收款与退款", roles=(Role.FINANCE, Role.ADMIN), order=60)
register_nav("shop.settlement_index", "结算单", roles=settlements.READ_ROLES, order=62)

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
        if whole_number(str(key)) is not None and isinstance(value, int) and 0 < value <= services.CART_MAX_QUANTITY:
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
    """A quantity (or page number) from a form field, capped at the cart's maximum, or ``default``."""
    value = whole_number(raw)
    return default if value is None else min(value, services.CART_MAX_QUANTITY)


def _row_id(raw) -> int:
    """A row id from a form field, or 0 (names nothing) when it is not one."""
    return whole_number(raw) or 0


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
    reviews = ratings.product_reviews(product_id) if page.product.certificate_id else None
    return render_template("shop/product.html", page=page, product=page.product, reviews=reviews,
                           reviewer_name=ratings.public_reviewer_name)


# ---------------------------------------------------------------- cart and checkout

@bp.get("/cart")
def cart():
    """The cart, priced by the server, with anything that would stop the order."""
    return render_template("shop/cart.html", cart=storefront.price_cart(current_user(), _cart_quantities()))


@bp.post("/cart/add")
def cart_add():
    """Add a product to the cart (a guest's cart lives in a signed cookie)."""
    product_id = _row_id(request.form.get("product_id"))
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


@bp.post("/cart/import")
@require_login
def cart_import():
    """Add a pasted or uploaded purchase list (product id or GTIN, quantity per line) to the cart."""
    upload = request.files.get("file")
    text = request.form.get("lines", "")
    if upload is not None and upload.filename:
        raw = upload.read(bulk_cart.MAX_TEXT * 4 + 1)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("gb18030", errors="replace")  # Excel on Chinese Windows saves CSV as GBK
    try:
        fill = bulk_cart.import_lines(current_user(), text)
    except AppError as exc:
        flash(exc.message)
        return redirect(url_for("shop.cart"))
    _flash_fill(fill)
    return redirect(url_for("shop.cart"))


@bp.post("/orders/<int:order_id>/reorder")
@require_login
def reorder(order_id: int):
    """再来一单: the order's products back in the cart, at today's prices and stock."""
    _flash_fill(bulk_cart.reorder(current_user(), order_id))
    return redirect(url_for("shop.cart"))


def _flash_fill(fill) -> None:
    """Say what a bulk fill added and what it left out."""
    if fill.added:
        flash(f"已加入购物车：{len(fill.added)} 种产品（价格与库存以结算时为准）")
    for reason in fill.skipped[:20]:
        flash(f"未加入：{reason}")
    if len(fill.skipped) > 20:
        flash(f"另有 {len(fill.skipped) - 20} 行未加入")


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
            "delivery_date": form.get("delivery_date") or None,
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
                           user=user, bank_account=settings.bank_transfer_account() if canteen else None), status


def _to_payment(order):
    """Send the buyer to pay: the simulated checkout, Stripe, or transfer instructions."""
    if order.payment_provider == "sandbox":
        return redirect(url_for("shop.sandbox_checkout", session_id=order.checkout_session_id))
    if order.payment_provider == "stripe":
        return redirect(order.checkout_url)
    if settings.bank_transfer_account() is None:
        flash("订单已提交。平台尚未配置对公收款账户，请暂勿转账，并联系平台财务人员获取账户。")
    else:
        flash("订单已提交，请按页面上的账户信息对公转账（附言填写订单号），财务确认到账后即安排发货。")
    return redirect(url_for("shop.order_detail", order_id=order.id))


@bp.route("/pay/sandbox/<session_id>", methods=["GET", "POST"])
@require_login
def sandbox_checkout(session_id: str):
    """The clearly labelled offline checkout (demo only, its buyer only): paying here sends a
    signed event to the real webhook code."""
    order = services.sandbox_order(current_user(), session_id)
    if request.method == "POST":
        order = services.pay_in_sandbox(current_user(), session_id)
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
                           pages=max(1, -(-total // PER_PAGE)),
                           awaiting_approval=len(approval.waiting_for(user)) if user.is_approver else None)


@bp.get("/orders/<int:order_id>")
@require_login
def order_detail(order_id: int):
    """One order: the buyer's, finance's and admins' full view, or a cooperative's own part."""
    return _order_page(order_id)


def _order_page(order_id: int, failed: "FormFailure | None" = None, status: int = 200):
    """Render an order as the caller may see it, with a refused action's message if any.

    :raise NotFound: not visible to the caller.
    """
    user = current_user()
    order, scope = services.get_order(user, order_id)
    lines = [line for line in order.lines if scope is None or line.cooperative_id == scope]
    fulfilments = [f for f in order.fulfilments if scope is None or f.cooperative_id == scope]
    bank_account = settings.bank_transfer_account() if order.payment_method == "bank_transfer" else None
    is_buyer = order.buyer_id == user.id
    given_ratings, given_reviews = ratings.given_on(order) if is_buyer and order.completed_at else ({}, {})
    return render_template("shop/order.html", order=order, scope=scope, lines=lines, fulfilments=fulfilments,
                           is_buyer=is_buyer, just_paid=request.args.get("paid") == "1",
                           finance=user.has_role(Role.FINANCE, Role.ADMIN), user=user,
                           refundable=services.refundable(order), bank_account=bank_account,
                           documents=documents.available_documents(user, order), failed=failed,
                           can_approve=approval.can_decide(user, order),
                           can_inspect=inspection.can_inspect(user, order),
                           given_ratings=given_ratings, given_reviews=given_reviews,
                           rating_aspects=[(a, RATING_ASPECT_LABELS[a]) for a in RATING_ASPECTS]), status


@bp.get("/orders/<int:order_id>/documents/<any(purchase_order, delivery_note, payment_receipt):kind>.pdf")
@require_login
def order_document(order_id: int, kind: str):
    """Download one of the order's PDF documents (issued on first request, then frozen)."""
    scope = whole_number(request.args.get("cooperative_id")) or 0
    document = documents.get_document(current_user(), order_id, kind, scope)
    return file_download(document.content, f"{document.label}-{document.number}.pdf", document.sha256)


# ---------------------------------------------------------------- order actions from forms

#: Per action: what a refusal is called, and the Chinese label and form input of each schema field.
#: The API keeps the schema's field names; only the pages speak in these labels.
ACTIONS = {
    "cancel": ("未能取消订单", {}),
    "receipt": ("未能确认收货", {}),
    "ship": ("未能标记发货", {"carrier": ("快递公司", "carrier"), "tracking_number": ("运单号", "tracking_number"),
                          "cooperative_id": ("合作社", "cooperative_id")}),
    "confirm_transfer": ("未能确认到账", {"amount_fen": ("到账金额", "amount_yuan"),
                                      "reference": ("流水号", "reference")}),
    "refund": ("未能退款", {"amount_fen": ("退款金额", "amount_yuan"), "reason": ("原因", "reason")}),
    "approval": ("未能提交审批意见", {"comment": ("审批意见", "comment"), "decision": ("审批结果", "decision")}),
    "inspection": ("未能提交验货结果", {"note": ("问题说明", "note"), "photo": ("照片", "photo")}),
    "refund_retry": ("未能确认退款结果", {}),
    "refund_request": ("未能处理退款申请", {"comment": ("处理说明", "comment"), "decision": ("处理结果", "decision")}),
    "rating": ("未能提交评价", {aspect: (label, aspect) for aspect, label in RATING_ASPECT_LABELS.items()}
               | {"comment": ("评价内容", "comment"), "cooperative_id": ("合作社", "cooperative_id")}),
    "review": ("未能提交商品评价", {"rating": ("评分", "rating"), "comment": ("评价内容", "comment"),
                                "product_id": ("商品", "product_id")}),
}


@dataclass
class FormFailure:
    """A refused order action, as the page shows it: a sentence leading the page, sentences under
    the fields (keyed by form input name) and what was typed, so nothing has to be retyped."""

    order_id: int
    action: str
    message: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    #: Named on pages listing many orders.
    order_number: str = ""


class _FormInvalid(Exception):
    """Form input refused before the service was called; ``fields`` are page sentences by input name."""

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__(fields)
        self.fields = fields


def _field_sentence(label: str, typed: str, message) -> str:
    """One Chinese sentence about a field: "请填写原因" when empty, else the label and why."""
    if not typed.strip():
        return f"请填写{label}"
    text = "；".join(message) if isinstance(message, list) else str(message)
    return text if text.startswith(label) else f"{label}：{text}"


def _failure(order_id: int, action: str, exc: Exception) -> FormFailure:
    """Turn a refused action into what the page shows: Chinese labels and sentences, never field
    names, Python lists or fen."""
    refused, labels = ACTIONS[action]
    # Everything typed goes back (the 验货 form has inputs per product, not listed in ACTIONS).
    values = {name: request.form.get(name, "") for _, name in labels.values()}
    values.update((name, value) for name, value in request.form.items() if name != "csrf_token")
    if isinstance(exc, _FormInvalid):
        return FormFailure(order_id, action, f"{refused}，请更正下面标出的内容。", exc.fields, values)
    fields: dict[str, list[str]] = {}
    if isinstance(exc, ValidationError):
        for key, message in exc.messages.items():
            label, name = labels.get(key, ("输入", key))
            fields.setdefault(name, []).append(_field_sentence(label, values.get(name, ""), message))
        return FormFailure(order_id, action, f"{refused}，请更正下面标出的内容。", fields, values)
    for key, messages in exc.fields.items():
        # A service's reason already reads as the rest of a sentence ("须等于订单应付金额 ¥1,180.00").
        label, name = labels.get(key, ("", key))
        fields.setdefault(name, []).extend(f"{label}{text}" for text in messages)
    return FormFailure(order_id, action, exc.message, fields, values)


def _act(order_id: int, action_name: str, action, success: str):
    """Run an order action from a form: on success flash and go back (PRG); when refused, show the
    same page again (answering 422/409) with the reason, and the typed values kept.

    :raise NotFound, Forbidden: the caller may not see or act on this order (error page).
    """
    try:
        action()
    except (ValidationError, _FormInvalid) as exc:
        return _back_with(order_id, _failure(order_id, action_name, exc), 422)
    except (NotFound, Forbidden):
        raise
    except AppError as exc:
        return _back_with(order_id, _failure(order_id, action_name, exc), exc.status)
    flash(success)
    target = request.form.get("next")
    if target not in ("book", "finance"):
        return redirect(url_for("shop.order_detail", order_id=order_id))
    return redirect(url_for("shop.order_book" if target == "book" else "shop.finance_desk"))


def _back_with(order_id: int, failed: FormFailure, status: int):
    """Render the page the form was on (finance desk, order book or the order) with the failure.
    Each page is only rendered for those allowed to see it; anyone else gets the order page."""
    user = current_user()
    target = request.form.get("next")
    if target in ("finance", "book"):
        failed.order_number = services.get_order(user, order_id)[0].number
    if target == "finance" and user.has_role(Role.FINANCE, Role.ADMIN):
        return _finance_page(failed), status
    if target == "book" and user.has_role(Role.COOPERATIVE):
        return _order_book_page(failed), status
    return _order_page(order_id, failed, status)


@bp.post("/orders/<int:order_id>/cancel")
@require_login
def cancel(order_id: int):
    """The buyer cancels an unpaid order."""
    return _act(order_id, "cancel", lambda: services.cancel_order(current_user(), order_id),
                "订单已取消，库存已释放")


@bp.post("/orders/<int:order_id>/receipt")
@require_login
def confirm_receipt(order_id: int):
    """The buyer confirms receipt."""
    return _act(order_id, "receipt", lambda: services.confirm_receipt(current_user(), order_id),
                "已确认收货，感谢支持脱贫村")


@bp.post("/orders/<int:order_id>/ship")
@require_roles(Role.COOPERATIVE, Role.ADMIN)
def ship(order_id: int):
    """A cooperative marks its part shipped with a tracking number."""
    def action():
        """Load the form and call the service."""
        data = ShipSchema().load({"carrier": request.form.get("carrier", "").strip(),
                                  "tracking_number": request.form.get("tracking_number", "").strip(),
                                  "cooperative_id": _row_id(request.form.get("cooperative_id")) or None})
        services.ship_part(current_user(), order_id, data)
    return _act(order_id, "ship", action, "已标记发货")


@bp.post("/orders/<int:order_id>/confirm-transfer")
@require_roles(Role.FINANCE)
def confirm_transfer(order_id: int):
    """Finance confirms a bank transfer."""
    def action():
        """Load the form and call the service."""
        data = _load_money_form(TransferConfirmSchema(), "confirm_transfer", "reference")
        services.confirm_transfer(current_user(), order_id, data)
    return _act(order_id, "confirm_transfer", action, "已确认到账，订单已付款")


@bp.post("/orders/<int:order_id>/refund")
@require_roles(Role.FINANCE, Role.ADMIN)
def refund(order_id: int):
    """Finance or an admin refunds part or all of a paid order."""
    def action():
        """Load the form and call the service."""
        data = _load_money_form(RefundCreateSchema(), "refund", "reason")
        services.refund_order(current_user(), order_id, data)
    return _act(order_id, "refund", action, "退款已完成")


def _load_money_form(schema, action: str, text_field: str) -> dict:
    """Load a form of a yuan amount ("1,180.50") and one text field through ``schema``.

    The amount is read here because people type yuan while the schema takes fen: the schema's
    "必须是整数" would be wrong about what they typed.

    :raise _FormInvalid: one Chinese sentence per wrong input, keyed by input name.
    """
    labels = ACTIONS[action][1]
    amount_label, text_label = labels["amount_fen"][0], labels[text_field][0]
    raw_amount = request.form.get("amount_yuan", "")
    text = request.form.get(text_field, "").strip()
    fen = parse_yuan(raw_amount)
    try:
        return schema.load({"amount_fen": fen if fen is not None else raw_amount, text_field: text})
    except ValidationError as exc:
        problems = {}
        if not raw_amount.strip():
            problems["amount_yuan"] = [f"请填写{amount_label}"]
        elif fen is None:
            problems["amount_yuan"] = [f"{amount_label}请填写以元为单位的数字，如 1180 或 1180.50"]
        elif "amount_fen" in exc.messages:
            problems["amount_yuan"] = [f"{amount_label}须大于 {format_yuan(0)}"]
        if text_field in exc.messages:
            problems[text_field] = [_field_sentence(text_label, text, exc.messages[text_field])]
        raise _FormInvalid(problems) from exc


@bp.post("/orders/<int:order_id>/approval")
@require_roles(Role.CANTEEN_BUYER)
def decide_approval(order_id: int):
    """The unit's approver approves or rejects an order waiting for internal approval."""
    def action():
        data = DecisionSchema().load({"decision": request.form.get("decision", ""),
                                      "comment": request.form.get("comment", "").strip()})
        approval.decide(current_user(), order_id, data)
    done = "已通过内部审批" if request.form.get("decision") == "approve" else "已驳回，订单已取消、库存已释放"
    return _act(order_id, "approval", action, done)


@bp.post("/orders/<int:order_id>/inspection")
@require_login
def record_inspection(order_id: int):
    """The buyer's 验货 form: received and refused quantities per product, a note, a photo."""
    def action():
        order, _ = services.get_order(current_user(), order_id)
        product_ids = [line.product_id for line in order.lines]
        typed = {pid: (request.form.get(f"received_{pid}", ""), request.form.get(f"rejected_{pid}", "0") or "0")
                 for pid in product_ids}
        problems = {}
        for pid, (received, rejected) in typed.items():
            for name, raw in ((f"received_{pid}", received), (f"rejected_{pid}", rejected)):
                if whole_number(raw, maximum=10_000_000) is None:
                    problems[name] = ["请填写 0 或正整数"]
        if problems:
            raise _FormInvalid(problems)
        lines = [{"product_id": pid, "received_quantity": whole_number(received, maximum=10_000_000),
                  "rejected_quantity": whole_number(rejected, maximum=10_000_000),
                  "note": request.form.get(f"note_{pid}", "").strip()[:300]}
                 for pid, (received, rejected) in typed.items()]
        data = InspectionSchema().load({"lines": lines, "note": request.form.get("note", "").strip()})
        upload = request.files.get("photo")
        photo = upload.read() if upload and upload.filename else None
        try:
            inspection.record_inspection(current_user(), order_id, data, photo=photo)
        except AppError as exc:
            raise _FormInvalid(_inspection_sentences(exc, product_ids)) if exc.fields else exc
    return _act(order_id, "inspection", action, "验货结果已提交")


def _inspection_sentences(exc: AppError, product_ids: list[int]) -> dict[str, list[str]]:
    """The service's ``lines.N.field`` errors as sentences under the form's per-product inputs."""
    problems: dict[str, list[str]] = {}
    for index, messages in (exc.fields.get("lines") or {}).items():
        if index == "_missing":
            problems.setdefault("note", []).extend(messages)
            continue
        pid = product_ids[int(index)]
        for name, texts in messages.items():
            short = {"received_quantity": "received", "rejected_quantity": "rejected"}.get(name, "note")
            problems.setdefault(f"{short}_{pid}", []).extend(texts)
    for name in ("note", "photo"):
        if name in exc.fields:
            problems.setdefault(name, []).extend(exc.fields[name])
    return problems or {"note": [exc.message]}


@bp.get("/orders/<int:order_id>/inspection-photo.jpg")
@require_login
def inspection_photo(order_id: int):
    """The photo the buyer attached to its 验货 (those who may see the order)."""
    response = send_file(inspection.photo_path(current_user(), order_id), mimetype="image/jpeg", max_age=0)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.post("/finance/refunds/<int:intent_id>/retry")
@require_roles(Role.FINANCE, Role.ADMIN)
def retry_refund(intent_id: int):
    """Finance asks the payment provider again about a refund whose outcome was not confirmed."""
    order_id = services.refund_intent_order_id(intent_id)
    return _act(order_id, "refund_retry", lambda: services.retry_refund(current_user(), intent_id), "退款已确认完成")


@bp.post("/refund-requests/<int:request_id>/decision")
@require_roles(Role.FINANCE, Role.ADMIN)
def decide_refund_request(request_id: int):
    """Finance refunds or declines a 验货 refund request (from the order page or the finance desk)."""
    order_id = inspection.order_id_of_request(request_id)

    def action():
        data = RefundDecisionSchema().load({"decision": request.form.get("decision", ""),
                                            "comment": request.form.get("comment", "").strip()})
        inspection.decide_refund_request(current_user(), request_id, data)
    done = "已按验货短缺退款" if request.form.get("decision") == "refund" else "已不予退款"
    return _act(order_id, "refund_request", action, done)


@bp.post("/orders/<int:order_id>/ratings")
@require_login
def rate_cooperative(order_id: int):
    """履约评价 form: 1-5 on quality, delivery and service for one cooperative of the order."""
    def action():
        data = {aspect: _mark(request.form.get(aspect)) for aspect in RATING_ASPECTS}
        data.update(cooperative_id=_row_id(request.form.get("cooperative_id")),
                    comment=request.form.get("comment", "").strip())
        ratings.rate_cooperative(current_user(), order_id, CooperativeRatingSchema().load(data))
    return _act(order_id, "rating", action, "感谢评价，合作社和审核部门都能看到")


@bp.post("/orders/<int:order_id>/reviews")
@require_login
def review_product(order_id: int):
    """A product review from the order page."""
    def action():
        data = {"product_id": _row_id(request.form.get("product_id")), "rating": _mark(request.form.get("rating")),
                "comment": request.form.get("comment", "").strip()}
        ratings.review_product(current_user(), order_id, ProductReviewSchema().load(data))
    return _act(order_id, "review", action, "感谢评价")


def _mark(raw) -> int | str:
    """A 1-5 mark from a form (what was typed passes on, so the schema names the problem)."""
    value = whole_number(raw or "", maximum=5)
    return value if value is not None else (raw or "")


@bp.get("/cooperatives/<int:cooperative_id>/ratings")
@require_login
def cooperative_ratings(cooperative_id: int):
    """A cooperative's 履约评价, for its members and reviewers."""
    summary = ratings.cooperative_ratings(current_user(), cooperative_id)
    return render_template("shop/cooperative_ratings.html", summary=summary,
                           aspects=[(a, RATING_ASPECT_LABELS[a]) for a in RATING_ASPECTS])


@bp.get("/canteen/approvals")
@require_roles(Role.CANTEEN_BUYER)
def approvals():
    """An approver's to-do list: its unit's orders waiting for internal approval."""
    return render_template("shop/approvals.html", orders=approval.waiting_for(current_user()))


@bp.get("/cooperative/orders")
@require_roles(Role.COOPERATIVE)
def order_book():
    """The cooperative's order book: its paid lines, those to ship first."""
    return _order_book_page()


def _order_book_page(failed: FormFailure | None = None):
    """Render the caller's order book, with a refused shipment's message if any."""
    user = current_user()
    return render_template("shop/order_book.html", book=services.cooperative_order_book(user),
                           cooperative=storefront.cooperative_name(user.cooperative_id), failed=failed)


@bp.get("/finance/orders")
@require_roles(Role.FINANCE, Role.ADMIN)
def finance_desk():
    """Payments awaiting confirmation, recent payments, refunds and payment alerts."""
    return _finance_page()


def _finance_page(failed: FormFailure | None = None):
    """Render the finance desk, with a refused confirmation's message if any."""
    return render_template("shop/finance.html", **services.finance_overview(),
                           refund_requests=inspection.open_refund_requests(),
                           refused_days=services.REFUSED_REFUNDS_SHOWN_DAYS,
                           can_confirm=current_user().has_role(Role.FINANCE), failed=failed)



# ---------------------------------------------------------------- settlement (结算)

def _form_problem(exc: Exception) -> str:
    """One Chinese sentence for a refused settlement form (schema or service)."""
    if isinstance(exc, ValidationError):
        labels = {"period": "结算期", "bank_reference": "银行流水号", "paid_on": "付款日期", "cooperative_id": "合作社"}
        return "；".join(f"{labels.get(name, name)}{'、'.join(map(str, messages if isinstance(messages, list) else [messages]))}"
                        for name, messages in exc.messages.items())
    return exc.message


@bp.get("/settlements")
@require_roles(*settlements.READ_ROLES)
def settlement_index():
    """The settlement desk (finance, admin; officials read) or a cooperative's own statements."""
    return _settlement_index_page()


def _settlement_index_page(error: str | None = None, values: dict | None = None):
    user = current_user()
    period = request.args.get("period") or None
    if period and not settlements.re_period_ok(period):
        period = None
    statements, total = settlements.list_statements(user, period=period, limit=200)
    return render_template("shop/settlements.html", statements=statements, total=total, period=period,
                           manage=user.has_role(*settlements.SETTLEMENT_MANAGERS), error=error, values=values or {},
                           period_label=settlements.period_label, **settlements.settlement_overview())


@bp.post("/settlements/issue")
@require_roles(*settlements.SETTLEMENT_MANAGERS)
def settlement_issue():
    """Finance issues the statements of a period for every cooperative with something to settle."""
    values = {"period": request.form.get("period", "").strip()}
    try:
        data = SettlementIssueSchema().load(values)
        issued = settlements.issue_statements(current_user(), data["period"])
    except (ValidationError, AppError) as exc:
        if isinstance(exc, (NotFound, Forbidden)):
            raise
        return _settlement_index_page(_form_problem(exc), values), getattr(exc, "status", 422)
    if issued:
        flash(f"已出具 {len(issued)} 份{settlements.period_label(data['period'])}结算单")
    else:
        flash(f"{settlements.period_label(data['period'])}没有待结算的款项，未出具结算单")
    return redirect(url_for("shop.settlement_index"))


@bp.get("/settlements/<int:statement_id>")
@require_roles(*settlements.READ_ROLES)
def settlement_detail(statement_id: int):
    """One statement with its frozen lines; finance records its payment here."""
    return _settlement_page(statement_id)


def _settlement_page(statement_id: int, error: str | None = None, values: dict | None = None):
    user = current_user()
    statement = settlements.get_statement(user, statement_id)
    return render_template("shop/settlement.html", statement=statement,
                           manage=user.has_role(*settlements.SETTLEMENT_MANAGERS),
                           period_label=settlements.period_label, error=error, values=values or {},
                           nothing_to_pay_text=settlements.nothing_to_pay_text)


@bp.post("/settlements/<int:statement_id>/pay")
@require_roles(*settlements.SETTLEMENT_MANAGERS)
def settlement_pay(statement_id: int):
    """Finance records the bank transfer that paid a statement."""
    values = {"bank_reference": request.form.get("bank_reference", "").strip(),
              "paid_on": request.form.get("paid_on", "").strip() or None}
    try:
        data = SettlementPaySchema().load(values)
        settlements.pay_statement(current_user(), statement_id, data)
    except (ValidationError, AppError) as exc:
        if isinstance(exc, (NotFound, Forbidden)):
            raise
        return _settlement_page(statement_id, _form_problem(exc), values), getattr(exc, "status", 422)
    flash("已登记付款")
    return redirect(url_for("shop.settlement_detail", statement_id=statement_id))


@bp.get("/settlements/<int:statement_id>/statement.<any(csv, xlsx):extension>")
@require_roles(*settlements.READ_ROLES)
def settlement_download(statement_id: int, extension: str):
    """The statement as CSV or XLSX (its content digest in ``X-Statement-SHA256``)."""
    statement = settlements.get_statement(current_user(), statement_id)
    return settlements.statement_download(statement, extension)
