"""The `schedule` command: show, change, preview and trace practices' questionnaire schedules."""

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from plugin.core.db import database
from plugin.core.models import Practice
from plugin.core.tenancy import PracticeError, find_practice, platform_option
from plugin.planning.policy import Policy, PolicyError, zone
from plugin.planning.schedules import (
    PREVIEW_SESSION_END,
    NoOverrideError,
    change_practice_policy,
    check_practitioner_ref,
    current_policy,
    find_override,
    history,
    list_overrides,
    practice_policy,
    preview_schedule,
    remove_override,
    set_override,
)
from plugin.planning.schedules import check_policy as _check_policy

ACTOR = "cli"


def _practice(session: Session, account: str, platform: str) -> Practice:
    try:
        return find_practice(session, account, platform)
    except PracticeError as exc:
        raise click.ClickException(str(exc)) from exc


def _ref(practitioner_ref: str | None) -> str | None:
    if practitioner_ref is None:
        return None
    try:
        return check_practitioner_ref(practitioner_ref)
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--practitioner") from exc


def _source(session: Session, practice: Practice, practitioner_ref: str | None) -> str:
    _, row = practice_policy(session, practice.id)
    base = "the built-in default" if row is None else f"the practice policy, version {row.version}"
    if practitioner_ref:
        try:
            override = find_override(session, practice.id, practitioner_ref)
        except NoOverrideError:
            return f"{base} ({practitioner_ref} has no override)"
        return (
            f"the override for {practitioner_ref}, version {override.version}, which changes "
            f"{', '.join(sorted(override.settings))}; the rest is {base}"
        )
    return base if row else f"{base} (nothing stored yet)"


def to_toml(settings: dict) -> str:
    """Return settings as TOML lines, in the shape config/schedules/*.toml uses."""
    # JSON strings, integers and string lists are also valid TOML values.
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())


def _from_file(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(
            f"cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"{path} is not valid TOML: {exc}") from exc


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


def _checked(settings: dict) -> Policy:
    try:
        return _check_policy(settings)
    except PolicyError as exc:
        raise click.ClickException(f"{exc}; nothing stored") from exc


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
    practitioner_ref = _ref(practitioner_ref)
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        policy, _, _ = current_policy(session, practice.id, practitioner_ref)
        source = _source(session, practice, practitioner_ref)
    click.echo(f"# {practice.name} ({account}): {source}")
    click.echo(to_toml(policy.to_dict()))


@schedule_cli.command("set", short_help="Store the next version of a policy or an override.")
@_account
@platform_option
@_practitioner
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A whole policy, e.g. config/schedules/sms-first.toml; unnamed settings take defaults. "
    "With --practitioner: exactly the settings the override changes.",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one setting of the policy in effect (or of the override); repeat for more.",
)
@click.option(
    "--unset",
    "unset",
    multiple=True,
    metavar="KEY",
    help="With --practitioner: let the override follow the practice for this setting again.",
)
def set_command(
    account: str,
    platform: str,
    practitioner_ref: str | None,
    file: Path | None,
    assignments: tuple[str, ...],
    unset: tuple[str, ...],
) -> None:
    """Store a new version of ACCOUNT's policy (or a practitioner's override)."""
    if bool(file) == bool(assignments or unset):
        raise click.UsageError("give either --file or one or more --set key=value")
    if unset and not practitioner_ref:
        raise click.UsageError("--unset applies to a practitioner's override (--practitioner)")
    practitioner_ref = _ref(practitioner_ref)
    changes = dict(_parse_assignment(a) for a in assignments)
    now = datetime.now(UTC)
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        try:
            if practitioner_ref:
                row = _set_override(session, practice, practitioner_ref, file, changes, unset, now)
            else:
                current, _ = practice_policy(session, practice.id)
                if file:
                    # A file describes timing; the instrument a practice is licensed for stays.
                    data = {"questionnaire": current.questionnaire} | _from_file(file)
                else:
                    data = current.to_dict() | changes
                row = change_practice_policy(session, practice.id, data, actor=ACTOR, now=now)
        except PolicyError as exc:
            raise click.ClickException(f"{exc}; nothing stored") from exc
        if row is None:
            latest = history(session, practice.id, practitioner_ref, limit=1)[0]
            click.echo(f"unchanged: version {latest.version} already says this")
            return
        session.commit()
    whose = f"the override for {practitioner_ref}" if practitioner_ref else "the practice policy"
    click.echo(f"stored {whose} of {account} as version {row.version}")


def _set_override(session, practice, practitioner_ref, file, changes, unset, now):
    if file:
        settings = _from_file(file)
    else:
        try:
            settings = find_override(session, practice.id, practitioner_ref).settings
        except NoOverrideError:
            settings = {}
        settings = {k: v for k, v in (settings | changes).items() if k not in unset}
    return set_override(session, practice.id, practitioner_ref, settings, actor=ACTOR, now=now)


@schedule_cli.command("overrides", short_help="List the practitioners' overrides.")
@_account
@platform_option
def overrides_command(account: str, platform: str) -> None:
    """List ACCOUNT's practitioner overrides: who, version, and the settings each changes."""
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        overrides = list_overrides(session, practice.id)
    if not overrides:
        click.echo("no overrides; every practitioner follows the practice policy")
        return
    click.echo("practitioner\tversion\tchanges")
    for override in overrides:
        changes = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(override.settings.items()))
        click.echo(f"{override.practitioner_ref}\t{override.version}\t{changes}")


@schedule_cli.command("remove-override", short_help="End a practitioner's override.")
@_account
@platform_option
@click.option("--practitioner", "practitioner_ref", required=True, help="e.g. Practitioner/42.")
def remove_override_command(account: str, platform: str, practitioner_ref: str) -> None:
    """End a practitioner's override at ACCOUNT; their clients follow the practice policy."""
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        try:
            row = remove_override(
                session, practice.id, practitioner_ref, actor=ACTOR, now=datetime.now(UTC)
            )
        except NoOverrideError as exc:
            raise click.ClickException(
                f"{exc}; see `alliance-check schedule overrides {account}`"
            ) from exc
        session.commit()
    click.echo(
        f"removed the override for {practitioner_ref} (version {row.version}); "
        "the practice policy applies"
    )


@schedule_cli.command("history", short_help="List the versions of a policy or an override.")
@_account
@platform_option
@_practitioner
def history_command(account: str, platform: str, practitioner_ref: str | None) -> None:
    """List the stored versions of ACCOUNT's policy (or an override), newest first."""
    practitioner_ref = _ref(practitioner_ref)
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        rows = history(session, practice.id, practitioner_ref)
    if not rows:
        click.echo("no versions stored; the built-in default applies")
        return
    click.echo("version\tstored\tsettings")
    for row in rows:
        settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in row.settings.items())
        click.echo(f"{row.version}\t{row.created_at:%Y-%m-%d %H:%M}Z\t{settings or '(removed)'}")


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
    practitioner_ref = _ref(practitioner_ref)
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        policy, _, _ = current_policy(session, practice.id, practitioner_ref)
        source = _source(session, practice, practitioner_ref)
        base, _ = practice_policy(session, practice.id)
    if file:
        # A practice file is a whole policy; an override's file changes the practice's.
        under = base.to_dict() if practitioner_ref else {"questionnaire": policy.questionnaire}
        policy, source = _checked(under | _from_file(file)), str(file)
    timezone = timezone or practice.timezone
    try:
        rows = preview_schedule(policy, timezone, start.date() if start else None)
    except ValueError as exc:
        raise click.ClickException(f"{exc}; use an IANA name like Europe/Paris") from exc

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
    for row in rows:
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
