"""A real SMTP server on the loopback (aiosmtpd) that keeps what it receives, and can refuse."""
import email
import socket
from email import policy

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MailServer:
    """Handler of the loopback SMTP server: ``messages`` received; ``refuse`` next DATA commands
    answered ``451`` (try again later); ``quit_reply`` answers QUIT with something else than 221."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes = []
        self.refuse = 0
        self.quit_reply = None
        self.port = None

    async def handle_QUIT(self, server, session, envelope):
        return self.quit_reply or "221 Bye"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 Mailbox busy, try again later"
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 2.0.0 OK"

    def to(self, address: str) -> list:
        """The messages whose envelope went to ``address``."""
        return [m for m, e in zip(self.messages, self.envelopes) if address in e.rcpt_tos]


@pytest.fixture
def smtp_server(app):
    """A running loopback SMTP server, with the app's e-mail settings pointed at it."""
    handler = MailServer()
    handler.port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    saved = {key: app.config.get(key) for key in ("SMTP_HOST", "SMTP_PORT", "SMTP_STARTTLS", "SMTP_USER", "MAIL_FROM")}
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=handler.port, SMTP_STARTTLS=False, SMTP_USER="",
                      MAIL_FROM="湘西香伴 <noreply@xiangban.test>")
    yield handler
    app.config.update(saved)
    controller.stop()
