"""Compose the invitation message: a link and a deadline, never answers, scores or names."""

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from flask import render_template


def invitation_email(
    *,
    to: str,
    sender: str,
    link: str,
    practice_name: str,
    sent_at: datetime,
    expires_at: datetime,
    key: str,
) -> EmailMessage:
    """Build the text and HTML invitation for one client."""
    context = {"link": link, "practice_name": practice_name, "expires_at": expires_at}
    message = EmailMessage()
    message["Subject"] = f"{practice_name}: how did your session feel?"
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(sent_at)
    # A stable id per invitation lets mail systems fold a retried send into one message.
    message["Message-ID"] = make_msgid(idstring=key, domain="alliance-check.invalid")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(render_template("email/invitation.txt", **context))
    message.add_alternative(render_template("email/invitation.html", **context), subtype="html")
    return message
