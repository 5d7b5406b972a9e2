"""The e-mail channel: notices as plain-text UTF-8 mail over SMTP (stdlib ``smtplib``).

Settings (``core.config``): ``SMTP_HOST`` (unset: e-mail waits in the outbox, nothing is lost),
``SMTP_PORT``, ``SMTP_USER`` / ``SMTP_PASSWORD`` (login when set), ``SMTP_STARTTLS`` and
``MAIL_FROM``. Each message carries a Message-ID made from the delivery, so a message the worker
had to send again after a crash (see ``core.notifications``) is recognisable as the same one.
"""
import smtplib
import socket
from email.message import EmailMessage
from email.utils import formataddr

from flask import current_app

from core.notifications import Channel, Outgoing, PermanentDeliveryError, Recipient, TemporaryDeliveryError

#: Top-level domains reserved for tests, examples and documentation: no mail server answers for them.
UNDELIVERABLE = ("test", "example", "invalid", "localhost")
FOOTER = "此邮件由湘西香伴消费帮扶平台自动发送，请勿直接回复。"


def absolute_link(link: str | None) -> str | None:
    """A notice's site path as a full address under ``PUBLIC_BASE_URL``."""
    if not link:
        return None
    if link.startswith(("http://", "https://")):
        return link
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + "/" + link.lstrip("/")


def build_message(notice: Outgoing, user: Recipient) -> EmailMessage:
    """The e-mail for one delivery of a notice: subject = title, text = body, link, footer."""
    message = EmailMessage()
    message["Subject"] = f"【湘西香伴】{notice.title}"
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = formataddr((user.display_name or "", user.email))
    domain = message["From"].rsplit("@", 1)[-1].strip("> ") or "localhost"
    # The same for every try of one delivery, so a copy sent again after a crash is known as such.
    message["Message-ID"] = f"<notice-{notice.id}.{notice.delivery_id}@{domain}>"
    lines = [f"{user.display_name or user.email}，您好：", "", notice.body]
    url = absolute_link(notice.link)
    if url:
        lines += ["", f"查看详情：{url}"]
    lines += ["", "——", FOOTER]
    message.set_content("\n".join(lines), charset="utf-8")
    return message


class EmailChannel(Channel):
    """Notices by e-mail to the account's address."""

    name = "email"

    def wants(self, notification, user) -> bool:
        """Every notice goes by e-mail too, except to the special-use domains that never receive
        mail (RFC 2606/6761: the demo's ``@xiangban.test`` accounts), which would only fail."""
        domain = (user.email or "").rsplit("@", 1)[-1].lower().rstrip(".")
        return bool(user.email) and not any(domain == tld or domain.endswith("." + tld) for tld in UNDELIVERABLE)

    def configured(self) -> bool:
        """Only with ``SMTP_HOST``; until then deliveries wait as ``pending``."""
        return bool(current_app.config.get("SMTP_HOST"))

    def deliver(self, notification: Outgoing, user: Recipient) -> None:
        """Send one message; 5xx answers are permanent, 4xx and network trouble temporary.

        :raise PermanentDeliveryError: the server refused the sender, recipient or message for good.
        :raise TemporaryDeliveryError: the server is unreachable or asked to try later.
        """
        config = current_app.config
        message = build_message(notification, user)
        try:
            smtp = smtplib.SMTP(config["SMTP_HOST"], int(config["SMTP_PORT"]),
                                timeout=float(config.get("SMTP_TIMEOUT") or 15))
            try:
                if config.get("SMTP_STARTTLS"):
                    smtp.starttls()
                if config.get("SMTP_USER"):
                    smtp.login(config["SMTP_USER"], config.get("SMTP_PASSWORD") or "")
                smtp.send_message(message)
            finally:
                # Not ``with``: its QUIT may fail after the server accepted the message, which
                # must not turn a delivered message into a failed or re-sent one.
                _quit(smtp)
        except smtplib.SMTPAuthenticationError as exc:
            # Our settings are wrong, not the message: keep it for when they are fixed.
            raise TemporaryDeliveryError(f"SMTP 登录失败 {exc.smtp_code}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            error = f"收件人被拒绝：{exc.recipients}"
            raise (PermanentDeliveryError if all(code >= 500 for code in codes) else TemporaryDeliveryError)(error) from None
        except smtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"
            raise (PermanentDeliveryError if exc.smtp_code >= 500 else TemporaryDeliveryError)(error) from None
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            raise TemporaryDeliveryError(f"{exc.__class__.__name__}: {exc}") from None


def _quit(smtp: smtplib.SMTP) -> None:
    """Say goodbye, ignoring any trouble (a non-221 answer, a timeout): the socket is closed anyway."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _text(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
