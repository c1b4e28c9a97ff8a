"""Schedule policies in the database: versioned practice policies and practitioner overrides.

These are the service functions the `schedule` command, the JSON API and the console share.
A practice's policy is a whole policy. A practitioner's override holds only the settings it
changes; the rest come from the practice's policy in effect when a session is planned.
"""

import functools
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from flask import current_app, has_app_context
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_mappings.instrument import load_bundled
from plugin.core import audit
from plugin.core.models import Invitation, InvitationStatus, SchedulePolicy, SessionEvent
from plugin.planning.policy import Policy, PolicyError, PreviewRow, preview, zone

# The built-in default: a practice with no stored policy records version 0 (policy_id None).
DEFAULT_VERSION = 0
# The practice-wide policy's practitioner_ref.
PRACTICE = ""
# Invitations in these states never reached the client, so they do not count towards the gap.
_NOT_SENT = (InvitationStatus.FAILED, InvitationStatus.CANCELLED)
# Two admins saving at once collide on the unique version; the loser retries on top.
_SET_ATTEMPTS = 3
# The made-up client's sessions end just before the default quiet hours, so the push shows.
PREVIEW_SESSION_END = time(20, 55)
# The reference a webhook names a practitioner by (webhooks/schemas/session-ended.schema.json).
PRACTITIONER_REF = re.compile(r"Practitioner/[A-Za-z0-9.\-]{1,64}")


class NoOverrideError(LookupError):
    """The practitioner has no override to change or remove."""


@dataclass(frozen=True)
class Override:
    """A practitioner's override in effect: only the settings it changes, and its version."""

    practitioner_ref: str
    settings: dict
    policy_id: str
    version: int
    created_at: datetime


@functools.cache
def _bundled_canonical() -> str:
    return load_bundled().canonical


def default_questionnaire() -> str:
    """Return the canonical of the questionnaire practices use until they choose another."""
    if has_app_context():
        return current_app.extensions["default_instrument"]
    return _bundled_canonical()


def default_policy() -> Policy:
    """Return the built-in default policy."""
    return Policy(questionnaire=default_questionnaire())


def check_practitioner_ref(practitioner_ref: object) -> str:
    """Return the reference if it is Practitioner/<FHIR id>, as webhooks name practitioners."""
    if not isinstance(practitioner_ref, str) or not PRACTITIONER_REF.fullmatch(practitioner_ref):
        raise PolicyError(
            "practitioner must be a reference like Practitioner/123 (an id of 1 to 64 of "
            "A-Z a-z 0-9 - .), as the platform's webhooks name practitioners",
            "practitioner",
        )
    return practitioner_ref


def check_policy(settings: dict) -> Policy:
    """Return the policy these settings make; PolicyError if invalid or not installed here."""
    policy = Policy.from_dict(settings)
    offered = current_app.extensions["instruments"] if has_app_context() else None
    if offered is not None and policy.questionnaire not in offered:
        raise PolicyError(
            f"questionnaire {policy.questionnaire!r} is not installed; this deployment offers: "
            f"{', '.join(sorted(offered))}",
            "questionnaire",
        )
    return policy


def _latest(session: Session, practice_id: str, practitioner_ref: str) -> SchedulePolicy | None:
    return session.scalar(
        select(SchedulePolicy)
        .where(
            SchedulePolicy.practice_id == practice_id,
            SchedulePolicy.practitioner_ref == practitioner_ref,
        )
        .order_by(SchedulePolicy.version.desc())
        .limit(1)
    )


def _loaded(row: SchedulePolicy, base: Policy | None = None) -> Policy:
    settings = row.settings if base is None else base.to_dict() | row.settings
    try:
        return Policy.from_dict(settings)
    except PolicyError as exc:
        # Valid when stored; only a code change can make it not so. Say which row to fix.
        raise PolicyError(
            f"stored schedule policy {row.id} (version {row.version}): {exc}", exc.field
        ) from exc


def practice_policy(session: Session, practice_id: str) -> tuple[Policy, SchedulePolicy | None]:
    """Return the practice-wide policy in effect and its row (None: the built-in default)."""
    row = _latest(session, practice_id, PRACTICE)
    return (default_policy(), None) if row is None else (_loaded(row), row)


