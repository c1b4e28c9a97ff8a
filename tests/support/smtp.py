"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives."""

from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller


class Recorder:
    """Keep every accepted message; refuse recipients when told to."""

    def __init__(self):
        self.messages: list[EmailMessage] = []
        self.refuse_with: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Accept the recipient unless a refusal is set."""
        if self.refuse_with:
            return self.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """Store the message."""
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"


def start(port: int) -> tuple[Controller, Recorder]:
    """Start a server on port and return it with its recorder."""
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, recorder
