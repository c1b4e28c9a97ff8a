"""Practices (installations): add, check, list and remove them, from code or `practice`."""

import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import click
import requests
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.db import database
from plugin.core.models import Practice
from plugin.core.tenancy import PracticeError, find_practice, platform_option
from plugin.ehr.errors import EhrTargetError
from plugin.ehr.writers import NdjsonSink, sink_for
from plugin.install.lifecycle import uninstall
from webhooks import ADAPTERS
from webhooks.events import is_iana_timezone

# The columns' sizes (core.models.Practice).
NAME_MAX = 200
TIMEZONE_MAX = 64
EHR_TARGET_MAX = 500


class PracticeInputError(PracticeError):
    """Some of a practice's settings are invalid; `errors` maps each field to what is wrong."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def check_name(name: object) -> str:
    """Return the practice's name trimmed; ValueError if empty, too long or not plain text."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("the practice's name must not be empty")
    name = name.strip()
    if len(name) > NAME_MAX:
        raise ValueError(f"the practice's name must be at most {NAME_MAX} characters")
    # Clients read it in messages and on pages: no control characters or line breaks.
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ValueError("the practice's name must be plain text, without control characters")
    return name


def check_timezone(timezone: object) -> str:
    """Return the zone if it is an IANA name a practice can be in; ValueError if not."""
    if not (isinstance(timezone, str) and len(timezone) <= TIMEZONE_MAX) or not is_iana_timezone(
        timezone
    ):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris")
    return timezone


def check_ehr_target(ehr_target: object, root: Path) -> str:
    """Return the target if responses can be written there now; ValueError if not."""
    if (
        not isinstance(ehr_target, str)
        or len(ehr_target) > EHR_TARGET_MAX
        or not ehr_target.isprintable()
    ):
        raise ValueError(
            f"the EHR target must look like ndjson:<dir>, in at most {EHR_TARGET_MAX} printable "
            "characters"
        )
    try:
        sink = sink_for(ehr_target, root)
        if isinstance(sink, NdjsonSink):
            sink.check()
    except EhrTargetError as exc:
        raise ValueError(str(exc)) from exc
    return ehr_target


def check_platform(platform: object) -> str:
    """Return the platform if an adapter exists for it; ValueError if not."""
    if platform not in ADAPTERS:
        raise ValueError(f"unknown platform {platform!r}; one of: {', '.join(ADAPTERS)}")
    return platform


def checked_fields(root: Path, **fields: object) -> dict[str, object]:
    """Check name, timezone, ehr_target, platform; PracticeInputError names every bad one."""
    checks = {
        "name": check_name,
        "timezone": check_timezone,
        "ehr_target": lambda value: check_ehr_target(value, root),
        "platform": check_platform,
    }
    good, errors = {}, {}
    for field, value in fields.items():
        try:
            good[field] = checks[field](value)
        except ValueError as exc:
            errors[field] = str(exc)
    if errors:
        raise PracticeInputError(errors)
    return good


def instance_root() -> Path:
    """Return the folder relative ndjson: targets are under (the instance folder's parent)."""
    return Path(current_app.instance_path).parent


def add_practice(
    session: Session,
    *,
    account_id: str,
    name: str,
    timezone: str,
    ehr_target: str,
    root: Path,
    platform: str = "standard",
) -> Practice:
    """Validate every field at once and store a new practice; the account must be new."""
    fields = checked_fields(
        root, name=name, timezone=timezone, ehr_target=ehr_target, platform=platform
    )
    existing = select(Practice).where(
        Practice.platform == platform, Practice.account_id == account_id
    )
    if session.scalar(existing):
        raise PracticeError(f"account {account_id!r} is already installed on {platform!r}")
    practice = Practice(account_id=account_id, created_at=datetime.now(UTC), **fields)
    session.add(practice)
    session.commit()
    return practice


def remove_practice(
    session: Session,
    practice: Practice,
    *,
    actor: str,
    now: datetime,
    http: requests.Session | None = None,
) -> None:
    """Remove a practice as an uninstall does: revoke its grant, delete its rows; commit.

    Answers not yet written to the EHR go with it. The install audit trail keeps who did it.
    """
    uninstall(
        session,
        platform=practice.platform,
        account_id=practice.account_id,
        now=now,
        http=http,
        action="removed",
        actor=actor,
    )


@click.group("practice", cls=AppGroup)
def practice_cli() -> None:
    """Manage practice installations."""


# The option each setting is given by, for errors that point at it.
_OPTIONS = {"ehr_target": "--ehr"}


def fail_on_input(exc: PracticeError) -> click.ClickException:
    """Return the CLI error for refused practice settings, one line per bad option."""
    errors = getattr(exc, "errors", None)
    if not errors:
        return click.ClickException(str(exc))
    return click.ClickException(
        "\n".join(f"{_OPTIONS.get(field, '--' + field)}: {m}" for field, m in errors.items())
    )


@practice_cli.command("add")
@click.argument("account_id")
@platform_option
@click.option("--name", required=True, help="The practice's name, shown to clients.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option(
    "--ehr",
    "ehr_target",
    default="ndjson:var/ehr",
    show_default=True,
    help="Where responses are written, e.g. ndjson:var/ehr.",
)
def add_command(account_id: str, platform: str, name: str, timezone: str, ehr_target: str) -> None:
    """Install a practice under its platform ACCOUNT_ID (marketplace installs do this)."""
    with database().sessions() as session:
        try:
            practice = add_practice(
                session,
                platform=platform,
                account_id=account_id,
                name=name,
                timezone=timezone,
                ehr_target=ehr_target,
                root=instance_root(),
            )
        except PracticeError as exc:
            raise fail_on_input(exc) from exc
        click.echo(f"added practice {practice.account_id} ({practice.id})")


@practice_cli.command("list")
def list_command() -> None:
    """List installed practices."""
    with database().sessions() as session:
        practices = session.scalars(
            select(Practice).order_by(Practice.platform, Practice.account_id)
        ).all()
    if not practices:
        click.echo("no practices installed; add one with `alliance-check practice add`")
        return
    click.echo("platform\taccount\tname\ttimezone\tstatus\tehr")
    for p in practices:
        click.echo(
            f"{p.platform}\t{p.account_id}\t{p.name}\t{p.timezone}\t{p.status}\t{p.ehr_target}"
        )


@practice_cli.command("remove")
@click.argument("account_id")
@platform_option
@click.option("--yes", is_flag=True, help="Do not ask; remove at once.")
def remove_command(account_id: str, platform: str, yes: bool) -> None:
    """Remove ACCOUNT_ID and every record of it, as an uninstall does; it cannot be undone."""
    with database().sessions() as session:
        try:
            practice = find_practice(session, account_id, platform)
        except PracticeError as exc:
            raise click.ClickException(str(exc)) from exc
        # Answers not yet in the EHR are deleted too, so a slip of the keyboard must not do it.
        if not yes:
            click.confirm(
                f"Remove {practice.name} ({platform}/{account_id}) with its sessions, "
                "invitations and answers not yet written to its EHR?",
                abort=True,
            )
        remove_practice(session, practice, actor="cli", now=datetime.now(UTC))
    click.echo(f"removed practice {account_id}; only the install audit line is kept")


def init_app(app: Flask) -> None:
    """Add the `practice` commands."""
    app.cli.add_command(practice_cli)
