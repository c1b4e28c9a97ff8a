"""Install and uninstall practices from a platform: the rows, the sealed token, the audit trail."""

import logging
from datetime import datetime

import requests
from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
    """Revoke the practice's tokens (best effort), delete every row of it, audit; commit.

    The platform's uninstall is recorded as "uninstalled"; an admin's removal passes
    action="removed" and who did it (`actor`, e.g. "cli").

    Returns False, storing nothing, when the account is not installed. Answers still waiting
    for the EHR are deleted with the practice: it withdrew its authority to receive them.
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
        # Answers not yet in the EHR (pending, or dead-lettered awaiting a retry).
        "ehr_writes_dropped": _count(
            session, EhrWrite, practice_id, EhrWrite.status != WriteStatus.DONE
        ),
    }
    by = {"actor": actor} if actor else {}
    _audit(session, practice, action, now, tokens_revoked=tokens_revoked, **by, **counts)
    # A Core delete, so the database's ON DELETE CASCADE removes the events, invitations (with
    # contacts and link tokens), EHR writes, EHR connection, schedules and opt-outs, in the
    # same transaction as the audit row; the ORM would try to unlink children one by one.
    session.execute(delete(Practice).where(Practice.id == practice_id))
    session.commit()
    log.info(
        "uninstall.done",
        extra={"practice_id": practice_id, "platform": platform, "action": action, **counts},
    )
    return True
