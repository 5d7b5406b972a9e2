"""Kernel HTML pages: home, sign-in, registration, the village registry by county."""
from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from marshmallow import ValidationError

from core import cooperatives, users, villages
from core.auth import current_user, login_session, require_roles
from core.extensions import db
from core.models import Role, Village
from core.errors import AppError
from core.ratelimit import rate_limited
from core.village_registry import COUNTIES, ZONE_LABELS

bp = Blueprint("core", __name__)


def _safe_next(target: str | None) -> str:
    """Return a local redirect target; anything else goes home (no open redirects)."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("core.home")


@bp.get("/")
def home():
    """Storefront home: the brand, the counties, and what each role can do next."""
    # The storefront blocks of home.html are the shop's: its template extends home.html.
    from shop.views import home_context

    return render_template("shop/home.html", counties=COUNTIES, **home_context())


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password (session cookie, CSRF-protected form)."""
    error = None
    if request.method == "POST":
        _check_sign_in_rate()
        try:
            user = users.authenticate(request.form.get("email", ""), request.form.get("password", ""))
        except AppError as exc:
            error = exc.message
        else:
            login_session(user)
            flash(f"欢迎，{user.display_name or user.email}")
            return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", error=error), (401 if error else 200)


@rate_limited("sign_in", 20)
def _check_sign_in_rate():
    """Share the API's sign-in limit with the login form."""


@bp.post("/logout")
def logout():
    """Sign out."""
    session.clear()
    flash("已退出登录")
    return redirect(url_for("core.home"))


@bp.route("/register", methods=["GET", "POST"])
def register():
    """Create a consumer account and sign in."""
    errors = {}
    if request.method == "POST":
        try:
            user = users.register_consumer(request.form.to_dict())
        except ValidationError as exc:
            errors = exc.messages
        except AppError as exc:
            errors = exc.fields or {"_": [exc.message]}
        else:
            login_session(user)
            flash("注册成功")
            return redirect(url_for("core.home"))
    return render_template("auth/register.html", errors=errors, form=request.form), (422 if errors else 200)


@bp.get("/villages")
def village_index():
    """The registry's counties with their village counts per zone."""
    return render_template("villages/index.html", counties=COUNTIES)


@bp.get("/villages/<county>")
def county_villages(county: str):
    """A county's townships and villages with their zones."""
    if county not in COUNTIES:
        abort(404)
    grouped = villages.townships_of(county)
    return render_template("villages/county.html", county=county, townships=grouped,
                           zone_labels=ZONE_LABELS, total=sum(len(v) for v in grouped.values()))


@bp.get("/cooperatives")
@require_roles(Role.ADMIN, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER)
def cooperative_index():
    """Cooperatives the reviewer or administrator manages."""
    return render_template("cooperatives/index.html",
                           cooperatives=cooperatives.cooperatives_visible_to(current_user()))


@bp.route("/cooperatives/new", methods=["GET", "POST"])
@require_roles(Role.ADMIN, Role.COUNTY_REVIEWER)
def cooperative_new():
    """Register a cooperative (a county reviewer in their own county)."""
    user = current_user()
    errors: dict = {}
    if request.method == "POST":
        form = request.form.to_dict()
        try:
            form["village_id"] = int(form.get("village_id") or 0)
        except ValueError:
            form["village_id"] = 0
        try:
            cooperative = cooperatives.register_cooperative(user, form)
        except ValidationError as exc:
            errors = exc.messages
        except AppError as exc:
            errors = exc.fields or {"_": [exc.message]}
        else:
            flash(f"已登记合作社：{cooperative.name}")
            return redirect(url_for("core.cooperative_detail", cooperative_id=cooperative.id))
    counties = (user.county,) if user.has_role(Role.COUNTY_REVIEWER) else COUNTIES
    village_choices = list(db.session.scalars(villages.filtered_villages().where(Village.county.in_(counties))))
    return render_template("cooperatives/new.html", errors=errors, form=request.form,
                           village_choices=village_choices), (422 if errors else 200)


@bp.get("/cooperatives/<int:cooperative_id>")
def cooperative_detail(cooperative_id: int):
    """A cooperative's public profile."""
    return render_template("cooperatives/detail.html", cooperative=cooperatives.get_cooperative(cooperative_id))


@bp.app_context_processor
def inject_user():
    """Make the signed-in user available to every template."""
    return {"current_user": current_user()}
