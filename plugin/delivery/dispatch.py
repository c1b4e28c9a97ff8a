"""Jobs that move invitations: send the due ones, remind once, expire the stale. Safe to rerun."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, object_session, sessionmaker

from plugin.core.crypto import Vault, hash_token, new_token
from plugin.core.models import Invitation, InvitationStatus, SchedulePolicy
from plugin.core.queue import drain, retry_at
from plugin.delivery.channels import Channel, DeliveryError, Outgoing
from plugin.delivery.unsubscribe import unsubscribe_link
from plugin.planning.consent import has_sms_consent
from plugin.planning.optouts import is_opted_out
from plugin.planning.policy import Policy, reminder_time, send_deadline

log = logging.getLogger(__name__)

# Which contact field each channel needs.
ADDRESS = {"email": "email", "sms": "phone"}
# Why a phone number was not texted; an invitation records it (no PHI).
NO_SMS_CONSENT = "sms: no consent to texts on record"


@dataclass(frozen=True)
class DispatchSettings:
    """What the dispatcher needs from config."""

    base_url: str
    max_attempts: int
    retry: timedelta
    batch: int

    @classmethod
    def from_config(cls, config: dict) -> "DispatchSettings":
        """Read the settings from a Flask config."""
        return cls(
            base_url=config["PUBLIC_BASE_URL"].rstrip("/"),
            max_attempts=config["DELIVERY_MAX_ATTEMPTS"],
            retry=timedelta(seconds=config["DELIVERY_RETRY_SECONDS"]),
            batch=config["BATCH_SIZE"],
        )


def policy_of(session: Session, invitation: Invitation) -> Policy:
    """Return the schedule policy version that chose this invitation."""
    if invitation.policy_id is None:
        return Policy(questionnaire=invitation.questionnaire)
    return Policy.from_dict(session.get(SchedulePolicy, invitation.policy_id).settings)


def _purge(invitation: Invitation) -> None:
    """Forget how to reach the client and the link: nothing more will be sent."""
    invitation.contact = None
    invitation.token = None


def _outgoing(
    invitation: Invitation, to: str, token: str, settings, now, expires_at, *, reminder=False
) -> Outgoing:
    return Outgoing(
        key=invitation.id,
        to=to,
        link=f"{settings.base_url}/q/{token}",
        unsubscribe_link=unsubscribe_link(settings.base_url, invitation.id),
        practice_name=invitation.practice.name,
        language=invitation.language,
        sent_at=now,
        expires_at=expires_at,
        reminder=reminder,
        # The deadline is shown in the client's own time.
        timezone=invitation.timezone or invitation.practice.timezone,
    )


def _cancel_if_opted_out(session: Session, invitation: Invitation) -> bool:
    # Opting out cancels invitations at once; this catches one claimed just before.
    if invitation.patient_ref and is_opted_out(
        session, invitation.practice_id, invitation.patient_ref
    ):
        invitation.status = InvitationStatus.CANCELLED
        invitation.last_error = "opted out"
        _purge(invitation)
        return True
    return False


def _send(invitation: Invitation, channels: dict[str, Channel], vault: Vault, settings, now):
    """Send on the current channel, falling back along the order; record what happened."""
    session = object_session(invitation)
    if _cancel_if_opted_out(session, invitation):
        return False
    policy = policy_of(session, invitation)
    if now > send_deadline(policy, invitation.due_at):
        # Planned in time but not sent in time (a worker or mail outage, retries): a client
        # asked days after the session rates one they no longer remember well.
        invitation.status = InvitationStatus.CANCELLED
        invitation.last_error = "stale"
        _purge(invitation)
        return False
    contact = vault.open(invitation.contact)
    errors = []
    while invitation.channel_index < len(invitation.channels):
        name = invitation.channels[invitation.channel_index]
        address = contact.get(ADDRESS[name])
        if not address:
            invitation.channel_index += 1
            continue
        if name == "sms" and not _may_text(session, invitation):
            # The last check before a text leaves: consent may have been revoked since planning.
            errors.append(NO_SMS_CONSENT)
            invitation.channel_index += 1
            invitation.attempts = 0
            continue
        expires_at = now + timedelta(hours=policy.expires_after_hours)
        token = vault.open(invitation.token)
        outgoing = _outgoing(invitation, address, token, settings, now, expires_at)
        try:
            # A crash between this send and the commit leaves the row leased, so it is sent
            # again after the lease (plugin.core.queue): at most one extra message, and with
            # the same link, fixed when the row was claimed.
            message_id = channels[name].send(outgoing)
        except DeliveryError as exc:
            invitation.attempts += 1
            invitation.last_error = f"{name}: {exc.reason}"[:200]
            if not exc.permanent and invitation.attempts < settings.max_attempts:
                invitation.next_attempt_at = retry_at(now, invitation.attempts, settings.retry)
                return False
            errors.append(invitation.last_error)
            # This channel is done for; the next one in the order gets a fresh count.
            invitation.channel_index += 1
            invitation.attempts = 0
            continue
        invitation.status = InvitationStatus.SENT
        invitation.channel = name
        # Twilio's status callbacks find the text by this; the SID itself is not kept.
        invitation.sms_sid_hash = hash_token(message_id) if message_id else None
        invitation.sent_at = now
        invitation.expires_at = expires_at
        invitation.reminder_due_at = reminder_time(
            policy, now, expires_at, invitation.timezone or invitation.practice.timezone
        )
        invitation.attempts = 0
        invitation.last_error = None
        return True
    invitation.status = InvitationStatus.FAILED
    invitation.last_error = _failure(session, invitation, contact, errors)[:200]
    _purge(invitation)
    return False


def _may_text(session: Session, invitation: Invitation) -> bool:
    """Say whether the client's consent to texts at this number is on record and active."""
    return has_sms_consent(
        session, invitation.practice_id, invitation.patient_ref, invitation.phone_digest
    )


