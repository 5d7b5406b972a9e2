"""The in-app inbox (消息): the page ``/notifications`` and ``/api/v1/notifications``.

Everyone signed in has one; each user only ever sees and marks their own notices (another
user's id is a 404, as an absent one).
"""
import logging

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from marshmallow import fields
from sqlalchemy.exc import SQLAlchemyError

from core import notifications
from core.auth import current_user, require_login
from core.http import list_envelope, page_params
from core.identifiers import whole_number
from core.openapi import api_doc, api_tag
from core.schemas import NotificationListSchema, NotificationSchema

log = logging.getLogger(__name__)
bp = Blueprint("notifications", __name__)
api = Blueprint("notifications_api", __name__, url_prefix="/api/v1")
api_tag(api, "消息", "站内消息：列表、标为已读")

#: Notices per page on the inbox page.
PAGE_SIZE = 30

KIND_LABELS = {"certification_decision": "认定结果", "application_waiting": "待审核", "order_to_ship": "待发货",
               "transfer_waiting": "待确认到账", "approval_waiting": "待审批", "certificate_renewal": "证书续期",
               "evidence_expiring": "证明材料到期", "canteen_share_behind": "预留份额进度",
               "statement_issued": "结算单", "statement_paid": "结算付款"}


def unread_badge() -> int:
    """The signed-in user's unread count, once per request (the header shows it on every page)."""
    # Kept on the request (tests reuse one app context, and so one ``g``, across requests).
    cached = getattr(request, "_unread_notifications", None)
    if cached is None:
        try:
            cached = notifications.unread_count(current_user())
        except SQLAlchemyError:
            # The error page of a request whose transaction failed must still render.
            log.warning("unread count unavailable on %s", request.path)
            cached = 0
        request._unread_notifications = cached
    return cached


bp.add_app_template_global(unread_badge, "unread_notifications")


def _unread_arg() -> bool:
    return request.args.get("unread", "") in {"1", "true"}


def _safe_link(link: str | None) -> str:
    """A notice's link when it is a path on this site, else the inbox."""
    from core.views import _safe_next

    return _safe_next(link) if link else url_for("notifications.inbox")


@bp.get("/notifications")
@require_login
def inbox():
    """My notices, newest first (``?unread=1``: unread only; ``?page=``)."""
    page = min(whole_number(request.args.get("page")) or 1, 10_000)
    unread_only = _unread_arg()
    items, total = notifications.list_inbox(current_user(), unread_only=unread_only,
                                            offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    return render_template("notifications/index.html", items=items, total=total, page=page, page_size=PAGE_SIZE,
                           unread_only=unread_only, kind_labels=KIND_LABELS)


@bp.post("/notifications/<int:notification_id>/read")
@require_login
def mark_read(notification_id: int):
    """Mark one notice read; with ``open=1`` go on to what it points to."""
    notice = notifications.mark_read(current_user(), notification_id)
    if request.form.get("open") == "1":
        return redirect(_safe_link(notice.link))
    return redirect(url_for("notifications.inbox", unread=request.form.get("unread") or None))


@bp.post("/notifications/read-all")
@require_login
def mark_all_read():
    """Mark all my notices read."""
    count = notifications.mark_all_read(current_user())
    flash(f"已将 {count} 条消息标为已读" if count else "没有未读消息")
    return redirect(url_for("notifications.inbox"))


@api.get("/notifications")
@api_doc(query={"unread": fields.String(metadata={"description": "1 或 true：只列未读消息"})}, paged=True,
         response=NotificationListSchema)
@require_login
def list_notifications():
    """The caller's notices, newest first (``?unread=1``), in the contract's list shape."""
    page = page_params(max_per_page=500)
    items, total = notifications.list_inbox(current_user(), unread_only=_unread_arg(), offset=page.offset,
                                            limit=page.size)
    return jsonify(list_envelope(NotificationSchema(many=True).dump(items), total, page,
                                 unread=notifications.unread_count(current_user())))


@api.post("/notifications/<int:notification_id>/read")
@api_doc(response=NotificationSchema)
@require_login
def read_notification(notification_id: int):
    """Mark one of the caller's notices read; answers it (404 for anyone else's)."""
    return jsonify(NotificationSchema().dump(notifications.mark_read(current_user(), notification_id)))


@api.post("/notifications/read-all")
@api_doc(response={"type": "object", "properties": {"marked": {"type": "integer"}, "unread": {"type": "integer"}}})
@require_login
def read_all_notifications():
    """Mark all the caller's notices read: ``{"marked": n, "unread": 0}``."""
    return jsonify({"marked": notifications.mark_all_read(current_user()), "unread": 0})