def current_policy(
    session: Session, practice_id: str, practitioner_ref: str | None
) -> tuple[Policy, str | None, int]:
    """Return (policy, id, version) in effect for a practitioner's session at the practice.

    An override's settings are laid over the practice's policy in effect now, so it follows
    later changes to every setting it does not name; id and version are then the override's.
    """
    base, row = practice_policy(session, practice_id)
    if practitioner_ref:
        override = _latest(session, practice_id, practitioner_ref)
        # An empty version is a removed override: nothing changed, the practice's applies.
        if override is not None and override.settings:
            return _loaded(override, base), override.id, override.version
    if row is None:
        return base, None, DEFAULT_VERSION
    return base, row.id, row.version


def _add_version(
    session: Session, practice_id: str, practitioner_ref: str, settings: dict, now: datetime
) -> SchedulePolicy:
    """Add the next version of one practice's (or practitioner's) settings; never update."""
    for attempt in range(_SET_ATTEMPTS):
        latest = session.scalar(
            select(func.max(SchedulePolicy.version)).where(
                SchedulePolicy.practice_id == practice_id,
                SchedulePolicy.practitioner_ref == practitioner_ref,
            )
        )
        row = SchedulePolicy(
            practice_id=practice_id,
            practitioner_ref=practitioner_ref,
            version=(latest or DEFAULT_VERSION) + 1,
            settings=settings,
            created_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            if attempt == _SET_ATTEMPTS - 1:
                raise
            continue
        return row
    raise AssertionError("unreachable")  # pragma: no cover


def set_policy(
    session: Session,
    practice_id: str,
    practitioner_ref: str | None,
    policy: Policy,
    now: datetime,
) -> SchedulePolicy:
    """Add the next version holding the whole policy, unchecked and unaudited; the caller commits.

    For seeding (dev-init, tests, benchmarks); admins change schedules through
    change_practice_policy and set_override.
    """
    return _add_version(session, practice_id, practitioner_ref or PRACTICE, policy.to_dict(), now)


def _changed_fields(before: dict, after: dict) -> list[str]:
    return sorted(key for key in after if before.get(key) != after[key])


def change_practice_policy(
    session: Session, practice_id: str, settings: dict, *, actor: str, now: datetime
) -> SchedulePolicy | None:
    """Store settings as the practice's next version, audited; None if that is in effect.

    Refuses (PolicyError) invalid settings, and settings under which an override would no
    longer make a valid policy. The caller commits.
    """
    policy = check_policy(settings)
    before, latest = practice_policy(session, practice_id)
    if latest is not None and before == policy:
        return None
    for override in list_overrides(session, practice_id):
        try:
            Policy.from_dict(policy.to_dict() | override.settings)
        except PolicyError as exc:
            raise PolicyError(
                f"the override for {override.practitioner_ref} would no longer be valid: {exc}; "
                "change or remove that override first",
                exc.field,
            ) from exc
    row = _add_version(session, practice_id, PRACTICE, policy.to_dict(), now)
    fields = _changed_fields(before.to_dict(), policy.to_dict())
    audit.record(
        session, practice_id, actor, "schedule.set", now=now, version=row.version, fields=fields
    )
    return row


def set_override(
    session: Session,
    practice_id: str,
    practitioner_ref: str,
    settings: dict,
    *,
    actor: str,
    now: datetime,
) -> SchedulePolicy | None:
    """Store a practitioner's override of exactly these settings, audited; None if unchanged.

    The settings it leaves out follow the practice's policy. Refuses (PolicyError) a bad
    reference, no settings, or settings that with the practice's make no valid policy. The
    caller commits.
    """
    ref = check_practitioner_ref(practitioner_ref)
    if not isinstance(settings, dict) or not settings:
        raise PolicyError(
            "an override changes at least one setting; to follow the practice's schedule, "
            "remove the override",
            "settings",
        )
    base, _ = practice_policy(session, practice_id)
    merged = check_policy(base.to_dict() | settings).to_dict()
    # Stored as the policy writes them ("HH:MM", lists), so equal settings compare equal.
    stored = {key: merged[key] for key in settings}
    latest = _latest(session, practice_id, ref)
    if latest is not None and latest.settings == stored:
        return None
    row = _add_version(session, practice_id, ref, stored, now)
    audit.record(
        session,
        practice_id,
        actor,
        "override.set",
        now=now,
        practitioner=ref,
        version=row.version,
        fields=sorted(stored),
    )
    return row


def remove_override(
    session: Session, practice_id: str, practitioner_ref: str, *, actor: str, now: datetime
) -> SchedulePolicy:
    """End a practitioner's override, audited; NoOverrideError if there is none. Caller commits.

    The end is an empty version, so the history (and what invitations recorded) is kept.
    """
    latest = _latest(session, practice_id, practitioner_ref)
    if latest is None or not latest.settings:
        raise NoOverrideError(f"{practitioner_ref} has no override")
    row = _add_version(session, practice_id, practitioner_ref, {}, now)
    audit.record(
        session,
        practice_id,
        actor,
        "override.removed",
        now=now,
        practitioner=practitioner_ref,
        version=row.version,
    )
    return row


def list_overrides(session: Session, practice_id: str) -> list[Override]:
    """Return the practice's overrides in effect, by practitioner reference."""
    newest = (
        select(SchedulePolicy.practitioner_ref, func.max(SchedulePolicy.version).label("version"))
        .where(
            SchedulePolicy.practice_id == practice_id,
            SchedulePolicy.practitioner_ref != PRACTICE,
        )
        .group_by(SchedulePolicy.practitioner_ref)
        .subquery()
    )
    rows = session.scalars(
        select(SchedulePolicy)
        .join(
            newest,
            (SchedulePolicy.practitioner_ref == newest.c.practitioner_ref)
            & (SchedulePolicy.version == newest.c.version),
        )
        .where(SchedulePolicy.practice_id == practice_id)
        .order_by(SchedulePolicy.practitioner_ref)
    )
    return [
        Override(row.practitioner_ref, dict(row.settings), row.id, row.version, row.created_at)
        for row in rows
        if row.settings
    ]


def find_override(session: Session, practice_id: str, practitioner_ref: str) -> Override:
    """Return one practitioner's override in effect; NoOverrideError if there is none."""
    for override in list_overrides(session, practice_id):
        if override.practitioner_ref == practitioner_ref:
            return override
    raise NoOverrideError(f"{practitioner_ref} has no override")


def history(
    session: Session, practice_id: str, practitioner_ref: str | None = None, limit: int = 100
) -> list[SchedulePolicy]:
    """Return the versions of the practice's policy (or one override), newest first.

    An override's version with no settings is where it was removed.
    """
    return list(
        session.scalars(
            select(SchedulePolicy)
            .where(
                SchedulePolicy.practice_id == practice_id,
                SchedulePolicy.practitioner_ref == (practitioner_ref or PRACTICE),
            )
            .order_by(SchedulePolicy.version.desc())
            .limit(limit)
        )
    )


def _next_monday(today: date) -> date:
    return today + timedelta(days=7 - today.weekday())


def preview_schedule(
    policy: Policy, timezone: str, start: date | None = None, sessions: int = 20
) -> list[PreviewRow]:
    """Return what the policy does for a made-up weekly client (ValueError for a bad zone).

    Sessions end at PREVIEW_SESSION_END local time, from `start` or else next Monday.
    """
    tz = zone(timezone)
    first_day = start or _next_monday(datetime.now(tz).date())
    first = datetime.combine(first_day, PREVIEW_SESSION_END, tzinfo=tz)
    return list(preview(policy, first_session=first, timezone=timezone, sessions=sessions))


def session_number(
    session: Session, practice_id: str, patient_ref: str, ended_at: datetime, session_id: str
) -> int:
    """Return this session's place among the client's sessions at the practice, by end time."""
    # By ended_at, not arrival: a replayed or late webhook cannot shift later sessions' numbers.
    earlier = session.scalar(
        select(func.count())
        .select_from(SessionEvent)
        .where(
            SessionEvent.practice_id == practice_id,
            SessionEvent.patient_ref == patient_ref,
            SessionEvent.session_id != session_id,
            (SessionEvent.ended_at < ended_at)
            | ((SessionEvent.ended_at == ended_at) & (SessionEvent.session_id < session_id)),
        )
    )
    return 1 + earlier


def previous_due_at(
    session: Session, practice_id: str, patient_ref: str, before: datetime
) -> datetime | None:
    """Return the latest due_at earlier than `before` of the client's live invitations."""
    # Planning passes the candidate's send time plus the minimum gap as `before`, so an
    # invitation already planned for a later session (a late, out-of-order arrival) is found
    # too; policy.decide() measures the gap both ways.
    return session.scalar(
        select(func.max(Invitation.due_at)).where(
            Invitation.practice_id == practice_id,
            Invitation.patient_ref == patient_ref,
            Invitation.due_at < before,
            Invitation.status.not_in(_NOT_SENT),
        )
    )
