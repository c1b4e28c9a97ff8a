"""Practices (installations): add and list them, from code or the `practice` command."""

from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.db import database
from plugin.core.models import Practice
from plugin.core.tenancy import PracticeError, platform_option
from plugin.ehr.errors import EhrTargetError
from plugin.ehr.writers import sink_for
from webhooks import ADAPTERS
from webhooks.events import is_iana_timezone


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
    """Validate and store a new practice; the account id must be new on its platform."""
    if not is_iana_timezone(timezone):
        raise PracticeError(f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris")
    try:
        sink_for(ehr_target, root)
    except EhrTargetError as exc:
        raise PracticeError(str(exc)) from exc
    if platform not in ADAPTERS:
        raise PracticeError(f"unknown platform {platform!r}; one of: {', '.join(ADAPTERS)}")
    existing = select(Practice).where(
        Practice.platform == platform, Practice.account_id == account_id
    )
    if session.scalar(existing):
        raise PracticeError(f"account {account_id!r} is already installed on {platform!r}")
    practice = Practice(
        platform=platform,
        account_id=account_id,
        name=name,
        timezone=timezone,
        ehr_target=ehr_target,
        created_at=datetime.now(UTC),
    )
    session.add(practice)
    session.commit()
    return practice


@click.group("practice", cls=AppGroup)
def practice_cli() -> None:
    """Manage practice installations."""


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
                root=Path(current_app.instance_path).parent,
            )
        except PracticeError as exc:
            raise click.ClickException(str(exc)) from exc
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
    for p in practices:
        click.echo(
            f"{p.platform}\t{p.account_id}\t{p.name}\t{p.timezone}\t{p.status}\t{p.ehr_target}"
        )


def init_app(app: Flask) -> None:
    """Add the `practice` commands."""
    app.cli.add_command(practice_cli)
