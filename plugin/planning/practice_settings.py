"""A practice's settings: name, time zone, default language and EHR sink, and `practice set`.

The default language is the practice policy's `language` (what clients whose own language is
not offered receive), so changing it stores the next schedule version; this module therefore
sits in planning, above install, where practices are stored.
"""

from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy.orm import Session

from plugin.core import audit
from plugin.core.db import database
from plugin.core.models import Practice
from plugin.core.tenancy import PracticeError, find_practice, platform_option
from plugin.install.practices import (
    PracticeInputError,
    checked_fields,
    fail_on_input,
    instance_root,
    practice_cli,
)
from plugin.planning.policy import LANGUAGES
from plugin.planning.schedules import change_practice_policy, practice_policy

# The practice's own columns an admin may change, in the order errors are listed.
_COLUMNS = ("name", "timezone", "ehr_target")


def practice_language(session: Session, practice: Practice) -> str:
    """Return the practice's default language: its schedule's `language`."""
    return practice_policy(session, practice.id)[0].language


def update_practice(
    session: Session,
    practice: Practice,
    *,
    name: str | None = None,
    timezone: str | None = None,
    language: str | None = None,
    ehr_target: str | None = None,
    actor: str,
    now: datetime | None = None,
    root: Path | None = None,
) -> list[str]:
    """Check every given setting at once, then change them, audited; return what changed.

    PracticeInputError names each bad field; nothing changes then. A sink that cannot be
    written is refused here, not found when a client's answers wait. The caller commits.
    """
    now = now or datetime.now(UTC)
    given = {
        field: value
        for field, value in (("name", name), ("timezone", timezone), ("ehr_target", ehr_target))
        if value is not None
    }
    errors = {}
    try:
        given = checked_fields(root or instance_root(), **given)
    except PracticeInputError as exc:
        errors = exc.errors
    if language is not None and language not in LANGUAGES:
        errors["language"] = f"language must be one of {', '.join(LANGUAGES)}, not {language!r}"
    if errors:
        raise PracticeInputError({f: errors[f] for f in (*_COLUMNS, "language") if f in errors})

    changed = [field for field, value in given.items() if getattr(practice, field) != value]
    for field in changed:
        setattr(practice, field, given[field])
    if changed:
        audit.record(session, practice.id, actor, "practice.updated", now=now, fields=changed)
    policy, _ = practice_policy(session, practice.id)
    if language is not None and language != policy.language:
        change_practice_policy(
            session, practice.id, policy.to_dict() | {"language": language}, actor=actor, now=now
        )
        changed.append("language")
    return changed


@click.command("set")
@with_appcontext
@click.argument("account_id")
@platform_option
@click.option("--name", help="The practice's name, shown to clients.")
@click.option("--timezone", help="IANA time zone, for clients whose platform names none.")
@click.option(
    "--language",
    type=click.Choice(LANGUAGES),
    help="For clients whose own language is not offered (the schedule's `language`).",
)
@click.option("--ehr", "ehr_target", help="Where responses are written, e.g. ndjson:var/ehr.")
def set_command(
    account_id: str,
    platform: str,
    name: str | None,
    timezone: str | None,
    language: str | None,
    ehr_target: str | None,
) -> None:
    """Change ACCOUNT_ID's name, time zone, default language or EHR sink."""
    if name is None and timezone is None and language is None and ehr_target is None:
        raise click.UsageError("give at least one of --name, --timezone, --language, --ehr")
    with database().sessions() as session:
        try:
            practice = find_practice(session, account_id, platform)
            changed = update_practice(
                session,
                practice,
                name=name,
                timezone=timezone,
                language=language,
                ehr_target=ehr_target,
                actor="cli",
            )
        except PracticeError as exc:
            raise fail_on_input(exc) from exc
        session.commit()
    if changed:
        click.echo(f"changed {', '.join(changed)} of practice {account_id}")
    else:
        click.echo("unchanged: the practice already says this")


def init_app(app: Flask) -> None:
    """Add `practice set` to the `practice` commands."""
    practice_cli.add_command(set_command)
