"""Kernel HTML pages: home, sign-in, registration, the village registry by county, cooperatives
and the administrators' budget units (预算单位)."""
import re

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from marshmallow import ValidationError

from core import budget_units, cooperatives, users, villages
from core.auth import current_user, login_session, require_roles
from core.extensions import db
from core.models import Role, Village
from core.errors import AppError
from core.ratelimit import rate_limited
from core.timeutil import shanghai_today
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


# ---------------------------------------------------------------- budget units (administrators)

bp.add_app_template_filter(budget_units.share_percent, "share_percent")

#: A yuan amount as people type it: digits, at most two decimals (separators and ¥/元 are dropped).
_YUAN = re.compile(r"^(-?)(\d{1,16})(?:\.(\d{1,2}))?$")


def _yuan_to_fen(text: str) -> int | None:
    """Parse a yuan amount typed on a form ("1,200,000.5") into integer fen; None if it is not one.

    A leading minus is kept so the schema answers "不能为负数" rather than "not a number".
    """
    cleaned = re.sub(r"[\s,，¥￥元]", "", text or "")
    match = _YUAN.match(cleaned)
    if not match:
        return None
    sign, whole, cents = match.groups()
    fen = int(whole) * 100 + int((cents or "").ljust(2, "0"))
    return -fen if sign else fen


def _fen_to_yuan_text(fen: int) -> str:
    """Fen as a plain yuan figure for a form field (120000000 → "1200000.00"), no separators."""
    yuan, cents = divmod(int(fen), 100)
    return f"{yuan}.{cents:02d}"


def _budget_unit_form() -> tuple[dict, dict]:
    """Read the budget unit form into the service's input (budget in fen) and the errors found so far."""
    form = request.form
    data = {"name": form.get("name", "").strip(), "reserved_share": form.get("reserved_share", "").strip()}
    if form.get("reason", "").strip():
        data["reason"] = form["reason"].strip()
    fen = _yuan_to_fen(form.get("annual_canteen_budget_yuan", ""))
    if fen is None:
        # Not sent to the service; the other fields are still checked so every error shows at once.
        errors = {**budget_units.input_errors(data, partial=True),
                  "annual_canteen_budget_fen": ["请输入以元为单位的金额，如 1200000 或 1200000.50（最多两位小数）"]}
        return data, errors
    data["annual_canteen_budget_fen"] = fen
    return data, {}


def _saved_message(unit) -> str:
    """The flash after a save, warning when the share is below the policy's 10%."""
    message = f"已保存：{unit.name}"
    if budget_units.below_policy_minimum(unit):
        message += (f"。注意：预留比例 {budget_units.share_percent(unit.reserved_share)} 低于政策要求的"
                    f" {budget_units.share_percent(budget_units.POLICY_MIN_SHARE)}（财库〔2021〕19号）")
    return message


def _form_errors(exc: AppError) -> dict:
    """A service error as field errors; a duplicate name belongs to the name field."""
    return exc.fields or {"name" if exc.code == "duplicate_budget_unit" else "_": [exc.message]}


@bp.get("/budget-units")
@require_roles(Role.ADMIN)
def budget_unit_index():
    """Every budget unit with this Shanghai year's reserved-share progress, for administrators."""
    # Progress is counted from paid canteen orders, which the reports own; imported here (as
    # home() imports the storefront) so the kernel does not depend on shop at import time.
    from shop.reports.services import report_reserved_shares

    overview = report_reserved_shares(current_user(), shanghai_today().year)
    units = sorted(overview["items"], key=lambda item: (item["name"], item["budget_unit_id"]))
    return render_template("canteen/units.html", overview=overview, units=units)


@bp.route("/budget-units/new", methods=["GET", "POST"])
@require_roles(Role.ADMIN)
def budget_unit_new():
    """Register a budget unit: name, annual canteen food budget (yuan on the form) and reserved share."""
    errors: dict = {}
    form = request.form if request.method == "POST" else {"reserved_share": "0.10"}
    if request.method == "POST":
        data, errors = _budget_unit_form()
        if not errors:
            try:
                unit = budget_units.create_budget_unit(current_user(), data)
            except AppError as exc:
                errors = _form_errors(exc)
            else:
                flash(_saved_message(unit))
                return redirect(url_for("core.budget_unit_index"))
    return render_template("canteen/unit_form.html", unit=None, form=form, errors=errors,
                           policy_min_share=budget_units.POLICY_MIN_SHARE), (422 if errors else 200)


@bp.route("/budget-units/<int:unit_id>/edit", methods=["GET", "POST"])
@require_roles(Role.ADMIN)
def budget_unit_edit(unit_id: int):
    """Change a unit's name, budget or reserved share; every change is audited old → new."""
    user = current_user()
    unit = budget_units.get_budget_unit_for(user, unit_id)
    errors: dict = {}
    form = request.form
    if request.method == "GET":
        values = budget_units.editable_values(unit)
        form = {"name": values["name"], "reserved_share": values["reserved_share"],
                "annual_canteen_budget_yuan": _fen_to_yuan_text(values["annual_canteen_budget_fen"])}
    else:
        data, errors = _budget_unit_form()
        if not errors:
            try:
                unit = budget_units.update_budget_unit(user, unit_id, data)
            except AppError as exc:
                errors = _form_errors(exc)
            else:
                flash(_saved_message(unit))
                return redirect(url_for("core.budget_unit_index"))
    return render_template("canteen/unit_form.html", unit=unit, form=form, errors=errors,
                           history=budget_units.unit_history(unit), field_labels=budget_units.FIELD_LABELS,
                           policy_min_share=budget_units.POLICY_MIN_SHARE), \
        (422 if errors else 200)


@bp.app_context_processor
def inject_user():
    """Make the signed-in user available to every template."""
    return {"current_user": current_user()}
