"""Install and uninstall practices from a platform: the rows, the sealed token, the audit trail."""

import logging
from datetime import datetime, timedelta

import requests
from flask import current_app
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from plugin.core.db import Base
from plugin.core.models import (
    OPEN_INVITATIONS,
    EhrWrite,
    InstallEvent,
    Invitation,
    Practice,
    PracticeStatus,
    SessionEvent,
    WriteStatus,
)
from plugin.install.platform_api import keep, revoke
from plugin.install.platforms import settings_for

log = logging.getLogger(__name__)

# An installed practice writes nowhere until its admin runs `alliance-check ehr connect`;
# writes wait (sealed) meanwhile, like during an EHR outage.
UNCONNECTED_EHR = ""
# Answers a client submitted before an uninstall still reach the EHR for this long.
DELIVER_WITHIN = timedelta(hours=24)
# An uninstalled practice's account_id while it waits to be purged: frees the real one.
TOMBSTONE = "uninstalled:"


def _find(session: Session, platform: str, account_id: str) -> Practice | None:
    return session.scalar(
        select(Practice).where(Practice.platform == platform, Practice.account_id == account_id)
    )


def _audit(session: Session, practice: Practice, action: str, now: datetime, **detail) -> None:
    session.add(
        InstallEvent(
            practice_id=practice.id,
            platform=practice.platform,
            account_id=practice.account_id,
            action=action,
            detail=detail,
            created_at=now,
        )
    )


def install(
    session: Session,
    *,
    platform: str,
    account_id: str,
    name: str,
    token: dict,
    now: datetime,
    timezone: str = "UTC",
) -> Practice:
    """Create the installation, or re-authorise an existing one; seal the token; commit.

    Re-authorising keeps the practice's data (schedules, EHR connection, history) and sets it
    active again. After an uninstall the account starts clean: a new practice with a new id.
    Needs an app context (the vault).
    """
    sealed = current_app.extensions["vault"].seal(keep(token))
    practice = _find(session, platform, account_id)
    if practice is None:
        practice = Practice(
            platform=platform,
            account_id=account_id,
            name=name,
            timezone=timezone,
            ehr_target=UNCONNECTED_EHR,
            status=PracticeStatus.ACTIVE,
            platform_token=sealed,
            created_at=now,
        )
        session.add(practice)
        try:
            session.flush()
        except IntegrityError:
            # Another callback for the same account won the insert: re-authorise that one.
            session.rollback()
            return install(
                session,
                platform=platform,
                account_id=account_id,
                name=name,
                token=token,
                now=now,
                timezone=timezone,
            )
        _audit(session, practice, "installed", now)
    else:
        previous = practice.status
        practice.platform_token = sealed
        practice.status = PracticeStatus.ACTIVE
        _audit(session, practice, "reinstalled", now, previous_status=previous)
    session.commit()
    log.info("install.done", extra={"practice_id": practice.id, "platform": platform})
    return practice


def _count(session: Session, model, practice_id: str, *conditions) -> int:
    return session.scalar(
        select(func.count()).select_from(model).where(model.practice_id == practice_id, *conditions)
    )


def _revoke(practice: Practice, http: requests.Session | None) -> bool:
    """Revoke the practice's platform grant where the platform allows it; never raise."""
    settings = settings_for(current_app.config, practice.platform)
    if practice.platform_token is None or settings is None:
        return False
    try:
        token = current_app.extensions["vault"].open(practice.platform_token)
        if http is not None:
            return revoke(settings, token, http)
        with requests.Session() as own:
            return revoke(settings, token, own)
    except Exception as exc:
        # Nothing may stop the purge: the practice asked for its data to be gone.
        log.warning("uninstall.revoke_failed", extra={"error": type(exc).__name__})
        return False


# The rows an uninstalled practice keeps while answers are still owed to its EHR; every other
# table with a practice_id (schedules, opt-outs, API tokens, audit, launches, ...) is emptied.
_KEPT = {"practices", "session_events", "invitations", "ehr_writes", "ehr_connections"}
# install_events outlive the practice: the audit trail of installs and uninstalls.
_AUDIT = "install_events"


def _undelivered(practice_id: str):
    return (EhrWrite.practice_id == practice_id, EhrWrite.status != WriteStatus.DONE)


