"""Our signing keys for SMART client assertions: generate, publish as JWKS, rotate, retire."""

from dataclasses import dataclass
from datetime import UTC, datetime

import click
from flask import Blueprint, Flask, Response, jsonify
from flask.cli import AppGroup
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from plugin.core.crypto import Vault, vault
from plugin.core.db import database, get_session
from plugin.core.models import SigningKey
from plugin.ehr.errors import NoSigningKeyError

# SMART Backend Services allows exactly these two.
ALGORITHMS = {
    "ES384": lambda: ECKey.generate_key("P-384", private=True),
    "RS384": lambda: RSAKey.generate_key(3072, private=True),
}
bp = Blueprint("jwks", __name__)


@dataclass(frozen=True)
class Signer:
    """The key material an assertion is signed with."""

    kid: str
    alg: str
    key: ECKey | RSAKey


def generate(session: Session, vault: Vault, alg: str = "ES384") -> SigningKey:
    """Create a new key; being the newest, it signs from now on."""
    key = ALGORITHMS[alg]()
    row = SigningKey(
        kid=key.thumbprint(),
        alg=alg,
        private_key=vault.seal(key.as_pem(private=True).decode()),
        public_jwk={
            **key.as_dict(private=False),
            "kid": key.thumbprint(),
            "alg": alg,
            "use": "sig",
        },
        created_at=datetime.now(UTC),
    )
    session.add(row)
    session.commit()
    return row


def published(session: Session) -> list[SigningKey]:
    """Return every key not yet retired, newest first."""
    return list(
        session.scalars(
            select(SigningKey)
            .where(SigningKey.retired_at.is_(None))
            .order_by(SigningKey.created_at.desc())
        )
    )


def current_signer(session: Session, vault: Vault) -> Signer:
    """Return the newest unretired key, ready to sign."""
    keys = published(session)
    if not keys:
        raise NoSigningKeyError("no signing key; run `alliance-check keys generate`")
    row = keys[0]
    key_class = ECKey if row.alg.startswith("ES") else RSAKey
    return Signer(row.kid, row.alg, key_class.import_key(vault.open(row.private_key)))


def load_signer(sessions: sessionmaker, vault: Vault) -> Signer:
    """Return the current signer, reading it in a session of its own."""
    with sessions() as session:
        return current_signer(session, vault)


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """Publish the public half of every unretired key."""
    response = jsonify({"keys": [row.public_jwk for row in published(get_session())]})
    # EHRs cache JWKS; a short max-age lets a rotation reach them within minutes.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@click.group("keys", cls=AppGroup)
def keys_cli() -> None:
    """Manage the keys we sign SMART client assertions with."""


@keys_cli.command("generate")
@click.option("--alg", type=click.Choice(sorted(ALGORITHMS)), default="ES384", show_default=True)
def generate_command(alg: str) -> None:
    """Make a new signing key; it signs from now on, older keys stay published."""
    with database().sessions() as session:
        row = generate(session, vault(), alg)
    click.echo(f"generated {alg} key {row.kid}; it now signs, older keys stay published")


@keys_cli.command("list")
def list_command() -> None:
    """List keys, newest first, with which one signs."""
    with database().sessions() as session:
        rows = session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())).all()
    if not rows:
        click.echo("no signing keys; make one with `alliance-check keys generate`")
        return
    signing = next((r.kid for r in rows if r.retired_at is None), None)
    click.echo("kid\talg\tcreated\tstate")
    for row in rows:
        state = "retired" if row.retired_at else ("signing" if row.kid == signing else "published")
        click.echo(f"{row.kid}\t{row.alg}\t{row.created_at:%Y-%m-%d}\t{state}")


@keys_cli.command("retire")
@click.argument("kid")
def retire_command(kid: str) -> None:
    """Stop publishing key KID (do this once EHRs have fetched the newer key)."""
    with database().sessions() as session:
        row = session.get(SigningKey, kid)
        if row is None or row.retired_at:
            raise click.ClickException(f"no published key {kid}")
        if published(session)[0].kid == kid:
            raise click.ClickException("that key signs now; generate a newer one first")
        row.retired_at = datetime.now(UTC)
        session.commit()
    click.echo(f"retired {kid}")


def init_app(app: Flask) -> None:
    """Publish the JWKS and add the `keys` commands."""
    app.register_blueprint(bp)
    app.cli.add_command(keys_cli)
