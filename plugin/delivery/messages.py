"""Compose invitation messages: a link, a deadline and a way out; never answers or names."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from flask import render_template
from flask_babel import force_locale, gettext

from plugin.core.i18n import current_language

if TYPE_CHECKING:
    from plugin.delivery.channels import Outgoing

# One SMS segment. Characters outside the GSM 03.38 basic set switch the whole message to
# UCS-2, where a segment holds only 70, so the wording and the practice name stay inside it.
SMS_SEGMENT = 160
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Typographic punctuation that NFKD leaves alone, to its plain GSM-7 twin.
_PLAIN_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
    }
)
# RFC 5322's line limit, not the 78 it recommends: folding a long header would RFC 2047-encode
# the List-Unsubscribe URL, which mail apps then cannot use.
EMAIL_POLICY = policy.default.clone(max_line_length=998)
# The practice name is cut to fit, but never below this: past it a second segment is better
# than a name nobody recognises.
MIN_SMS_NAME = 12


def compose_email(outgoing: Outgoing, sender: str) -> EmailMessage:
    """Build the text and HTML invitation (or its reminder) in the client's language."""
    with force_locale(outgoing.language):
        practice = _one_line(outgoing.practice_name)
        context = {
            "link": outgoing.link,
            "unsubscribe_link": outgoing.unsubscribe_link,
            "practice_name": practice,
            "deadline": _deadline(outgoing.expires_at, outgoing.timezone),
            "reminder": outgoing.reminder,
            "html_lang": current_language(),
        }
        if outgoing.reminder:
            subject = gettext(
                "Reminder: how did your session with %(practice)s feel?", practice=practice
            )
        else:
            subject = gettext("%(practice)s: how did your session feel?", practice=practice)
        message = EmailMessage(policy=EMAIL_POLICY)
        message["Subject"] = subject
        message["From"] = sender
        message["To"] = outgoing.to
        message["Date"] = format_datetime(outgoing.sent_at)
        # A stable id per message lets mail systems fold a retried send into one.
        kind = "reminder" if outgoing.reminder else "invitation"
        message["Message-ID"] = f"<{kind}.{outgoing.key}@alliance-check.invalid>"
        message["Auto-Submitted"] = "auto-generated"
        # RFC 2369 and RFC 8058: mail apps show an unsubscribe button that POSTs to the link.
        message["List-Unsubscribe"] = f"<{outgoing.unsubscribe_link}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(render_template("email/invitation.txt", **context))
        message.add_alternative(render_template("email/invitation.html", **context), subtype="html")
        # After the parts: setting content clears every Content-* header set before.
        message["Content-Language"] = current_language()
    return message


def compose_sms(outgoing: Outgoing) -> str:
    """Return the one-segment SMS invitation (or reminder) in the client's language."""
    with force_locale(outgoing.language):
        if outgoing.reminder:
            template = gettext(
                "Reminder: how was your session with %(practice)s? %(link)s Reply STOP to opt out"
            )
        else:
            template = gettext(
                "How was your session with %(practice)s? %(link)s Reply STOP to opt out"
            )
    practice = to_gsm7(_one_line(outgoing.practice_name))
    room = SMS_SEGMENT - len(template % {"practice": "", "link": outgoing.link})
    if len(practice) > room:
        practice = practice[: max(room, MIN_SMS_NAME)].rstrip()
    return template % {"practice": practice, "link": outgoing.link}


def to_gsm7(text: str) -> str:
    """Fold text into the GSM 03.38 basic set: accents dropped where the set lacks them."""
    folded = []
    for char in text.translate(_PLAIN_PUNCTUATION):
        if char in GSM7_BASIC:
            folded.append(char)
            continue
        # "í" -> "i" + a combining accent, of which only the base letter is kept.
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if c in GSM7_BASIC)
        folded.append(base or "?")
    return "".join(folded)


def is_gsm7(text: str) -> bool:
    """Say whether text fits the GSM 03.38 basic set, so 160 characters make one segment."""
    return all(char in GSM7_BASIC for char in text)


def _one_line(text: str) -> str:
    # A name typed with a line break must not become a second header or an SMS line.
    return re.sub(r"\s+", " ", text).strip()


def _deadline(expires_at: datetime, timezone: str | None) -> str:
    """Return when the link stops working, in the client's zone and language."""
    local = expires_at.astimezone(ZoneInfo(timezone or "UTC"))
    language = current_language()
    return gettext(
        "%(date)s at %(time)s (%(zone)s)",
        date=format_date(local, "long", locale=language),
        time=format_time(local, "short", locale=language),
        zone=local.tzname(),
    )
