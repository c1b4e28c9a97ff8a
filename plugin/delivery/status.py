"""Twilio delivery status: a delivered text is marked, a failed one falls back to the next channel.

Twilio posts each status change of a message to its StatusCallback (/sms/twilio/status).
Only final statuses matter here, and each acts once: "delivered" stamps delivered_at;
"undelivered" or "failed" sends the invitation back to the dispatcher on its next channel at
once, forgetting the text's SID so a retried or late callback for it changes nothing.
"""

import logging
import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.crypto import hash_token
from plugin.core.models import Invitation, InvitationStatus

log = logging.getLogger(__name__)

DELIVERED = "delivered"
NOT_DELIVERED = ("undelivered", "failed")
# Twilio's error codes are numbers (e.g. 30003 unreachable handset); anything else is dropped.
_ERROR_CODE = re.compile(r"[0-9]{1,6}")


def record_sms_status(
    session: Session, *, message_sid: str, status: str, error_code: str, now: datetime
) -> str:
    """Apply one status callback; return what happened (a code for the log). Caller commits."""
    if not message_sid:
        return "unknown"
    invitation = session.scalar(
        select(Invitation)
        .where(Invitation.sms_sid_hash == hash_token(message_sid))
        # Twilio may post two statuses at once; one applies, the other sees its result. Only
        # the invitation row: PostgreSQL cannot lock the outer-joined side of its eager loads.
        .with_for_update(of=Invitation)
    )
    if invitation is None:
        return "unknown"
    if status == DELIVERED:
        if invitation.delivered_at is None:
            invitation.delivered_at = now
        return "delivered"
    if status not in NOT_DELIVERED:
        # queued, sending, sent, accepted, ...: on the way, or out of order after a final one.
        return "ignored"
    if invitation.delivered_at is not None:
        # Delivered is final: a failure reported after it is out of order.
        return "ignored"
    invitation.sms_sid_hash = None
    reason = f"sms: {status}" + (f" code {error_code}" if _ERROR_CODE.fullmatch(error_code) else "")
    if invitation.status != InvitationStatus.SENT or invitation.channel != "sms":
        # Answered, expired or cancelled meanwhile: nothing to fall back from.
        return "too_late"
    _fall_back(invitation, reason, now)
    return "fell_back"


def _fall_back(invitation: Invitation, reason: str, now: datetime) -> None:
    """Hand the invitation back to the dispatcher on its next channel, due now."""
    invitation.status = InvitationStatus.PENDING
    invitation.channel_index += 1
    invitation.attempts = 0
    invitation.next_attempt_at = now
    invitation.last_error = reason[:200]
    # The texted link never arrived; the next channel sends a fresh one.
    invitation.channel = None
    invitation.token = None
    invitation.token_hash = None
    invitation.sent_at = None
    invitation.expires_at = None
    invitation.reminder_due_at = None
