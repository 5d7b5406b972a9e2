"""Kernel HTML pages: home, sign-in, registration, the village registry by county and the
villages' sales targets, cooperatives and the administrators' budget units (预算单位)."""
import unicodedata
from decimal import Decimal, InvalidOperation
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, session, url_for
from marshmallow import ValidationError

from core import budget_units, cooperatives, password_reset, users, village_targets, villages
from core.auth import current_user, login_session, remember_device, require_roles
from core.extensions import db
from core.identifiers import whole_number
from core.models import Role, Village
from core.money import format_yuan, parse_yuan
from core.errors import AppError, RateLimited, Unauthorized
from core.ratelimit import rate_limited
from core.schemas import PasswordResetRequestSchema
from core.timeutil import shanghai_today
from core.village_registry import COUNTIES, ZONE_LABELS

bp = Blueprint("core", __name__)


def _safe_next(target: str | None) -> str:
    """Return ``target`` when it is a path on this site, else the home page (no open redirects).

    Browsers drop tabs and newlines inside URLs and read ``\\`` as ``/``, so ``/%09/evil.example``
    (a tab) or ``/%5Cevil.example`` would leave the site: any control, space-like or format character,
    or a backslash, refuses the target, as does anything that parses with a scheme or a host.
    """
    home = url_for("core.home")
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return home
    if "\\" in target or any(unicodedata.category(char)[0] in "CZ" for char in target):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return home
    return target


@bp.get("/")
def home():
    """Storefront home: the brand, the counties, and what each role can do next."""
    # The storefront blocks of home.html are the shop's: its template extends home.html.
    from shop.views import home_context

    return render_template("shop/home.html", counties=COUNTIES, **home_context())


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password (session cookie, CSRF-protected form; failures limited)."""
    error, status = None, 200
    if request.method == "POST":
        try:
            user = users.sign_in(request.form.get("email", ""), request.form.get("password", ""))
        except (Unauthorized, RateLimited) as exc:
            error, status = exc.message, exc.status
        else:
            login_session(user)
            flash(f"欢迎，{user.display_name or user.email}")
            return remember_device(redirect(_safe_next(request.args.get("next"))), user)
    return render_template("auth/login.html", error=error), status


@bp.post("/logout")
def logout():
    """Sign out: this session's cookie is revoked on the server, not only forgotten by the browser."""
    users.sign_out(current_user())
    session.clear()
    flash("已退出登录")
    return redirect(url_for("core.home"))


@rate_limited("register", 10)
def _check_register_rate():
    """Share the API's registration limit (per address) with the form."""


@bp.route("/register", methods=["GET", "POST"])
def register():
    """Create a consumer account and sign in; a taken e-mail is not told apart in words (README)."""
    errors = {}
    if request.method == "POST":
        _check_register_rate()
        try:
            # Only the account's fields: the form also carries its CSRF token.
            registration = users.register_consumer(
                {name: request.form.get(name, "") for name in ("display_name", "email", "password")})
        except ValidationError as exc:
            errors = exc.messages
        except AppError as exc:
            errors = exc.fields or {"_": [exc.message]}
        else:
            if registration.created:
                login_session(registration.user)
                flash("注册成功")
                return redirect(url_for("core.home"))
            flash("注册申请已受理。若该邮箱已有账号，请直接登录。")
            return redirect(url_for("core.login"))
    return render_template("auth/register.html", errors=errors, form=request.form), (422 if errors else 200)


@rate_limited("password_reset", 5)
def _check_password_reset_rate():
    """Share the API's reset-request limit (per address) with the form."""


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot_password():
    """Ask for a reset link by e-mail; the answer is the same whether or not the e-mail has an account."""
    errors: dict = {}
    if request.method == "POST":
        _check_password_reset_rate()
        try:
            fields = PasswordResetRequestSchema().load({"email": request.form.get("email", "").strip()})
        except ValidationError as exc:
            errors = exc.messages
        else:
            password_reset.request_reset(fields["email"])
            return render_template("auth/forgot.html", sent=True, message=password_reset.REQUEST_MESSAGE,
                                   errors={}, form={}, minutes=password_reset.reset_minutes())
    return render_template("auth/forgot.html", sent=False, errors=errors, form=request.form,
                           minutes=password_reset.reset_minutes()), (422 if errors else 200)


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    """Choose a new password with a one-time link; every session of the account ends."""
    errors: dict = {}
    if request.method == "POST":
        try:
            user = password_reset.reset_password(token, request.form.get("new_password", ""))
        except AppError as exc:
            if exc.status != 422:
                raise
            errors = exc.fields or {"_": [exc.message]}
        else:
            session.clear()
            flash("密码已重设，所有设备上的登录均已失效，请用新密码登录")
            return redirect(url_for("core.login"))
    usable = password_reset.token_usable(token)
    status = 422 if errors else (200 if usable else 404)
    return render_template("auth/reset.html", usable=usable, errors=errors,
                           invalid_message=password_reset.INVALID_TOKEN), status