def _failure(session: Session, invitation: Invitation, contact: dict, errors: list[str]) -> str:
    """Say why no channel reached the client, in codes and words only."""
    if errors:
        return "; ".join(errors)
    # A failed text reported by Twilio's status callback (plugin.delivery.status).
    if invitation.last_error:
        return invitation.last_error
    if contact.get("phone") and not _may_text(session, invitation):
        # Planning left SMS out of the order for want of consent.
        return NO_SMS_CONSENT
    return "no address for any channel in the schedule"


def _remind(invitation: Invitation, channels: dict[str, Channel], vault: Vault, settings, now):
    """Send the one reminder with the same link, on the channel that reached the client."""
    session = object_session(invitation)
    if _cancel_if_opted_out(session, invitation):
        return False
    if invitation.expires_at <= now:
        invitation.reminder_due_at = None
        return False
    if invitation.channel == "sms" and not _may_text(session, invitation):
        invitation.reminder_due_at = None
        invitation.last_error = f"reminder {NO_SMS_CONSENT}"
        return False
    to = vault.open(invitation.contact)[ADDRESS[invitation.channel]]
    outgoing = _outgoing(
        invitation,
        to,
        vault.open(invitation.token),
        settings,
        now,
        invitation.expires_at,
        reminder=True,
    )
    try:
        channels[invitation.channel].send(outgoing)
    except DeliveryError as exc:
        invitation.attempts += 1
        invitation.last_error = f"reminder {invitation.channel}: {exc.reason}"[:200]
        retry = retry_at(now, invitation.attempts, settings.retry)
        # A reminder is a courtesy: after a permanent error, or once retrying would run into
        # the expiry, it is dropped rather than sent late.
        keep = not exc.permanent and invitation.attempts < settings.max_attempts
        invitation.reminder_due_at = retry if keep and retry < invitation.expires_at else None
        return False
    invitation.reminded_at = now
    invitation.reminder_due_at = None
    invitation.attempts = 0
    return True


def _link_for(vault: Vault):
    """Return the claim hook that gives an invitation its link once, committed before any send."""

    def fix_link(invitation: Invitation) -> None:
        # Committed with the claim, before the send: a message that went out just before a
        # crash carries the link the retry repeats, and that the survey accepts once sent.
        if invitation.token is None:
            token, invitation.token_hash = new_token()
            invitation.token = vault.seal(token)

    return fix_link


def _each(step, event: str, channels, vault: Vault, settings, now):
    """Return what drain() runs per row: one send, recorded so that it never blocks the queue."""

    def process(invitation: Invitation) -> bool:
        try:
            sent = step(invitation, channels, vault, settings, now)
        except Exception as exc:
            # Unexpected: count it as a failed attempt and keep only the type (the text may
            # hold an address). The row's lease (plugin.core.queue.LEASE) makes the next try wait.
            invitation.attempts += 1
            invitation.last_error = f"internal error ({type(exc).__name__})"
            sent = False
        extra = {"invitation_id": invitation.id, "status": invitation.status}
        if sent:
            log.info(event, extra=extra)
        else:
            log.warning(f"{event}_failed", extra={**extra, "reason": invitation.last_error})
        return sent

    return process


def dispatch_due(
    sessions: sessionmaker,
    channels: dict[str, Channel],
    vault: Vault,
    settings: DispatchSettings,
    now: datetime,
) -> int:
    """Send every invitation that is due; return how many went out."""
    send = _each(_send, "invitation.sent", channels, vault, settings, now)
    return drain(sessions, Invitation, now, settings.batch, send, on_claim=_link_for(vault))


def remind_due(
    sessions: sessionmaker,
    channels: dict[str, Channel],
    vault: Vault,
    settings: DispatchSettings,
    now: datetime,
) -> int:
    """Send every reminder that is due to a client who has not answered; return how many."""
    remind = _each(_remind, "invitation.reminded", channels, vault, settings, now)
    return drain(
        sessions,
        Invitation,
        now,
        settings.batch,
        remind,
        status=InvitationStatus.SENT,
        due="reminder_due_at",
    )


def expire_stale(sessions: sessionmaker, now: datetime) -> int:
    """Mark sent invitations past their deadline expired and purge their contact details."""
    with sessions() as session, session.begin():
        result = session.execute(
            update(Invitation)
            .where(Invitation.status == InvitationStatus.SENT, Invitation.expires_at <= now)
            .values(status=InvitationStatus.EXPIRED, contact=None, token=None, reminder_due_at=None)
        )
    return result.rowcount
