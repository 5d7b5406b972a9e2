"""履约评价 and product reviews.

After an order is completed (received, or inspected for a canteen) its buyer may rate each
cooperative that supplied it, 1-5 on quality, on-time delivery and service, with a comment;
the cooperative and its reviewers see the ratings, which is how a canteen's supplier record is
kept. A buyer may also review each product it received (1-5 and a comment), shown to everyone
on the product page. One rating per order and cooperative, one review per order and product.
"""
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from certification.models import Product
from core.audit import record_event
from core.db import unique_or_conflict
from core.errors import Conflict, Forbidden, NotFound
from core.extensions import db
from core.models import Cooperative, Role, User
from shop import services
from shop.models import RATING_ASPECTS, CooperativeRating, Order, ProductReview


def _completed_own_order(user: User, order_id: int) -> Order:
    """The caller's own completed order.

    :raise NotFound: not visible. :raise Forbidden: not the buyer. :raise Conflict: not completed.
    """
    order, _ = services.get_order(user, order_id)
    if order.buyer_id != user.id:
        raise Forbidden("只有下单人可以评价")
    if order.completed_at is None:
        raise Conflict("确认收货（验货）后才能评价", code="order_not_completed")
    return order


def rate_cooperative(user: User, order_id: int, data: dict) -> CooperativeRating:
    """The buyer rates one cooperative of its completed order (once).

    :raise NotFound: the cooperative did not supply this order (404).
    :raise Conflict: not completed, or already rated (409).
    """
    order = _completed_own_order(user, order_id)
    if data["cooperative_id"] not in {line.cooperative_id for line in order.lines}:
        raise NotFound("该合作社不是此订单的供货方")
    rating = CooperativeRating(order_id=order.id, cooperative_id=data["cooperative_id"], rater_id=user.id,
                               comment=data.get("comment", "").strip(),
                               **{aspect: data[aspect] for aspect in RATING_ASPECTS})
    if db.session.scalar(sa.select(CooperativeRating.id).where(CooperativeRating.order_id == order.id,
                                                               CooperativeRating.cooperative_id == rating.cooperative_id)):
        raise Conflict("已评价过该合作社", code="already_rated")
    with unique_or_conflict("已评价过该合作社", "already_rated"):
        db.session.add(rating)
        db.session.flush()
        record_event(subject_type="order", subject_id=order.id, action="cooperative_rated", actor=user,
                     from_state=order.status, to_state=order.status, comment=rating.comment,
                     data={"cooperative_id": rating.cooperative_id,
                           **{aspect: data[aspect] for aspect in RATING_ASPECTS}})
    return rating


def review_product(user: User, order_id: int, data: dict) -> ProductReview:
    """The buyer reviews one product of its completed order (once).

    :raise NotFound: the product is not in this order.
    :raise Conflict: not completed, or already reviewed (409).
    """
    order = _completed_own_order(user, order_id)
    if data["product_id"] not in {line.product_id for line in order.lines}:
        raise NotFound("该商品不在此订单中")
    if db.session.scalar(sa.select(ProductReview.id).where(ProductReview.order_id == order.id,
                                                           ProductReview.product_id == data["product_id"])):
        raise Conflict("已评价过该商品", code="already_reviewed")
    review = ProductReview(order_id=order.id, product_id=data["product_id"], reviewer_id=user.id,
                           rating=data["rating"], comment=data.get("comment", "").strip())
    with unique_or_conflict("已评价过该商品", "already_reviewed"):
        db.session.add(review)
    return review


def _average(total, count) -> str | None:
    """An average mark as a one-decimal string ("4.3"), exact (no float), or None without marks."""
    if not count:
        return None
    return str((Decimal(int(total)) / Decimal(int(count))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def may_see_cooperative_ratings(user: User | None, cooperative: Cooperative) -> bool:
    """Its own members, reviewers (a county reviewer: its county), officials and administrators."""
    if user is None:
        return False
    if user.has_role(Role.ADMIN, Role.PREFECTURE_REVIEWER, Role.OFFICIAL):
        return True
    if user.has_role(Role.COUNTY_REVIEWER):
        return user.county == cooperative.village.county
    return user.has_role(Role.COOPERATIVE) and user.cooperative_id == cooperative.id


def cooperative_ratings(user: User, cooperative_id: int, limit: int = 50) -> dict:
    """A cooperative's ratings: averages per aspect, how many, and the latest ones.

    :raise NotFound: no such cooperative, or the caller may not see its ratings.
    """
    cooperative = db.session.get(Cooperative, cooperative_id)
    if cooperative is None or not may_see_cooperative_ratings(user, cooperative):
        raise NotFound("合作社不存在")
    where = CooperativeRating.cooperative_id == cooperative_id
    row = db.session.execute(sa.select(sa.func.count(), *(sa.func.sum(getattr(CooperativeRating, a))
                                                          for a in RATING_ASPECTS)).where(where)).one()
    items = list(db.session.scalars(sa.select(CooperativeRating).where(where)
                                    .order_by(CooperativeRating.id.desc()).limit(limit)))
    return {"cooperative": cooperative, "count": int(row[0]),
            "averages": {aspect: _average(row[i + 1], row[0]) for i, aspect in enumerate(RATING_ASPECTS)},
            "items": items}


def product_reviews(product_id: int, limit: int = 20) -> dict:
    """A product's reviews for everyone: the average mark, how many, and the latest ones.

    :raise NotFound: no such product, or one never certified (never in the public catalogue).
    """
    product = db.session.get(Product, product_id)
    if product is None or product.certificate_id is None:
        raise NotFound("产品不存在")
    where = ProductReview.product_id == product_id
    count, total = db.session.execute(sa.select(sa.func.count(), sa.func.sum(ProductReview.rating)).where(where)).one()
    items = list(db.session.scalars(sa.select(ProductReview).where(where)
                                    .order_by(ProductReview.id.desc()).limit(limit)))
    return {"count": int(count), "average": _average(total, count), "items": items}


def given_on(order: Order) -> tuple[dict[int, CooperativeRating], dict[int, ProductReview]]:
    """What the order's buyer already rated: by cooperative id, and by product id."""
    ratings = {r.cooperative_id: r for r in db.session.scalars(
        sa.select(CooperativeRating).where(CooperativeRating.order_id == order.id))}
    reviews = {r.product_id: r for r in db.session.scalars(
        sa.select(ProductReview).where(ProductReview.order_id == order.id))}
    return ratings, reviews


def public_reviewer_name(user: User) -> str:
    """How a reviewer is shown to the public: the first character and stars ("张**")."""
    name = (user.display_name or "").strip() or "用户"
    return name[0] + "**"
