"""Schedule policies in the database, versioned, and the `schedule` command that changes them."""

import functools
import json
import tomllib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import click
from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fhir_mappings.instrument import load_bundled
from plugin.core.db import database
from plugin.core.models import Invitation, InvitationStatus, Practice, SchedulePolicy, SessionEvent
from plugin.core.tenancy import PracticeError, find_practice, platform_option
from plugin.planning.policy import Policy, PolicyError, preview, zone

# The built-in default: a practice with no stored policy records version 0 (policy_id None).
DEFAULT_VERSION = 0
# Invitations in these states never reached the client, so they do not count towards the gap.
_NOT_SENT = (InvitationStatus.FAILED, InvitationStatus.CANCELLED)
# Two admins saving at once collide on the unique version; the loser retries on top.
_SET_ATTEMPTS = 3
# The made-up client's sessions end just before the default quiet hours, so the push shows.
PREVIEW_SESSION_END = time(20, 55)


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


def _loaded(row: SchedulePolicy) -> Policy:
    try:
        return Policy.from_dict(row.settings)
    except PolicyError as exc:
        # Valid when stored; only a code change can make it not so. Say which row to fix.
        raise PolicyError(
            f"stored schedule policy {row.id} (version {row.version}): {exc}"
        ) from exc


def current_policy(
    session: Session, practice_id: str, practitioner_ref: str | None
) -> tuple[Policy, str | None, int]:
    """Return (policy, id, version): the practitioner's, else the practice's, else default."""
    refs = [practitioner_ref, ""] if practitioner_ref else [""]
    for ref in refs:
        row = _latest(session, practice_id, ref)
        if row is not None:
            return _loaded(row), row.id, row.version
    return default_policy(), None, DEFAULT_VERSION


def set_policy(
    session: Session,
    practice_id: str,
    practitioner_ref: str | None,
    policy: Policy,
    now: datetime,
) -> SchedulePolicy:
    """Add the next version (never update a row); the caller commits."""
    ref = practitioner_ref or ""
    for attempt in range(_SET_ATTEMPTS):
        latest = session.scalar(
            select(func.max(SchedulePolicy.version)).where(
                SchedulePolicy.practice_id == practice_id,
                SchedulePolicy.practitioner_ref == ref,
            )
        )
        row = SchedulePolicy(
            practice_id=practice_id,
            practitioner_ref=ref,
            version=(latest or DEFAULT_VERSION) + 1,
            settings=policy.to_dict(),
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


# ---- the `schedule` command -------------------------------------------------------------------


def _practice(session: Session, account: str, platform: str) -> Practice:
    try:
        return find_practice(session, account, platform)
    except PracticeError as exc:
        raise click.ClickException(str(exc)) from exc


def _source(practitioner_ref: str | None, policy_id: str | None, version: int, session, practice):
    if policy_id is None:
        return "the built-in default (nothing stored yet)"
    if practitioner_ref and _latest(session, practice.id, practitioner_ref) is not None:
        return f"the override for {practitioner_ref}, version {version}"
    override = f" ({practitioner_ref} has no override)" if practitioner_ref else ""
    return f"the practice policy, version {version}{override}"


def to_toml(policy: Policy) -> str:
    """Return the policy as TOML lines, in the shape config/schedules/*.toml uses."""
    # JSON strings, integers and string lists are also valid TOML values.
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in policy.to_dict().items())


def _checked(policy_data: dict) -> Policy:
    try:
        policy = Policy.from_dict(policy_data)
    except PolicyError as exc:
        raise click.ClickException(f"{exc}; nothing stored") from exc
    offered = current_app.extensions["instruments"]
    if policy.questionnaire not in offered:
        raise click.ClickException(
            f"questionnaire {policy.questionnaire!r} is not installed; this deployment offers: "
            f"{', '.join(sorted(offered))}; nothing stored"
        )
    return policy


