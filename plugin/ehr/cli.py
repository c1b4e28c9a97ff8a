"""Operator commands for EHRs: connect a practice's FHIR server, inspect and retry writes."""

from datetime import UTC, datetime

import click
import requests
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from fhir_mappings.consent import parse_codes
from plugin.core.crypto import vault
from plugin.core.db import database
from plugin.core.models import EhrWrite, Practice, WriteStatus
from plugin.core.tenancy import PracticeError, find_practice, platform_option
from plugin.ehr.connect import check_connection, save_connection
from plugin.ehr.dead_letters import RequeueError, requeue_dead
from plugin.ehr.smart import TokenCache

ehr_cli = AppGroup("ehr", help="Connect practices to their EHR's FHIR server.")
writes_cli = AppGroup("ehr-writes", help="Inspect and retry responses on their way to the EHR.")


@ehr_cli.command("connect")
@click.argument("account_id")
@click.argument("fhir_base")
@click.option("--client-id", required=True, help="Our client id, registered with the EHR.")
@click.option(
    "--launch-client-id",
    default=None,
    help="The client id of our SMART App Launch registration (the therapist's view); "
    "kept from the last connect when left out.",
)
@click.option(
    "--sms-consent-code",
    "sms_consent_codes",
    multiple=True,
    help="A 'system|code' coding this EHR records consent to texts under (repeatable); "
    "kept from the last connect when left out, else EHR_SMS_CONSENT_CODES.",
)
@platform_option
def connect_command(
    account_id: str,
    fhir_base: str,
    client_id: str,
    launch_client_id: str | None,
    sms_consent_codes: tuple[str, ...],
    platform: str,
) -> None:
    """Check discovery and a token grant at FHIR_BASE, then write ACCOUNT_ID's responses there."""
    try:
        parse_codes(list(sms_consent_codes))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sms-consent-code") from exc
    with database().sessions() as session:
        try:
            practice = find_practice(session, account_id, platform)
        except PracticeError as exc:
            raise click.ClickException(str(exc)) from exc
        with requests.Session() as http:
            check = check_connection(session, practice, fhir_base, client_id, vault(), http)
        for step in check.steps:
            for line in step.found:
                click.echo(line)
        if not check.ok:
            raise click.ClickException(check.problem)
        connection = save_connection(
            session,
            practice,
            fhir_base,
            client_id,
            check,
            datetime.now(UTC),
            list(sms_consent_codes) or None,
        )
        if launch_client_id is not None:
            connection.launch_client_id = launch_client_id.strip() or None
        launch = connection.launch_client_id
        click.echo(f"therapist view   {f'launch client {launch}' if launch else 'off'}")
        session.commit()
    click.echo(f"connected practice {account_id}")


def _row(write: EhrWrite) -> str:
    when = write.done_at if write.status == WriteStatus.DONE else write.next_attempt_at
    return "\t".join(
        [
            write.id,
            write.practice.account_id,
            write.status,
            str(write.attempts),
            write.path or "-",
            f"{when:%Y-%m-%d %H:%M:%S}Z",
            write.last_error or "",
        ]
    )


@writes_cli.command("list")
@click.option("--status", type=click.Choice([status.value for status in WriteStatus]))
@click.option("--account", "account_id", help="Only this practice's writes.")
@click.option("--limit", default=50, show_default=True)
def list_command(status: str | None, account_id: str | None, limit: int) -> None:
    """List writes, newest first: id, practice, status, attempts, path, when, last error."""
    query = select(EhrWrite).order_by(EhrWrite.created_at.desc()).limit(limit)
    if status:
        query = query.where(EhrWrite.status == status)
    if account_id:
        query = query.join(Practice).where(Practice.account_id == account_id)
    with database().sessions() as session:
        writes = session.scalars(query).all()
        if not writes:
            click.echo("no EHR writes match")
            return
        click.echo("id\taccount\tstatus\tattempts\tpath\twhen\tlast error")
        for write in writes:
            click.echo(_row(write))


@writes_cli.command("show")
@click.argument("write_id")
def show_command(write_id: str) -> None:
    """Show one write and, if the EHR refused it, where its OperationOutcome points."""
    with database().sessions() as session:
        write = session.get(EhrWrite, write_id)
        if write is None:
            raise click.ClickException(f"no EHR write {write_id}")
        for name in (
            "id",
            "status",
            "path",
            "attempts",
            "last_error",
            "created_at",
            "next_attempt_at",
            "retry_until",
            "done_at",
            "flag_note",
        ):
            click.echo(f"{name:16} {getattr(write, name)}")
        click.echo(f"{'practice':16} {write.practice.account_id}")
        if write.outcome:
            # Severity, code and location only: diagnostics text may quote the client's answers.
            for issue in vault().open(write.outcome).get("issue", []):
                where = ", ".join(issue.get("expression", issue.get("location", [])))
                click.echo(f"{'issue':16} {issue.get('severity')} {issue.get('code')} at {where}")


@writes_cli.command("retry")
@click.argument("write_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead-lettered write.")
def retry_command(write_ids: tuple[str, ...], all_dead: bool) -> None:
    """Send dead-lettered writes again, with a fresh retry window."""
    if not (write_ids or all_dead):
        raise click.ClickException("name write ids, or pass --all-dead")
    with database().sessions() as session:
        try:
            writes = requeue_dead(
                session, datetime.now(UTC), write_ids=write_ids, all_dead=all_dead
            )
        except RequeueError as exc:
            raise click.ClickException(str(exc)) from exc
        session.commit()
    click.echo(f"queued {len(writes)} write(s) again")


def init_app(app: Flask) -> None:
    """Add the `ehr` and `ehr-writes` commands and the per-process SMART token cache."""
    app.extensions["smart_tokens"] = TokenCache()
    app.cli.add_command(ehr_cli)
    app.cli.add_command(writes_cli)
