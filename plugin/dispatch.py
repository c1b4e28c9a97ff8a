"""Jobs that move invitations: send the due ones and expire the stale ones. Safe to rerun."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from plugin.crypto import Vault, new_token
from plugin.mailer import DeliveryError, Mailer
from plugin.messages import invitation_email
from plugin.models import Invitation
from plugin.queue import drain, retry_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchSettings:
    """What the dispatcher needs from config."""

    base_url: str
    sender: str
    ttl: timedelta
    max_attempts: int
    retry: timedelta
    batch: int

    @classmethod
    def from_config(cls, config: dict) -> "DispatchSettings":
        """Read the settings from a Flask config."""
        return cls(
            base_url=config["PUBLIC_BASE_URL"].rstrip("/"),
            sender=config["MAIL_FROM"],
            ttl=timedelta(hours=config["INVITATION_TTL_HOURS"]),
            max_attempts=config["DELIVERY_MAX_ATTEMPTS"],
            retry=timedelta(seconds=config["DELIVERY_RETRY_SECONDS"]),
            batch=config["BATCH_SIZE"],
        )


def _send(invitation: Invitation, mailer: Mailer, vault: Vault, settings, now) -> None:
    contact = vault.open(invitation.contact)
    if not contact.get("email"):
        raise DeliveryError("no email address; SMS is not available yet", permanent=True)
    token, token_hash = new_token()
    expires_at = now + settings.ttl
    message = invitation_email(
        to=contact["email"],
        sender=settings.sender,
        link=f"{settings.base_url}/q/{token}",
        practice_name=invitation.practice.name,
        sent_at=now,
        expires_at=expires_at,
        key=invitation.id,
    )
    # A crash between this send and the commit leaves the row pending, so a later tick sends
    # again with a new link: at least once, never lost (see plugin.queue.drain).
    mailer.send(message, key=invitation.id)
    invitation.token_hash = token_hash
    invitation.status = "sent"
    invitation.channel = mailer.channel
    invitation.sent_at = now
    invitation.expires_at = expires_at
    invitation.last_error = None


def _record_failure(invitation: Invitation, exc: DeliveryError, settings, now) -> None:
    invitation.attempts += 1
    invitation.last_error = exc.reason
    if exc.permanent or invitation.attempts >= settings.max_attempts:
        invitation.status = "failed"
        invitation.contact = None
    else:
        invitation.next_attempt_at = retry_at(now, invitation.attempts, settings.retry)


def _deliver(invitation: Invitation, mailer: Mailer, vault: Vault, settings, now) -> bool:
    try:
        _send(invitation, mailer, vault, settings, now)
    except Exception as exc:
        # Anything unexpected counts as a failed attempt, so one bad row cannot block the
        # queue; only the exception's type is kept, its text may hold an address.
        if not isinstance(exc, DeliveryError):
            exc = DeliveryError(f"internal error ({type(exc).__name__})")
        _record_failure(invitation, exc, settings, now)
        log.warning(
            "invitation.delivery_failed",
            extra={
                "invitation_id": invitation.id,
                "reason": exc.reason,
                "status": invitation.status,
            },
        )
        return False
    log.info("invitation.sent", extra={"invitation_id": invitation.id})
    return True


def dispatch_due(
    sessions: sessionmaker, mailer: Mailer, vault: Vault, settings: DispatchSettings, now: datetime
) -> int:
    """Send every invitation that is due; return how many went out."""
    return drain(
        sessions,
        Invitation,
        now,
        settings.batch,
        lambda invitation: _deliver(invitation, mailer, vault, settings, now),
    )


def expire_stale(sessions: sessionmaker, now: datetime) -> int:
    """Mark sent invitations past their deadline expired and purge their contact details."""
    with sessions() as session, session.begin():
        result = session.execute(
            update(Invitation)
            .where(Invitation.status == "sent", Invitation.expires_at <= now)
            .values(status="expired", contact=None)
        )
    return result.rowcount
