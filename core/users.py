"""Account use cases: registration, creation with a role, authentication."""
import sqlalchemy as sa

from core.errors import Unauthorized, ValidationFailed
from core.extensions import db
from core.models import BudgetUnit, Cooperative, Role, User
from core.schemas import RegisterSchema, UserCreateSchema


def _email_taken(email: str) -> bool:
    return db.session.scalar(sa.select(sa.func.count(User.id)).where(sa.func.lower(User.email) == email.lower())) > 0


def register_consumer(data: dict) -> User:
    """Create a consumer account from public registration input.

    :raise ValidationFailed: invalid input or an email already registered (422).
    """
    fields = RegisterSchema().load(data)
    if _email_taken(fields["email"]):
        raise ValidationFailed("该邮箱已注册", code="email_taken", fields={"email": ["该邮箱已注册"]})
    user = User(email=fields["email"].lower(), display_name=fields["display_name"], role=Role.CONSUMER.value)
    user.set_password(fields["password"])
    db.session.add(user)
    db.session.commit()
    return user


def create_user(data: dict) -> User:
    """Create an account with any role and the scope that role needs.

    County reviewers need a county, cooperative members a cooperative, canteen buyers a
    budget unit; a scope that does not belong to the role is refused rather than ignored.

    :raise ValidationFailed: invalid input, missing or foreign scope, or a taken email.
    """
    fields = UserCreateSchema().load(data)
    role = Role(fields["role"])
    errors: dict[str, list[str]] = {}
    needs = {Role.COUNTY_REVIEWER: "county", Role.COOPERATIVE: "cooperative_id",
             Role.CANTEEN_BUYER: "budget_unit_id"}
    for scope in ("county", "cooperative_id", "budget_unit_id"):
        given = fields.get(scope) is not None
        if needs.get(role) == scope and not given:
            errors[scope] = [f"角色 {role.label} 必须指定"]
        elif needs.get(role) != scope and given:
            errors[scope] = [f"角色 {role.label} 不使用此项"]
    if fields.get("cooperative_id") is not None and db.session.get(Cooperative, fields["cooperative_id"]) is None:
        errors["cooperative_id"] = ["合作社不存在"]
    if fields.get("budget_unit_id") is not None and db.session.get(BudgetUnit, fields["budget_unit_id"]) is None:
        errors["budget_unit_id"] = ["预算单位不存在"]
    if _email_taken(fields["email"]):
        errors["email"] = ["该邮箱已注册"]
    if errors:
        raise ValidationFailed(fields=errors)
    user = User(
        email=fields["email"].lower(),
        display_name=fields["display_name"],
        role=role.value,
        county=fields.get("county"),
        cooperative_id=fields.get("cooperative_id"),
        budget_unit_id=fields.get("budget_unit_id"),
    )
    user.set_password(fields["password"])
    db.session.add(user)
    db.session.commit()
    return user


def authenticate(email, password) -> User:
    """Return the active user with these credentials.

    :raise Unauthorized: unknown email, wrong password or a disabled account (one message for all).
    """
    user = None
    if isinstance(email, str) and isinstance(password, str):
        user = db.session.scalar(sa.select(User).where(sa.func.lower(User.email) == email.strip().lower()))
    if user is None or not user.is_active or not user.check_password(password):
        raise Unauthorized("邮箱或密码不正确", code="invalid_credentials")
    return user
