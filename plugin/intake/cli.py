"""The `sessions` command: list recorded sessions and what became of them, for the admin."""

from datetime import UTC, datetime

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from plugin.core import audit
from plugin.core.db import database
from plugin.core.models import Practice, SessionEvent, SessionStatus
from plugin.intake.retry import RetryError, link_session, retry_sessions

STATUSES = [status.value for status in SessionStatus]

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
            return
        click.echo("id\tplatform\taccount\tended\tstatus\treason")
        for event in events:
            click.echo(_row(event))


@sessions_cli.command("retry")
@click.argument("session_ids", nargs=-1)
@click.option("--all-unmatched", is_flag=True, help="Retry every unmatched session.")
def retry_command(session_ids: tuple[str, ...], all_unmatched: bool) -> None:
    """Plan unmatched or failed sessions again, e.g. once the client's Patient is in the EHR."""
    if not (session_ids or all_unmatched):
        raise click.ClickException("name session ids, or pass --all-unmatched")
    with database().sessions() as session:
        try:
            events = retry_sessions(
                session, datetime.now(UTC), session_ids=session_ids, all_unmatched=all_unmatched
            )
        except RetryError as exc:
            raise click.ClickException(str(exc)) from exc
        session.commit()
    click.echo(f"queued {len(events)} session(s) for planning again")


@sessions_cli.command("link")
@click.argument("session_id")
@click.argument("patient_ref", metavar="Patient/ID")
def link_command(session_id: str, patient_ref: str) -> None:
    """Name an unmatched session's client (Patient/ID in the EHR), then plan it."""
    now = datetime.now(UTC)
    with database().sessions() as session:
        try:
            event = link_session(session, now, session_id, patient_ref)
        except RetryError as exc:
            raise click.ClickException(str(exc)) from exc
        audit.record(session, event.practice_id, "operator", "session.linked", now=now, id=event.id)
        session.commit()
    click.echo(f"linked {session_id} to {patient_ref}; queued for planning")


def init_app(app: Flask) -> None:
    """Add the `sessions` commands."""
    app.cli.add_command(sessions_cli)
