"""The `sessions` command: list recorded sessions and what became of them, for the admin."""

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from plugin.db import database
from plugin.models import Practice, SessionEvent

STATUSES = ("pending", "planned", "skipped", "unmatched", "failed")

sessions_cli = AppGroup("sessions", help="See recorded sessions and why they were (not) asked.")


def _row(event: SessionEvent) -> str:
    # Ids, times and reason codes only: contact details never reach a terminal or a log.
    return "\t".join(
        [
            event.id,
            event.platform,
            event.practice.account_id,
            f"{event.ended_at:%Y-%m-%d %H:%M:%S}Z",
            event.status,
            event.reason or "",
        ]
    )


@sessions_cli.command("list")
@click.argument("account_id", required=False)
@click.option("--status", type=click.Choice(STATUSES), help="Only sessions in this state.")
@click.option("--platform", help="Only this platform's practice, when an account id is shared.")
@click.option("--limit", default=50, show_default=True)
def list_command(
    account_id: str | None, status: str | None, platform: str | None, limit: int
) -> None:
    """List sessions, newest first: id, platform, account, ended at (UTC), status, reason.

    `--status unmatched` shows the Zoom sessions whose client could not be named (no attendee
    email, no Patient with it, or several), so nobody was asked.
    """
    query = (
        select(SessionEvent)
        .join(Practice, SessionEvent.practice_id == Practice.id)
        .order_by(SessionEvent.ended_at.desc())
        .limit(limit)
    )
    if status:
        query = query.where(SessionEvent.status == status)
    if account_id:
        query = query.where(Practice.account_id == account_id)
    if platform:
        query = query.where(Practice.platform == platform)
    with database().sessions() as session:
        events = session.scalars(query).unique().all()
        if not events:
            click.echo("no sessions match")
        for event in events:
            click.echo(_row(event))


def init_app(app: Flask) -> None:
    """Add the `sessions` commands."""
    app.cli.add_command(sessions_cli)
