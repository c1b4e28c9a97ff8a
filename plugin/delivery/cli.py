"""The `invitations` command: what became of each questionnaire, without any contact detail."""

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from plugin.core.db import database
from plugin.core.models import Invitation, InvitationStatus, Practice

STATUSES = [status.value for status in InvitationStatus]


@click.group("invitations", cls=AppGroup)
def invitations_cli() -> None:
    """Inspect invitations."""


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ") if moment else "-"


def _version(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


@invitations_cli.command("list")
@click.argument("account_id", required=False)
@click.option("--status", type=click.Choice(STATUSES), help="Only invitations in this state.")
@click.option("--limit", default=50, show_default=True, help="Newest first, at most this many.")
def list_command(account_id: str | None, status: str | None, limit: int) -> None:
    """List invitations, newest first: state, channel, schedule version and the last error."""
    query = (
        select(Invitation, Practice.account_id)
        .join(Practice, Invitation.practice_id == Practice.id)
        .order_by(Invitation.created_at.desc())
        .limit(limit)
    )
    if account_id:
        query = query.where(Practice.account_id == account_id)
    if status:
        query = query.where(Invitation.status == status)
    with database().sessions() as session:
        rows = session.execute(query).all()
    if not rows:
        click.echo("no invitations match")
        return
    click.echo("id\taccount\tstatus\tchannel\tpolicy\tdue\tsent\treminded\tattempts\tlast error")
    for invitation, account in rows:
        click.echo(
            "\t".join(
                [
                    invitation.id,
                    account,
                    invitation.status,
                    invitation.channel or "/".join(invitation.channels),
                    _version(invitation.policy_version),
                    _when(invitation.due_at),
                    _when(invitation.sent_at),
                    _when(invitation.reminded_at),
                    str(invitation.attempts),
                    invitation.last_error or "",
                ]
            )
        )


def init_app(app: Flask) -> None:
    """Add the `invitations` commands."""
    app.cli.add_command(invitations_cli)
