"""The `api-token` command: make (shown once), list and revoke a practice's API tokens."""

from datetime import UTC, datetime

import click
from flask import Flask
from flask.cli import AppGroup

from plugin.admin.api.tokens import (
    EXPIRES_DAYS_MAX,
    TokenError,
    TokenNotFoundError,
    create_token,
    list_tokens,
    revoke_token,
    token_state,
)
from plugin.core.db import database
from plugin.core.tenancy import PracticeError, find_practice, platform_option

ACTOR = "cli"
api_token_cli = AppGroup("api-token", help="Make, list and revoke tokens for the JSON API.")


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z" if moment else "-"


def _practice(session, account: str, platform: str):
    try:
        return find_practice(session, account, platform)
    except PracticeError as exc:
        raise click.ClickException(str(exc)) from exc


@api_token_cli.command("create")
@click.argument("account")
@platform_option
@click.option("--name", default="api", show_default=True, help="A label, e.g. reporting script.")
@click.option(
    "--expires-days",
    type=click.IntRange(1, EXPIRES_DAYS_MAX),
    help="Stop working after this many days [default: never].",
)
def create_command(account: str, platform: str, name: str, expires_days: int | None) -> None:
    """Make a token for ACCOUNT's API and print it, this once."""
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        try:
            token, plaintext = create_token(session, practice.id, name, ACTOR, expires_days)
        except TokenError as exc:
            hint = f"--{exc.field.replace('_', '-')}"
            raise click.BadParameter(str(exc), param_hint=hint) from exc
        session.commit()
    click.echo(plaintext)
    expiry = f"expires {_when(token.expires_at)}" if token.expires_at else "does not expire"
    click.echo(
        f"token {token.id} for {account} ({expiry}); it is not shown again, so store it now",
        err=True,
    )


@api_token_cli.command("list")
@click.argument("account")
@platform_option
def list_command(account: str, platform: str) -> None:
    """List ACCOUNT's tokens, newest first: id, name, state, created, expires, last used."""
    now = datetime.now(UTC)
    with database().sessions() as session:
        tokens = list_tokens(session, _practice(session, account, platform).id)
    if not tokens:
        click.echo(f"no API tokens; make one with `alliance-check api-token create {account}`")
        return
    click.echo("id\tname\tstate\tcreated\texpires\tlast used\tcreated by")
    for t in tokens:
        click.echo(
            "\t".join(
                [
                    t.id,
                    t.name,
                    token_state(t, now),
                    _when(t.created_at),
                    _when(t.expires_at),
                    _when(t.last_used_at),
                    t.created_by,
                ]
            )
        )


@api_token_cli.command("revoke")
@click.argument("account")
@click.argument("token_id")
@platform_option
def revoke_command(account: str, token_id: str, platform: str) -> None:
    """Revoke ACCOUNT's token TOKEN_ID; calls with it are refused from now on."""
    with database().sessions() as session:
        practice = _practice(session, account, platform)
        try:
            revoke_token(session, practice.id, token_id, actor=ACTOR)
        except TokenNotFoundError as exc:
            raise click.ClickException(
                f"{exc}; see `alliance-check api-token list {account}`"
            ) from exc
        session.commit()
    click.echo(f"revoked {token_id}")


def init_app(app: Flask) -> None:
    """Add the `api-token` commands."""
    app.cli.add_command(api_token_cli)
