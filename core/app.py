"""The application factory, built from named steps."""
import logging
from pathlib import Path

from flask import Flask, request

from core import operations
from core.config import PROJECT_ROOT, check_config, engine_options_for, load_config
from core.extensions import csrf, db, migrate
from core.money import format_yuan


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the 湘西香伴 application.

    :param test_config: settings that override the environment (tests).
    """
    app = Flask(
        __name__,
        instance_path=str(PROJECT_ROOT / "instance"),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.from_mapping(load_config(Path(app.instance_path)))
    if test_config:
        app.config.from_mapping(test_config)
        if "SQLALCHEMY_DATABASE_URI" in test_config and "SQLALCHEMY_ENGINE_OPTIONS" not in test_config:
            # The options read from the environment were for DATABASE_URL's database, not this one.
            app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options_for(test_config["SQLALCHEMY_DATABASE_URI"])
    check_config(app.config)
    app.json.ensure_ascii = False
    register_proxy(app)
    register_extensions(app)
    register_blueprints(app)
    register_request_hooks(app)
    operations.init_app(app)
    register_errorhandlers(app)
    register_template_helpers(app)
    register_commands(app)
    if not app.debug and not app.testing:
        operations.configure_logging(logging.INFO)
    return app


def register_proxy(app: Flask) -> None:
    """Trust ``X-Forwarded-For``/``-Proto`` from ``TRUSTED_PROXY_COUNT`` reverse proxies (default none).

    With it, ``request.remote_addr`` (sign-in limits) is the client's and ``request.is_secure``
    (HSTS) follows the proxy's HTTPS; without it a client could claim any address by sending
    the header itself, so it stays off unless there really is a proxy.
    """
    hops = int(app.config.get("TRUSTED_PROXY_COUNT") or 0)
    if hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)


def register_extensions(app: Flask) -> None:
    """Bind the unbound extensions to this app."""
    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"),
                     render_as_batch=True, compare_type=True)
    csrf.init_app(app)


def register_blueprints(app: Flask) -> None:
    """Attach every feature's pages and API; the API is bearer-token only, so no CSRF."""
    # Models of every package must be imported before migrations or create_all look at them.
    import certification.models  # noqa: F401
    import traceability.models  # noqa: F401
    import shop.models  # noqa: F401
    import shop.reports.models  # noqa: F401
    import core.notifications  # noqa: F401  (notifications, notification_deliveries)
    import core.password_reset  # noqa: F401  (password_reset_tokens)
    from core import navigation, openapi
    from core.models import Role
    from certification.api import bp as certification_api
    from certification.views import bp as certification_views
    from core.accounts import bp as accounts_views
    from core.inbox import api as notifications_api
    from core.inbox import bp as notifications_views
    from core.api import bp as core_api
    from core.views import bp as core_views
    from shop.api import bp as shop_api
    from shop.cli import bp as shop_cli
    from shop.views import bp as shop_views
    from shop.reports.api import bp as reports_api
    from shop.reports.views import bp as reports_views
    from traceability.api import bp as traceability_api
    from traceability.views import bp as traceability_views
    import search
    from search.api import bp as search_api
    from search.views import bp as search_views

    navigation.init_app(app)
    navigation.register_nav("core.home", "首页", order=0)
    navigation.register_nav("core.village_index", "脱贫村名录", order=80)
    navigation.register_nav("core.cooperative_index", "合作社",
                            roles=(Role.ADMIN, Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER), order=70)
    navigation.register_nav("reports.my_canteen", "本单位食堂", roles=(Role.CANTEEN_BUYER,), order=15)
    navigation.register_nav("core.budget_unit_index", "预算单位", roles=(Role.ADMIN,), order=72)
    navigation.register_nav("core.village_targets_import", "销售目标", roles=(Role.ADMIN, Role.OFFICIAL), order=85)
    navigation.register_nav("accounts.account_index", "账号管理", roles=(Role.ADMIN, Role.COUNTY_REVIEWER), order=90)

    search.init_app(app)
    register_notifications()
    for blueprint in (core_views, accounts_views, notifications_views, certification_views, shop_cli, shop_views,
                      traceability_views, search_views):
        app.register_blueprint(blueprint)
    for api in (core_api, notifications_api, certification_api, shop_api, traceability_api, search_api):
        csrf.exempt(api)
        app.register_blueprint(api)
    app.register_blueprint(reports_views)
    csrf.exempt(reports_api)
    app.register_blueprint(reports_api)
    openapi.init_app(app)  # after every API blueprint: the document walks their routes


def register_notifications() -> None:
    """Delivery channels of the outbox and the daily reminder producers (``core.notifications``)."""
    from certification.reminders import remind_certificates, remind_evidence
    from core.mail import EmailChannel
    from core.notifications import register_channel, register_reminder
    from shop.reminders import remind_canteens_behind

    register_channel(EmailChannel())
    register_reminder("certificate_renewal", remind_certificates)
    register_reminder("evidence_expiring", remind_evidence)
    register_reminder("canteen_share_behind", remind_canteens_behind)


#: No inline script anywhere (``static/js/app.js`` carries the pages' behaviour); inline styles
#: are still allowed (style attributes and <style> blocks in templates). No ``form-action``: the
#: checkout form ends in a redirect to Stripe, which that directive would block.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'")


def register_request_hooks(app: Flask) -> None:
    """Identify the caller before each request; set protective headers after."""
    from core.auth import load_current_user
    from core.http import refuse_unusable_input

    # First of all (before Flask-WTF's CSRF check reads the form): a form part without a usable
    # name would crash any reader of ``request.form``.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_unusable_input)
    app.before_request(load_current_user)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        hsts = int(app.config.get("HSTS_MAX_AGE") or 0)
        if hsts and request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", f"max-age={hsts}; includeSubDomains")
        return response


def register_errorhandlers(app: Flask) -> None:
    """Errors in the contract's shape (API) or as Chinese pages (HTML)."""
    from core.errors import register_error_handlers

    register_error_handlers(app)


def register_template_helpers(app: Flask) -> None:
    """Filters shared by every template: money, time, zone labels."""
    from core.timeutil import to_shanghai
    from core.village_registry import ZONE_LABELS

    app.add_template_filter(format_yuan, "yuan")
    app.add_template_filter(lambda moment: to_shanghai(moment).strftime("%Y-%m-%d %H:%M") if moment else "—",
                            "local_time")
    app.add_template_filter(lambda zone: ZONE_LABELS.get(zone, "规划外"), "zone_label")


def register_commands(app: Flask) -> None:
    """Attach the ``setup``, ``demo``, ``users`` and ``audit`` commands."""
    from core.cli import register
    from search.cli import search_group
    from shop.cli import payments_group, settlements_group
    from shop.reports.cli import reports_group

    register(app)
    app.cli.add_command(search_group)
    app.cli.add_command(reports_group)
    app.cli.add_command(settlements_group)
    app.cli.add_command(payments_group)
