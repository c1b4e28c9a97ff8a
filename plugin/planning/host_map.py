"""Which EHR Practitioner a video host is: a per-practice mapping an admin sets.

Finding a Zoom session's client in the schedule starts from the host. Where the host's Zoom
email is also on their Practitioner record, `Practitioner?email=` finds them; where it is not
(a personal Zoom account, a shared practice login), an admin maps the email to the
Practitioner here, and resolution uses the mapping first. Emails are staff data, kept with
care: looked up by a keyed digest, stored sealed for the admin's list, never logged.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from plugin.core import audit
from plugin.core.crypto import Vault, vault
from plugin.core.db import database
from plugin.core.models import HostPractitioner
from plugin.core.tenancy import PracticeError, find_practice, platform_option
from plugin.install.practices import practice_cli
from plugin.planning.schedules import PRACTITIONER_REF

# As loose as an address may be and still be one; the platform's own check is stricter.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,253}")
# A practice maps its hosts, not a directory: enough for any practice's staff.
MAX_MAPPINGS = 500


class HostMapError(ValueError):
    """A mapping cannot be set or removed as asked; `errors` maps each field to what is wrong."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass(frozen=True)
class HostMapping:
    """One mapping as an admin sees it."""

    id: str
    # Staff data: repr=False so a logged mapping never carries the address.
    host_email: str = field(repr=False)
    practitioner_ref: str
    created_at: datetime


def host_digest(email: str) -> str:
    """Return the keyed HMAC-SHA256 of an email, trimmed and case-folded."""
    # A key of its own, so a digest says nothing about anything else keyed by SECRET_KEY.
    secret = current_app.config["SECRET_KEY"].encode()
    key = hmac.new(secret, b"alliance-check host email digest v1", hashlib.sha256).digest()
    return hmac.new(key, email.strip().casefold().encode(), hashlib.sha256).hexdigest()


def check_mapping(email: object, practitioner_ref: object) -> tuple[str, str]:
    """Return the email and reference trimmed; HostMapError names each bad one."""
    errors = {}
    email = email.strip() if isinstance(email, str) else ""
    ref = practitioner_ref.strip() if isinstance(practitioner_ref, str) else ""
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        errors["email"] = "Enter the host's email address as the video platform has it"
    if not PRACTITIONER_REF.fullmatch(ref):
        errors["practitioner"] = (
            "Enter the Practitioner as Practitioner/ID, for example Practitioner/123"
        )
    if errors:
        raise HostMapError(errors)
    return email, ref


def set_mapping(
    session: Session,
    practice_id: str,
    email: object,
    practitioner_ref: object,
    *,
    actor: str,
    sealer: Vault,
    now: datetime | None = None,
) -> bool:
    """Map a host's email to a Practitioner (replacing its mapping), audited; the caller commits.

    Returns whether anything changed.
    """
    email, ref = check_mapping(email, practitioner_ref)
    now = now or datetime.now(UTC)
    digest = host_digest(email)
    row = session.scalar(
        select(HostPractitioner).where(
            HostPractitioner.practice_id == practice_id, HostPractitioner.host_digest == digest
        )
    )
    if row is not None and row.practitioner_ref == ref:
        return False
    if row is None:
        count = session.scalar(
            select(func.count()).where(HostPractitioner.practice_id == practice_id)
        )
        if count >= MAX_MAPPINGS:
            raise HostMapError({"email": f"a practice maps at most {MAX_MAPPINGS} hosts"})
        row = HostPractitioner(practice_id=practice_id, host_digest=digest, created_at=now)
        session.add(row)
    row.host_email = sealer.seal(email)
    row.practitioner_ref = ref
    session.flush()
    audit.record(
        session, practice_id, actor, "host_mapping.set", now=now, mapping=row.id, practitioner=ref
    )
    return True


def remove_mapping(
    session: Session, practice_id: str, email: object, *, actor: str, now: datetime | None = None
) -> bool:
    """Remove the mapping of a host's email at this practice, audited; return whether one was."""
    if not isinstance(email, str) or not email.strip():
        raise HostMapError({"email": "Enter the host's email address"})
    row = session.scalar(
        select(HostPractitioner).where(
            HostPractitioner.practice_id == practice_id,
            HostPractitioner.host_digest == host_digest(email),
        )
    )
    if row is None:
        return False
    return _delete(session, practice_id, row, actor, now)