@bp.get("/villages")
def village_index():
    """The registry's counties with their village counts per zone."""
    return render_template("villages/index.html", counties=COUNTIES)


def _year_arg(name: str = "year") -> int:
    """A year from the query or form, this Shanghai year when absent or out of range."""
    year = whole_number(request.values.get(name)) or 0
    return year if village_targets.FIRST_YEAR <= year <= village_targets.LAST_YEAR else shanghai_today().year


def _may_set_targets() -> bool:
    user = current_user()
    return bool(user and user.has_role(*village_targets.TARGET_SETTERS))


@bp.get("/villages/<county>")
def county_villages(county: str):
    """A county's townships and villages with their zones and their sales targets for a year."""
    if county not in COUNTIES:
        abort(404)
    grouped = villages.townships_of(county)
    year = _year_arg()
    targets = village_targets.targets_by_village(year, [v.id for group in grouped.values() for v in group])
    return render_template("villages/county.html", county=county, townships=grouped, year=year, targets=targets,
                           may_set_targets=_may_set_targets(),
                           zone_labels=ZONE_LABELS, total=sum(len(v) for v in grouped.values()))


# ---------------------------------------------------------------- villages' sales targets (officials)

@bp.route("/villages/<int:village_id>/targets", methods=["GET", "POST"])
@require_roles(*village_targets.TARGET_SETTERS)
def village_targets_page(village_id: int):
    """One village's yearly targets: set a year's target, go back to the default, see the history."""
    village, overrides = village_targets.targets_of(village_id)
    errors: dict = {}
    form = request.form if request.method == "POST" else {"year": str(_year_arg())}
    if request.method == "POST":
        year = whole_number(request.form.get("year"))
        fen = parse_yuan(request.form.get("target_yuan", ""))
        if year is None:
            errors["year"] = ["请填写年度"]
        if fen is None:
            errors["target_fen"] = ["请填写金额（元，最多两位小数）"]
        if not errors:
            try:
                change = village_targets.set_target(current_user(), village.id, year,
                                                    {"target_fen": fen, "reason": request.form.get("reason", "")})
            except AppError as exc:
                errors = exc.fields or {"_": [exc.message]}
            else:
                flash(f"{change.year} 年目标已设为 {format_yuan(change.after_fen)}" if change.written
                      else f"{change.year} 年目标未变")
                return redirect(url_for("core.village_targets_page", village_id=village.id))
    return render_template("villages/targets.html", village=village, overrides=overrides, errors=errors, form=form,
                           history=village_targets.target_history(village.id),
                           this_year=shanghai_today().year), (422 if errors else 200)


@bp.post("/villages/<int:village_id>/targets/<int:year>/clear")
@require_roles(*village_targets.TARGET_SETTERS)
def village_target_clear(village_id: int, year: int):
    """Return one year to the default target."""
    change = village_targets.clear_target(current_user(), village_id, year, request.form.get("reason", ""))
    flash(f"{year} 年已恢复默认目标 {format_yuan(change.after_fen)}")
    return redirect(url_for("core.village_targets_page", village_id=village_id))


@bp.route("/village-targets", methods=["GET", "POST"])
@require_roles(*village_targets.TARGET_SETTERS)
def village_targets_import():
    """Set many villages' targets at once: download the spreadsheet, fill it in, upload it back."""
    report = None
    status = 200
    if request.method == "POST":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            report = village_targets.ImportReport(errors=["请选择要上传的 CSV 文件"])
        else:
            try:
                report = village_targets.import_csv(current_user(), upload.stream.read(
                    village_targets.MAX_IMPORT_BYTES + 1), reason=request.form.get("reason", ""))
            except AppError as exc:
                report = village_targets.ImportReport(errors=[exc.message])
        if report.ok:
            flash(f"已导入 {report.rows} 行：{report.changed} 个村的目标有变化，{report.unchanged} 个未变")
            return redirect(url_for("core.village_targets_import", year=_year_arg()))
        status = 422
    return render_template("villages/targets_import.html", report=report, year=_year_arg(), counties=COUNTIES,
                           county=request.args.get("county", "")), status


