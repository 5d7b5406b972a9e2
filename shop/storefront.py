"""Read-only queries behind the storefront pages: featured products and villages, browsing,
the product page, and the cart priced by the server. Nothing here writes.
"""
from dataclasses import dataclass, field

import sqlalchemy as sa

from certification.gate import is_sellable, sellable_clause
from certification.models import CATEGORY_LABELS, Product, product_villages
from core.errors import NotFound
from core.extensions import db
from core.models import Cooperative, Role, User, Village
from core.timeutil import shanghai_today
from shop.sales import villages_sales_fen
from shop.services import unit_price_fen
from traceability.models import Batch
from traceability.services import available_quantities


@dataclass
class VillageProgress:
    """A village's sales this Shanghai year against its target."""

    village: Village
    sales_fen: int
    target_fen: int

    @property
    def progress(self) -> float:
        """sales / target as a ratio (1.0 = target met)."""
        return self.sales_fen / self.target_fen if self.target_fen else 1.0

    @property
    def percent(self) -> int:
        """Progress for a bar, capped at 100."""
        return min(100, int(self.progress * 100))


def village_progress(villages, year: int | None = None) -> list[VillageProgress]:
    """Sales and target of each village for a Shanghai year (this year by default)."""
    year = year or shanghai_today().year
    villages = list(villages)
    sales = villages_sales_fen([v.id for v in villages], year)
    return [VillageProgress(v, sales[v.id], v.target_for(year)) for v in villages]


def _browse_query(category: str | None = None, county: str | None = None):
    """Sellable products, optionally of one category or made in one county (any origin village)."""
    query = sa.select(Product).where(sellable_clause())
    if category:
        query = query.where(Product.category == category)
    if county:
        query = query.where(Product.id.in_(
            sa.select(product_villages.c.product_id)
            .join(Village, Village.id == product_villages.c.village_id).where(Village.county == county)))
    return query


def browse(category: str | None, county: str | None, offset: int, limit: int) -> tuple[list[Product], int, dict]:
    """One page of sellable products (in stock first, newest first), the total, and stock per product."""
    query = _browse_query(category, county)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery()))
    today = shanghai_today()
    in_stock = sa.exists().where(Batch.product_id == Product.id, Batch.available_quantity > 0,
                                 sa.or_(Batch.expires_on.is_(None), Batch.expires_on >= today))
    page = list(db.session.scalars(
        query.order_by(sa.case((in_stock, 0), else_=1), Product.id.desc()).offset(offset).limit(limit)).unique())
    return page, int(total or 0), available_quantities([p.id for p in page])


def featured_products(limit: int = 8) -> tuple[list[Product], dict]:
    """Newest sellable products that have stock, for the home page."""
    products = list(db.session.scalars(_browse_query().order_by(Product.id.desc()).limit(limit * 4)).unique())
    stock = available_quantities([p.id for p in products])
    return [p for p in products if stock[p.id] > 0][:limit], stock


def featured_villages(limit: int = 6) -> list[VillageProgress]:
    """Origin villages of products on sale, furthest from this year's target first (buy to help them)."""
    village_ids = db.session.scalars(
        sa.select(product_villages.c.village_id).distinct()
        .where(product_villages.c.product_id.in_(sa.select(Product.id).where(sellable_clause()))))
    villages = list(db.session.scalars(sa.select(Village).where(Village.id.in_(list(village_ids)))))
    ranked = sorted(village_progress(villages), key=lambda vp: (vp.progress, vp.village.id))
    return ranked[:limit]


@dataclass
class ProductPage:
    """Everything the product page shows."""

    product: Product
    sellable: bool
    available: int
    villages: list[VillageProgress]
    certificate: object | None
    canteen_buyer: bool = False


def product_page(viewer: User | None, product_id: int) -> ProductPage:
    """The product page: anyone while sellable; its cooperative and admins always.

    :raise NotFound: absent, or not sellable and the viewer is not its cooperative or an admin.
    """
    product = db.session.get(Product, product_id)
    if product is None:
        raise NotFound("产品不存在")
    sellable = is_sellable(product)
    insider = viewer is not None and (viewer.has_role(Role.ADMIN) or (
        viewer.has_role(Role.COOPERATIVE) and viewer.cooperative_id == product.cooperative_id))
    if not sellable and not insider:
        raise NotFound("产品不存在或当前不可销售")
    return ProductPage(product=product, sellable=sellable,
                       available=available_quantities([product.id])[product.id],
                       villages=village_progress(product.villages), certificate=product.certificate,
                       canteen_buyer=viewer is not None and viewer.has_role(Role.CANTEEN_BUYER))


@dataclass
class CartLine:
    """One cart line priced by the server, with what stands in the way of ordering it."""

    product: Product
    quantity: int
    unit_price_fen: int
    available: int
    problems: list[str] = field(default_factory=list)

    @property
    def line_total_fen(self) -> int:
        """Unit price × quantity."""
        return self.unit_price_fen * self.quantity


@dataclass
class Cart:
    """A priced cart: lines, total, and whether it can be ordered as it is."""

    lines: list[CartLine]

    @property
    def total_fen(self) -> int:
        """Sum of the line totals."""
        return sum(line.line_total_fen for line in self.lines)

    @property
    def orderable(self) -> bool:
        """True when the cart has lines and none has a problem."""
        return bool(self.lines) and not any(line.problems for line in self.lines)

    @property
    def count(self) -> int:
        """Number of units in the cart."""
        return sum(line.quantity for line in self.lines)


def price_cart(viewer: User | None, quantities: dict[int, int]) -> Cart:
    """Price a cart for this viewer (canteen tier prices for canteen buyers) and flag problems."""
    if not quantities:
        return Cart([])
    products = {p.id: p for p in db.session.scalars(sa.select(Product).where(Product.id.in_(list(quantities))))}
    stock = available_quantities(list(products))
    canteen = viewer is not None and viewer.has_role(Role.CANTEEN_BUYER)
    lines = []
    for product_id, quantity in quantities.items():
        product = products.get(product_id)
        if product is None:
            continue
        line = CartLine(product, quantity, unit_price_fen(product, quantity, canteen), stock[product_id])
        if not is_sellable(product):
            line.problems.append("该产品当前不可销售，请移出购物车")
        elif stock[product_id] < quantity:
            line.problems.append(f"库存不足，当前可售 {stock[product_id]}{product.unit}")
        if canteen and product.bulk_moq and quantity < product.bulk_moq:
            line.problems.append(f"机关食堂起订量为 {product.bulk_moq}{product.unit}")
        lines.append(line)
    return Cart(lines)


def counties_with_products() -> list[str]:
    """Counties that have a product on sale, for the browse filter."""
    return list(db.session.scalars(
        sa.select(Village.county).distinct()
        .join(product_villages, product_villages.c.village_id == Village.id)
        .where(product_villages.c.product_id.in_(sa.select(Product.id).where(sellable_clause())))
        .order_by(Village.county)))


CATEGORIES = CATEGORY_LABELS


def cooperative_name(cooperative_id: int) -> str:
    """A cooperative's name (for page headings)."""
    cooperative = db.session.get(Cooperative, cooperative_id)
    return cooperative.name if cooperative else ""