def _from_file(path: Path, questionnaire: str) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(
            f"cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"{path} is not valid TOML: {exc}") from exc
    # Schedule files describe timing; which instrument a practice is licensed for stays put.
    data.setdefault("questionnaire", questionnaire)
    return data


def _parse_assignment(assignment: str) -> tuple[str, object]:
    key, equals, raw = assignment.partition("=")
    key, raw = key.strip(), raw.strip()
    if not (equals and key):
        raise click.BadParameter(f"{assignment!r} is not key=value", param_hint="--set")
    try:
        # TOML values: 6, ["sms", "email"], "es"; anything else is taken as a bare string.
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if key == "channels" and isinstance(value, str):
        value = [c.strip() for c in value.split(",")]  # --set channels=sms,email
    return key, value


@click.group("schedule", cls=AppGroup)
def schedule_cli() -> None:
    """Show, change and preview practices' questionnaire schedules."""


_account = click.argument("account")
_practitioner = click.option(
    "--practitioner", "practitioner_ref", help="A practitioner's override, e.g. Practitioner/42."
)


@schedule_cli.command("show", short_help="Print the policy in effect and its version.")
@_account
@platform_option
@_practitioner
def show_command(account: str, platform: str, practitioner_ref: str | None) -> None:
    """Print the policy in effect for ACCOUNT (or one practitioner there), and its version."""
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        policy, policy_id, version = current_policy(session, practice.id, practitioner_ref)
        source = _source(practitioner_ref, policy_id, version, session, practice)
    click.echo(f"# {practice.name} ({account}): {source}")
    click.echo(to_toml(policy))


@schedule_cli.command("set", short_help="Store the next version of a policy.")
@_account
@platform_option
@_practitioner
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A whole policy, e.g. config/schedules/sms-first.toml; unnamed settings take defaults.",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one setting of the policy in effect; repeat for more.",
)
def set_command(
    account: str,
    platform: str,
    practitioner_ref: str | None,
    file: Path | None,
    assignments: tuple[str, ...],
) -> None:
    """Store a new version of ACCOUNT's policy (or a practitioner's override)."""
    if bool(file) == bool(assignments):
        raise click.UsageError("give either --file or one or more --set key=value")
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        current, _, _ = current_policy(session, practice.id, practitioner_ref)
        if file:
            data = _from_file(file, current.questionnaire)
        else:
            data = current.to_dict() | dict(_parse_assignment(a) for a in assignments)
        policy = _checked(data)
        same_level = _latest(session, practice.id, practitioner_ref or "")
        if same_level is not None and _loaded(same_level) == policy:
            click.echo(f"unchanged: version {same_level.version} already says this")
            return
        row = set_policy(session, practice.id, practitioner_ref, policy, datetime.now(UTC))
        session.commit()
    whose = f"the override for {practitioner_ref}" if practitioner_ref else "the practice policy"
    click.echo(f"stored {whose} of {account} as version {row.version}")


def _next_monday(today: date) -> date:
    return today + timedelta(days=7 - today.weekday())


_REASONS = {
    "first_sessions": "one of the first {p.first_sessions}",
    "every_kth": "then one in every {p.then_every}",
    "not_scheduled": "not scheduled",
    "min_gap": "within {p.min_gap_days} days of the last one",
}


def _local(moment: datetime | None, timezone: str) -> str:
    return moment.astimezone(zone(timezone)).strftime("%a %Y-%m-%d %H:%M") if moment else "-"


@schedule_cli.command("preview", short_help="Show which of sessions 1-20 would be asked, and when.")
@_account
@platform_option
@_practitioner
@click.option("--timezone", help="The made-up client's IANA zone [default: the practice's].")
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Preview this policy file instead of the stored policy; nothing is stored.",
)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The first session's date [default: next Monday].",
)
def preview_command(
    account: str,
    platform: str,
    practitioner_ref: str | None,
    timezone: str | None,
    file: Path | None,
    start: datetime | None,
) -> None:
    """Print which of a made-up client's weekly sessions 1-20 would be asked, and when."""
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        policy, policy_id, version = current_policy(session, practice.id, practitioner_ref)
        source = _source(practitioner_ref, policy_id, version, session, practice)
    if file:
        policy, source = _checked(_from_file(file, policy.questionnaire)), str(file)
    timezone = timezone or practice.timezone
    try:
        tz = zone(timezone)
    except ValueError as exc:
        raise click.ClickException(f"{exc}; use an IANA name like Europe/Paris") from exc
    first_day = start.date() if start else _next_monday(datetime.now(tz).date())
    first = datetime.combine(first_day, PREVIEW_SESSION_END, tzinfo=tz)

    click.echo(f"# {practice.name} ({account}): {source}")
    click.echo(
        f"# a made-up client in {timezone}, weekly sessions ending "
        f"{PREVIEW_SESSION_END:%H:%M}; all times are the client's local time"
    )
    click.echo(
        f"{'session':>7}  {'ended':<20}  {'asked':<5}  {'why':<30}  {'sent':<20}  "
        "reminder if unanswered"
    )
    asked = []
    for row in preview(policy, first_session=first, timezone=timezone):
        decision = row.decision
        if decision.ask:
            asked.append(str(row.session_number))
        click.echo(
            f"{row.session_number:>7}  {_local(row.ended_at, timezone):<20}  "
            f"{'yes' if decision.ask else 'no':<5}  "
            f"{_REASONS[decision.reason].format(p=policy):<30}  "
            f"{_local(decision.due_at, timezone):<20}  {_local(row.reminder_at, timezone)}"
        )
    click.echo(f"asked after sessions {', '.join(asked) or 'none'}")


def init_app(app: Flask) -> None:
    """Add the `schedule` commands."""
    app.cli.add_command(schedule_cli)