def _strip(session: Session, practice: Practice, now: datetime) -> int:
    """Delete all of a practice but the answers still owed to its EHR; return how many those are.

    What stays is what the EHR write drain needs: the writes (sealed bundles), the invitations
    and session events they hang from (without contact details or links), the practice row and
    its EHR connection. The drain's EHR credentials never depended on the platform's grant.
    """
    practice_id = practice.id
    owed = select(EhrWrite.invitation_id).where(*_undelivered(practice_id))
    session.execute(
        delete(EhrWrite).where(
            EhrWrite.practice_id == practice_id, EhrWrite.status == WriteStatus.DONE
        )
    )
    session.execute(
        delete(Invitation).where(Invitation.practice_id == practice_id, Invitation.id.not_in(owed))
    )
    session.execute(
        update(Invitation)
        .where(Invitation.practice_id == practice_id)
        .values(contact=None, token=None, token_hash=None, phone_digest=None, reminder_due_at=None)
    )
    events = select(Invitation.session_event_id).where(Invitation.practice_id == practice_id)
    session.execute(
        delete(SessionEvent).where(
            SessionEvent.practice_id == practice_id, SessionEvent.id.not_in(events)
        )
    )
    session.execute(
        update(SessionEvent).where(SessionEvent.practice_id == practice_id).values(contact=None)
    )
    for table in Base.metadata.sorted_tables:
        if "practice_id" in table.c and table.name not in _KEPT | {_AUDIT}:
            session.execute(delete(table).where(table.c.practice_id == practice_id))
    deadline = now + DELIVER_WITHIN
    # A dead-lettered answer gets its retries again until the deadline: no admin is left to
    # requeue it.
    session.execute(
        update(EhrWrite)
        .where(EhrWrite.practice_id == practice_id, EhrWrite.status == WriteStatus.DEAD)
        .values(status=WriteStatus.PENDING, next_attempt_at=now, retry_until=deadline)
    )
    practice.status = PracticeStatus.UNINSTALLED
    practice.platform_token = None
    practice.purge_after = deadline
    # Frees the account for a clean reinstall, and its webhooks now find no practice.
    practice.account_id = f"{TOMBSTONE}{practice_id}"
    return _count(session, EhrWrite, practice_id)


def uninstall(
    session: Session,
    *,
    platform: str,
    account_id: str,
    now: datetime,
    http: requests.Session | None = None,
    action: str = "uninstalled",
    actor: str | None = None,
) -> bool:
    """Revoke the practice's tokens (best effort), purge it but for answers owed to its EHR; commit.

    The platform's uninstall is recorded as "uninstalled"; an admin's removal passes
    action="removed" and who did it (`actor`, e.g. "cli").

    Returns False, storing nothing, when the account is not installed. Invitations are
    cancelled and contact details purged at once. Answers a client already submitted were
    acknowledged, so they still go to the practice's EHR, for up to DELIVER_WITHIN; then
    purge_uninstalled deletes the practice. With nothing owed, it is deleted at once.
    Needs an app context (config and vault), as the webhook view and the jobs have.
    """
    practice = _find(session, platform, account_id)
    if practice is None:
        log.info("uninstall.unknown_account", extra={"platform": platform})
        return False

    # End the read before the network call: on SQLite an open transaction holds the write
    # lock, and every webhook would wait for the platform's revocation endpoint.
    session.commit()
    tokens_revoked = _revoke(practice, http)

    practice_id = practice.id
    counts = {
        "session_events": _count(session, SessionEvent, practice_id),
        "invitations_purged": _count(
            session, Invitation, practice_id, Invitation.status.in_(OPEN_INVITATIONS)
        ),
        "invitations": _count(session, Invitation, practice_id),
        # Answers not yet in the EHR (pending, or dead-lettered awaiting a retry): delivered
        # before the practice is purged.
        "ehr_writes_owed": _count(
            session, EhrWrite, practice_id, EhrWrite.status != WriteStatus.DONE
        ),
    }
    by = {"actor": actor} if actor else {}
    _audit(session, practice, action, now, tokens_revoked=tokens_revoked, **by, **counts)
    if _strip(session, practice, now) == 0:
        _purge(session, practice_id)
    session.commit()
    log.info(
        "uninstall.done",
        extra={"practice_id": practice_id, "platform": platform, "action": action, **counts},
    )
    return True


def _purge(session: Session, practice_id: str) -> None:
    # A Core delete, so the database's ON DELETE CASCADE removes what is left (writes,
    # invitations, events, the EHR connection) in the same transaction as the audit row.
    session.execute(delete(Practice).where(Practice.id == practice_id))


def purge_uninstalled(sessions: sessionmaker, now: datetime) -> int:
    """Delete uninstalled practices whose answers all reached the EHR, or whose time is up.

    Returns how many were deleted. Each is audited ("purged") with how many answers were
    delivered after the uninstall and how many were dropped at the deadline. Safe to rerun.
    """
    purged = 0
    with sessions() as session, session.begin():
        owed = select(EhrWrite.id).where(
            EhrWrite.practice_id == Practice.id, EhrWrite.status != WriteStatus.DONE
        )
        practices = session.scalars(
            select(Practice).where(
                Practice.status == PracticeStatus.UNINSTALLED,
                or_(Practice.purge_after <= now, ~owed.exists()),
            )
        ).all()
        for practice in practices:
            counts = {
                "ehr_writes_delivered": _count(
                    session, EhrWrite, practice.id, EhrWrite.status == WriteStatus.DONE
                ),
                "ehr_writes_dropped": _count(
                    session, EhrWrite, practice.id, EhrWrite.status != WriteStatus.DONE
                ),
            }
            _audit(session, practice, "purged", now, **counts)
            _purge(session, practice.id)
            log.info("uninstall.purged", extra={"practice_id": practice.id, **counts})
            purged += 1
    return purged
