"""Account pages: one's own account (password, sign out everywhere) and the staff accounts that
administrators and county reviewers manage (账号管理)."""
import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from core import cooperatives, users
from core.audit import history_of
from core.auth import current_user, login_session, require_login, require_roles
from core.errors import AppError
from core.extensions import db
from core.identifiers import whole_number
from core.models import ROLE_LABELS, BudgetUnit, Role
from core.village_registry import COUNTIES

bp = Blueprint("accounts", __name__)

#: Audit actions of an account, as the detail page names them.
ACTION_LABELS = {"create": "开设账号", "register": "注册", "deactivate": "停用", "activate": "恢复启用",
                 "rename": "修改称呼", "password_change": "修改密码", "sign_out_everywhere": "退出所有设备",
                 "registration_attempt": "有人用此邮箱注册",
                 "password_reset_requested": "申请重设密码", "password_reset": "通过邮件链接重设密码",
                 "set_password_link_sent": "发送设置密码链接"}


def _errors_of(exc: Exception) -> dict:
    """A service or schema error as the form's field errors."""
    if isinstance(exc, ValidationError):
        return exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
    return exc.fields or {"_": [exc.message]}


@bp.route("/account", methods=["GET", "POST"])
@require_login
def my_account():
    """My account: change the password (every other device is signed out), or sign out everywhere."""
    user = current_user()
    errors: dict = {}
    if request.method == "POST":
        try:
            users.change_password(user, {"current_password": request.form.get("current_password", ""),
                                         "new_password": request.form.get("new_password", "")})
        except (ValidationError, AppError) as exc:
            if getattr(exc, "status", 422) not in (422,):
                raise
            errors = _errors_of(exc)
        else:
            login_session(user)  # this browser stays signed in, with the new generation
            flash("密码已修改，其他设备上的登录已全部失效")
            return redirect(url_for("accounts.my_account"))
    return render_template("accounts/me.html", user=user, errors=errors), (422 if errors else 200)


@bp.post("/account/sign-out-everywhere")
@require_login
def sign_out_everywhere():
    """Sign out on every device and browser; this one stays signed in."""
    users.sign_out_everywhere(current_user(), keep_page_session=True)
    flash("已退出所有其他设备上的登录")
    return redirect(url_for("accounts.my_account"))


def _active_arg() -> bool | None:
    return {"1": True, "0": False}.get(request.args.get("active", ""))


@bp.get("/accounts")
@require_roles(*users.ACCOUNT_MANAGERS)
def account_index():
    """The accounts I manage (all for admins; my county's cooperatives' logins for a county reviewer)."""
    role = request.args.get("role") if request.args.get("role") in {r.value for r in Role} else None
    query = users.list_accounts(current_user(), role=role, is_active=_active_arg(), q=request.args.get("q") or None)
    accounts = list(db.session.scalars(query.limit(500)))
    return render_template("accounts/index.html", accounts=accounts, role_labels=ROLE_LABELS, Role=Role,
                           roles=users.account_creation_roles(current_user()) if current_user().has_role(Role.ADMIN)
                           else [], filters=request.args)


def _create_form_data() -> dict:
    """The new-account form as ``create_user`` input (scopes only when chosen)."""
    form = request.form
    data = {name: form.get(name, "").strip() for name in ("email", "display_name", "password", "role")}
    data["password"] = form.get("password", "")
    data["send_password_link"] = form.get("send_password_link") == "1"  # "send a link to set the password"
    data["county"] = form.get("county") or None
    for name in ("cooperative_id", "budget_unit_id"):
        raw = form.get(name, "")
        data[name] = whole_number(raw) if raw else None
        if raw and data[name] is None:
            data[name] = raw  # the schema says what is wrong
    return data


@bp.route("/accounts/new", methods=["GET", "POST"])
@require_roles(*users.ACCOUNT_MANAGERS)
def account_new():
    """Open a staff account: admins any role with its scope; county reviewers a login for one of
    their county's cooperatives."""
    actor = current_user()
    errors: dict = {}
    if request.method == "POST":
        data = _create_form_data()
        try:
            user = users.create_user(data, actor=actor)
        except ValidationError as exc:
            errors = _errors_of(exc)
        except AppError as exc:
            if exc.status != 422:
                raise
            errors = _errors_of(exc)
        else:
            flash(f"已开设账号：{user.email}（{user.role_enum.label}）"
                  + ("，设置密码的链接将发送到该邮箱" if data["send_password_link"] else ""))
            return redirect(url_for("accounts.account_detail", user_id=user.id))
    budget_units = list(db.session.scalars(sa.select(BudgetUnit).order_by(BudgetUnit.name))) \
        if actor.has_role(Role.ADMIN) else []
    return render_template("accounts/new.html", errors=errors, form=request.form,
                           roles=users.account_creation_roles(actor), counties=COUNTIES,
                           cooperative_choices=cooperatives.cooperatives_visible_to(actor),
                           budget_units=budget_units), (422 if errors else 200)


@bp.get("/accounts/<int:user_id>")
@require_roles(*users.ACCOUNT_MANAGERS)
def account_detail(user_id: int):
    """One account: its role and scope, whether it is active, and its audited history."""
    account = users.get_account(current_user(), user_id)
    return render_template("accounts/detail.html", account=account, history=history_of("user", account.id),
                           action_labels=ACTION_LABELS)


@bp.post("/accounts/<int:user_id>/active")
@require_roles(*users.ACCOUNT_MANAGERS)
def account_set_active(user_id: int):
    """Deactivate (signed out everywhere at once) or reactivate an account."""
    active = request.form.get("is_active") == "1"
    account = users.update_account(current_user(), user_id,
                                   {"is_active": active, "reason": request.form.get("reason", "")[:500]})
    flash(f"已恢复启用：{account.email}" if active else f"已停用：{account.email}，其所有登录已立即失效")
    return redirect(url_for("accounts.account_detail", user_id=account.id))