@bp.get("/village-targets.csv")
@require_roles(*village_targets.TARGET_SETTERS)
def village_targets_csv():
    """Every village (of a county) with its target for a year, to fill in and import back."""
    county = request.args.get("county") or None
    if county is not None and county not in COUNTIES:
        abort(404)
    year = _year_arg()
    body = village_targets.export_csv(year, county)
    name = quote(f"销售目标_{year}_{county or '全州'}.csv")
    return Response(body.encode("utf-8"), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=targets_{year}.csv; filename*=UTF-8''{name}"})


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

def _fen_to_yuan_text(fen: int) -> str:
    """Fen as a plain yuan figure for a form field (120000000 → "1200000.00"), no separators."""
    yuan, cents = divmod(int(fen), 100)
    return f"{yuan}.{cents:02d}"


def _share_text(typed: str) -> str:
    """A share as people type it: "0.15", or "15%" / "15 ％" (the policy documents' way) → "0.15"."""
    text = typed.strip().replace("％", "%")
    if text.endswith("%"):
        number = text[:-1].strip()
        try:
            return str((Decimal(number) / 100).normalize()) if number else text
        except InvalidOperation:
            return text  # the schema explains what is wrong
    return text


def _budget_unit_form(*, with_year: bool = False) -> tuple[dict, dict]:
    """Read the budget unit form into the service's input (budget in fen) and the errors found so far."""
    form = request.form
    data = {"name": form.get("name", "").strip(), "reserved_share": _share_text(form.get("reserved_share", ""))}
    if form.get("reason", "").strip():
        data["reason"] = form["reason"].strip()
    year = form.get("year", "").strip()
    if with_year and year:  # left out: the service's default, this year
        # Anything but a whole number goes on as text, for the schema to refuse.
        number = whole_number(year)
        data["year"] = year if number is None else number
    errors = {}
    threshold = form.get("approval_threshold_yuan", "").strip()
    if "approval_threshold_yuan" in form:  # blank: no internal approval
        data["approval_threshold_fen"] = parse_yuan(threshold) if threshold else None
        if threshold and data["approval_threshold_fen"] is None:
            del data["approval_threshold_fen"]
            errors["approval_threshold_fen"] = ["请输入以元为单位的金额，如 5000 或 5000.50；不需要内部审批请留空"]
    fen = parse_yuan(form.get("annual_canteen_budget_yuan", ""))
    if fen is None:
        errors["annual_canteen_budget_fen"] = ["请输入以元为单位的金额，如 1200000 或 1200000.50（最多两位小数）"]
    else:
        data["annual_canteen_budget_fen"] = fen
    if errors:
        # Not sent to the service; the other fields are still checked so every error shows at once.
        return data, {**budget_units.input_errors(data, partial=True), **errors}
    return data, {}


def _saved_message(unit, values=None, kept_years=()) -> str:
    """The flash after a save: the year the values apply from, later years that kept their own,
    and a warning when the share is below the policy's 10%."""
    values = values or unit
    message = f"已保存：{unit.name}"
    if getattr(values, "year", None):
        message += f"（{values.year}年起：预算 {format_yuan(values.annual_canteen_budget_fen)}，" \
                   f"预留比例 {budget_units.share_percent(values.reserved_share)}）"
    if kept_years:
        message += "。" + "、".join(f"{year}年" for year in kept_years) + "已有单独记录，保持不变"
    if budget_units.below_policy_minimum(values):
        message += (f"。注意：预留比例 {budget_units.share_percent(values.reserved_share)} 低于政策要求的"
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
    """Change a unit's name, or its budget and share from this year or the next on; every change
    is audited old → new with its year. ``?year=`` (this year or the next) fills the form with
    that year's values."""
    user = current_user()
    unit = budget_units.get_budget_unit_for(user, unit_id)
    errors: dict = {}
    form = request.form
    editable = budget_units.editable_years()
    if request.method == "GET":
        year = request.args.get("year", "")
        year = whole_number(year) if whole_number(year) in editable else editable[0]
        values = budget_units.year_values(unit.id, year)
        form = {"name": unit.name, "year": str(year), "reserved_share": values.as_audit()["reserved_share"],
                "annual_canteen_budget_yuan": _fen_to_yuan_text(values.annual_canteen_budget_fen),
                "approval_threshold_yuan": (_fen_to_yuan_text(unit.approval_threshold_fen)
                                            if unit.approval_threshold_fen is not None else "")}
    else:
        data, errors = _budget_unit_form(with_year=True)
        if not errors:
            try:
                change = budget_units.change_budget_unit(user, unit_id, data)
            except AppError as exc:
                errors = _form_errors(exc)
            else:
                flash(_saved_message(change.unit, change.after, change.kept_years) if change.changed
                      else f"未作修改：{change.unit.name}")
                return redirect(url_for("core.budget_unit_index"))
    return render_template("canteen/unit_form.html", unit=unit, form=form, errors=errors,
                           history=budget_units.unit_history(unit), field_labels=budget_units.FIELD_LABELS,
                           years=budget_units.years_overview(unit), editable_years=editable,
                           policy_min_share=budget_units.POLICY_MIN_SHARE), \
        (422 if errors else 200)


@bp.app_context_processor
def inject_user():
    """Make the signed-in user available to every template."""
    return {"current_user": current_user()}