def remove_mapping_by_id(
    session: Session, practice_id: str, mapping_id: str, *, actor: str, now: datetime | None = None
) -> bool:
    """Remove one of this practice's mappings by its id (another practice's is not found)."""
    row = session.scalar(
        select(HostPractitioner).where(
            HostPractitioner.practice_id == practice_id, HostPractitioner.id == mapping_id
        )
    )
    return row is not None and _delete(session, practice_id, row, actor, now)


def _delete(
    session: Session, practice_id: str, row: HostPractitioner, actor: str, now: datetime | None
) -> bool:
    session.execute(delete(HostPractitioner).where(HostPractitioner.id == row.id))
    audit.record(
        session,
        practice_id,
        actor,
        "host_mapping.removed",
        now=now or datetime.now(UTC),
        mapping=row.id,
        practitioner=row.practitioner_ref,
    )
    return True


def mappings(session: Session, practice_id: str, opener: Vault) -> list[HostMapping]:
    """Return this practice's mappings, by email."""
    rows = session.scalars(
        select(HostPractitioner).where(HostPractitioner.practice_id == practice_id)
    ).all()
    found = [
        HostMapping(row.id, opener.open(row.host_email), row.practitioner_ref, row.created_at)
        for row in rows
    ]
    return sorted(found, key=lambda m: m.host_email.casefold())


def practitioner_for(session: Session, practice_id: str, email: str) -> str | None:
    """Return the Practitioner this practice mapped the host's email to, or None."""
    return session.scalar(
        select(HostPractitioner.practitioner_ref).where(
            HostPractitioner.practice_id == practice_id,
            HostPractitioner.host_digest == host_digest(email),
        )
    )


def _cli_errors(exc: HostMapError) -> click.ClickException:
    options = {"email": "EMAIL", "practitioner": "PRACTITIONER"}
    return click.ClickException(
        "\n".join(f"{options.get(f, f)}: {message}" for f, message in exc.errors.items())
    )


@click.command("map-host")
@with_appcontext
@click.argument("account_id")
@click.argument("email")
@click.argument("practitioner")
@platform_option
def map_host_command(account_id: str, email: str, practitioner: str, platform: str) -> None:
    """Map a video host's EMAIL to their EHR PRACTITIONER (Practitioner/ID) at ACCOUNT_ID."""
    with database().sessions() as session:
        try:
            practice = find_practice(session, account_id, platform)
            changed = set_mapping(
                session, practice.id, email, practitioner, actor="cli", sealer=vault()
            )
        except HostMapError as exc:
            raise _cli_errors(exc) from exc
        except PracticeError as exc:
            raise click.ClickException(str(exc)) from exc
        session.commit()
    click.echo("mapped the host" if changed else "unchanged: the host is already mapped so")


@click.command("hosts")
@with_appcontext
@click.argument("account_id")
@platform_option
def hosts_command(account_id: str, platform: str) -> None:
    """List ACCOUNT_ID's host -> Practitioner mappings."""
    with database().sessions() as session:
        try:
            practice = find_practice(session, account_id, platform)
        except PracticeError as exc:
            raise click.ClickException(str(exc)) from exc
        found = mappings(session, practice.id, vault())
    if not found:
        click.echo("no hosts mapped; hosts are found by `Practitioner?email=` in the EHR")
        return
    click.echo("host email\tpractitioner")
    for mapping in found:
        click.echo(f"{mapping.host_email}\t{mapping.practitioner_ref}")


@click.command("unmap-host")
@with_appcontext
@click.argument("account_id")
@click.argument("email")
@platform_option
def unmap_host_command(account_id: str, email: str, platform: str) -> None:
    """Remove the mapping of the host's EMAIL at ACCOUNT_ID."""
    with database().sessions() as session:
        try:
            practice = find_practice(session, account_id, platform)
            removed = remove_mapping(session, practice.id, email, actor="cli")
        except HostMapError as exc:
            raise _cli_errors(exc) from exc
        except PracticeError as exc:
            raise click.ClickException(str(exc)) from exc
        if not removed:
            raise click.ClickException("no mapping for that email at this practice")
        session.commit()
    click.echo("removed the mapping")


def init_app(app: Flask) -> None:
    """Add `practice map-host`, `practice hosts` and `practice unmap-host`."""
    for command in (map_host_command, hosts_command, unmap_host_command):
        practice_cli.add_command(command)
