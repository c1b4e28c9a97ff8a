"""Plan acknowledged sessions: find the client, number the session, let the schedule decide.

The webhook only records a session; this job turns it into an Invitation (planned) or
records why not (skipped, unmatched, failed). It runs in the worker because a Zoom client
must first be looked up on the platform and in the EHR, which takes longer than Zoom waits.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, object_session, sessionmaker

from plugin.core.crypto import Vault
from plugin.core.i18n import choose_language
from plugin.core.models import Invitation, Practice, SessionEvent, SessionStatus
from plugin.core.queue import drain, retry_at
from plugin.planning.consent import consented_channels
from plugin.planning.ehr_consent import ConsentReader
from plugin.planning.optouts import is_opted_out, phone_digest
from plugin.planning.policy import decide, send_time
from plugin.planning.resolution import Matched, ResolutionError, Unmatched
from plugin.planning.schedules import current_policy, previous_due_at, session_number

log = logging.getLogger(__name__)

# Given a practice and the job's session, return the function that finds a session's client.
ResolverFor = Callable[[Practice, Session], Callable[[SessionEvent], Matched | Unmatched]]
# Given a practice, return the function that reads a client's texting Consents from its EHR.
ConsentsFor = Callable[[Practice], ConsentReader]


@dataclass(frozen=True)
class PlanSettings:
    """What the planning job needs from config."""

    max_attempts: int
    retry: timedelta
    batch: int

    @classmethod
    def from_config(cls, config: dict) -> "PlanSettings":
        """Read the settings from a Flask config."""
        return cls(
            max_attempts=config["PLAN_MAX_ATTEMPTS"],
            retry=timedelta(seconds=config["PLAN_RETRY_SECONDS"]),
            batch=config["BATCH_SIZE"],
        )


def _close(event: SessionEvent, status: str, reason: str) -> bool:
    event.status = status
    event.reason = reason
    # The contact was only kept to hand to an invitation; without one it goes now.
    event.contact = None
    log.info(
        "session.planned",
        extra={"session_event_id": event.id, "status": status, "reason": reason},
    )
    return status == SessionStatus.PLANNED


def _invite(session: Session, event: SessionEvent, contact: dict, from_ehr, now: datetime) -> bool:
    """Ask the schedule about a session whose client is known; add its Invitation if asked."""
    event.session_number = session_number(
        session, event.practice_id, event.patient_ref, event.ended_at, event.session_id
    )
    channels = consented_channels(session, event, contact, now, from_ehr)
    if is_opted_out(session, event.practice_id, event.patient_ref):
        return _close(event, SessionStatus.SKIPPED, "opted_out")
    policy, policy_id, version = current_policy(session, event.practice_id, event.practitioner_ref)
    timezone = event.timezone or event.practice.timezone
    # The gap is checked both ways: an invitation already planned for a later session (one
    # that arrived first) counts too, so look up to a gap past this one's send time.
    horizon = send_time(policy, event.ended_at, timezone) + timedelta(days=policy.min_gap_days)
    decision = decide(
        policy,
        session_number=event.session_number,
        ended_at=event.ended_at,
        timezone=timezone,
        previous_due_at=previous_due_at(session, event.practice_id, event.patient_ref, horizon),
        # After a worker outage, a session too long past is skipped, not asked days late.
        now=now,
    )
    if not decision.ask:
        return _close(event, SessionStatus.SKIPPED, decision.reason)
    session.add(
        Invitation(
            practice_id=event.practice_id,
            session_event_id=event.id,
            questionnaire=policy.questionnaire,
            patient_ref=event.patient_ref,
            policy_id=policy_id,
            policy_version=version,
            contact=event.contact,
            phone_digest=phone_digest(contact["phone"]) if contact.get("phone") else None,
            language=choose_language(event.language, policy.language),
            timezone=timezone,
            channels=[name for name in policy.channels if name in channels],
            due_at=decision.due_at,
            next_attempt_at=decision.due_at,
            created_at=now,
        )
    )
    return _close(event, SessionStatus.PLANNED, decision.reason)


def _plan(
    event: SessionEvent,
    vault: Vault,
    resolver_for: ResolverFor,
    consents_for: ConsentsFor,
    settings: PlanSettings,
    now,
) -> bool:
    session = object_session(event)
    try:
        # The look-up talks to the platform and the EHR, so it runs before this session opens
        # a transaction: on SQLite that would hold the write lock across the network calls.
        # An admin-linked session knows its Patient but not yet their contact details.
        if event.patient_ref is None or (event.match_method == "admin" and event.contact is None):
            found = resolver_for(event.practice, session)(event)
            if isinstance(found, Unmatched):
                return _close(event, SessionStatus.UNMATCHED, found.reason)
            event.patient_ref = found.patient_ref
            event.match_method = found.method
            event.contact = vault.seal({"email": found.email, "phone": found.phone})
        contact = vault.open(event.contact)
        # Only a client with a number to text needs the EHR's word on texting; it is read
        # here, outside the savepoint, like the look-up.
        from_ehr = consents_for(event.practice)(event.patient_ref) if contact.get("phone") else None
        # A savepoint, so a failure half-way leaves no invitation behind the retry.
        with session.begin_nested():
            return _invite(session, event, contact, from_ehr, now)
    except Exception as exc:
        # Only the reason or the type is kept: an exception's text may quote an address.
        retryable = getattr(exc, "retryable", True)
        reason = exc.reason if isinstance(exc, ResolutionError) else type(exc).__name__
        event.attempts += 1
        event.last_error = reason
        if not retryable or event.attempts >= settings.max_attempts:
            _close(event, SessionStatus.FAILED, reason[:64])
        else:
            event.next_attempt_at = retry_at(now, event.attempts, settings.retry)
        log.warning(
            "session.plan_failed",
            extra={"session_event_id": event.id, "reason": reason, "status": event.status},
        )
        return False


def plan_due(
    sessions: sessionmaker,
    vault: Vault,
    resolver_for: ResolverFor,
    settings: PlanSettings,
    now: datetime,
    consents_for: ConsentsFor = lambda _practice: lambda _patient_ref: None,
) -> int:
    """Plan every recorded session that is due; return how many got an invitation."""
    return drain(
        sessions,
        SessionEvent,
        now,
        settings.batch,
        lambda event: _plan(event, vault, resolver_for, consents_for, settings, now),
    )
