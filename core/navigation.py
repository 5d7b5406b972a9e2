"""Per-role navigation: each feature registers its links; the header shows what the user may open."""
from flask import Flask

from core.auth import current_user
from core.models import Role

# (endpoint, label, roles or None for everyone, order)
_LINKS: list[tuple[str, str, frozenset[str] | None, int]] = []


def register_nav(endpoint: str, label: str, roles: tuple[Role, ...] | None = None, order: int = 50) -> None:
    """Add a header link, shown to ``roles`` only (None: to everyone)."""
    allowed = frozenset(role.value for role in roles) if roles else None
    if all(link[0] != endpoint for link in _LINKS):
        _LINKS.append((endpoint, label, allowed, order))


def nav_links() -> list[tuple[str, str]]:
    """Return the links the current user may open, in display order."""
    user = current_user()
    role = user.role if user else None
    return [(endpoint, label) for endpoint, label, allowed, _ in sorted(_LINKS, key=lambda link: link[3])
            if allowed is None or role in allowed]


def init_app(app: Flask) -> None:
    """Expose ``nav_links`` to templates."""
    app.jinja_env.globals["nav_links"] = nav_links
