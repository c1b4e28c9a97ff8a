"""Operator commands for EHRs: connect a practice's FHIR server, inspect and retry writes."""

from datetime import UTC, datetime

import click
import requests
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from plugin.core.crypto import vault
from plugin.core.db import database
from plugin.core.models import EhrConnection, EhrWrite, Practice, WriteStatus
from plugin.core.tenancy import PracticeError, find_practice, platform_option
from plugin.ehr.errors import NoSigningKeyError, SmartError
from plugin.ehr.keys import current_signer
from plugin.ehr.smart import (
    TokenCache,
    discover,
    fetch_token,
    flag_scope,
    patient_search_scope,
    search_scope,
)
from webhooks import ADAPTERS

ehr_cli = AppGroup("ehr", help="Connect practices to their EHR's FHIR server.")
writes_cli = AppGroup("ehr-writes", help="Inspect and retry responses on their way to the EHR.")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


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
@platform_option
def connect_command(
    account_id: str, fhir_base: str, client_id: str, launch_client_id: str | None, platform: str
) -> None:
    """Check discovery and a token grant at FHIR_BASE, then write ACCOUNT_ID's responses there."""
    with database().sessions() as session:
        try:
            practice = find_practice(session, account_id, platform)
        except PracticeError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            with requests.Session() as http:
                facts = discover(http, fhir_base)
            click.echo(f"FHIR server      {fhir_base}")
            click.echo(f"token endpoint   {facts.token_endpoint}")
            click.echo(f"SMART scopes     {'v2' if facts.smart_v2 else 'v1'}")
            click.echo(f"transactions     {_yes(facts.transaction)}")
            click.echo(f"QuestionnaireResponse create  {_yes(facts.questionnaire_response_create)}")
            click.echo(f"Observation create            {_yes(facts.observation_create)}")
            if not facts.observation_create:
                raise click.ClickException("the server cannot create Observations; not connected")
            if not facts.questionnaire_response_create and not facts.document_reference_create:
                raise click.ClickException(
                    "the server takes neither QuestionnaireResponse nor DocumentReference; "
                    "not connected"
                )
            token = fetch_token(
                client_id, facts.token_endpoint, facts.scope(), current_signer(session, vault())
            )
        except (SmartError, NoSigningKeyError) as exc:
            raise click.ClickException(str(exc)) from exc
        granted = token.get("scope", facts.scope())
        click.echo(f"token            granted {granted!r}, expires in {token.get('expires_in')} s")
        missing = set(facts.scope().split()) - set(granted.split())
        if missing:
            raise click.ClickException(
                f"the EHR did not grant {' '.join(sorted(missing))}; ask its administrator to "
                "allow it for this client; not connected"
            )
        if getattr(ADAPTERS.get(practice.platform), "attendee_emails", None):
            _check_patient_search(session, facts, client_id)
        flags = _check_flags(session, facts, client_id)
        what = (
            "the response and its scores"
            if facts.questionnaire_response_create
            else "the scores and a readable summary (DocumentReference)"
        )
        how = "in one transaction" if facts.transaction else "one resource at a time"
        click.echo(f"writes           {what}, {how}")

        connection = practice.ehr_connection or EhrConnection(practice_id=practice.id)
        connection.fhir_base = fhir_base.rstrip("/")
        connection.client_id = client_id
        connection.token_endpoint = facts.token_endpoint
        connection.facts = {
            **{k: v for k, v in vars(facts).items() if k != "token_endpoint"},
            **flags,
        }
        connection.scope = facts.scope()
        if flags["flag_write"]:
            connection.scope += " " + flag_scope(facts.smart_v2)
        connection.checked_at = datetime.now(UTC)
        if launch_client_id is not None:
            connection.launch_client_id = launch_client_id.strip() or None
        launch = connection.launch_client_id
        click.echo(f"therapist view   {f'launch client {launch}' if launch else 'off'}")
        session.add(connection)
        practice.ehr_target = connection.fhir_base
        session.commit()
    click.echo(f"connected practice {account_id}")


def _check_patient_search(session, facts, client_id: str) -> None:
    """Refuse to connect a platform whose clients are found in the EHR unless we may search."""
    # Zoom names no client: each session's client is the one Patient with an attendee's
    # email, so without a search every session would end up unmatched, hours later.
    scope = patient_search_scope(facts.smart_v2)
    if not facts.patient_search:
        raise click.ClickException(
            "this platform's sessions name no client, and the server does not offer a Patient "
            "search by email; not connected"
        )
    try:
        token = fetch_token(
            client_id, facts.token_endpoint, scope, current_signer(session, vault())
        )
    except (SmartError, NoSigningKeyError) as exc:
        raise click.ClickException(
            f"{exc}; this platform's clients are found by a Patient search, which needs {scope}; "
            "not connected"
        ) from exc
    if scope not in token.get("scope", scope).split():
        raise click.ClickException(
            f"the EHR did not grant {scope}, which finding this platform's clients needs; ask "
            "its administrator to allow it for this client; not connected"
        )
    click.echo(f"Patient search   granted {scope!r}")


def _granted(session, facts, client_id: str, scope: str) -> bool:
    """Whether the EHR grants this scope to us; a refusal is an answer, not an error."""
    try:
        token = fetch_token(
            client_id, facts.token_endpoint, scope, current_signer(session, vault())
        )
    except (SmartError, NoSigningKeyError):
        return False
    return scope in token.get("scope", scope).split()


def _check_flags(session, facts, client_id: str) -> dict[str, bool]:
    """Find out whether rupture Flags can be written: Flag create/update and Observation reads.

    Neither is required: without them responses and scores are still written, unflagged,
    and each write notes why (`ehr-writes show`).
    """
    read = search_scope("Observation", facts.smart_v2)
    write = flag_scope(facts.smart_v2)
    found = {
        "observation_search": facts.observation_search
        and _granted(session, facts, client_id, read),
        "flag_write": facts.flag_write and _granted(session, facts, client_id, write),
    }
    for scope, key in ((read, "observation_search"), (write, "flag_write")):
        click.echo(f"rupture flags    {scope} {'granted' if found[key] else 'not available'}")
    if not all(found.values()):
        click.echo("rupture flags    off: responses are written without Flags")
    return found


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
        for write in session.scalars(query):
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
    with database().sessions() as session:
        query = select(EhrWrite).where(EhrWrite.status == WriteStatus.DEAD)
        if not all_dead:
            if not write_ids:
                raise click.ClickException("name write ids, or pass --all-dead")
            query = query.where(EhrWrite.id.in_(write_ids))
        writes = session.scalars(query).all()
        missing = set(write_ids) - {w.id for w in writes}
        if missing:
            raise click.ClickException(
                f"not dead-lettered or unknown: {', '.join(sorted(missing))}"
            )
        for write in writes:
            write.status, write.next_attempt_at = WriteStatus.PENDING, datetime.now(UTC)
            write.retry_until = None
        session.commit()
    click.echo(f"queued {len(writes)} write(s) again")


def init_app(app: Flask) -> None:
    """Add the `ehr` and `ehr-writes` commands and the per-process SMART token cache."""
    app.extensions["smart_tokens"] = TokenCache()
    app.cli.add_command(ehr_cli)
    app.cli.add_command(writes_cli)
