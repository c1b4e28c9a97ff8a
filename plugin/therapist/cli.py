"""The `ruptures` command: run the rupture rule over a file of trajectories, offline."""

import json

import click
from flask import Flask
from flask.cli import AppGroup

from fhir_mappings.errors import MappingError
from fhir_mappings.trajectories import check_document

ruptures_cli = AppGroup("ruptures", help="Check score trajectories with the rupture rule.")


@ruptures_cli.command("check", with_appcontext=False)
@click.option(
    "--file",
    "file",
    required=True,
    type=click.File("r", encoding="utf-8"),
    help='A JSON document {"trajectories": [...]}; see docs/ruptures.md. "-" reads stdin.',
)
def check_command(file) -> None:
    """Print {"results": [...]}: each trajectory's rupture, repair and early-concern signals.

    A file that cannot be opened is a usage error (exit 2); a file that is not JSON, or a
    trajectory that breaks the rules, is an error naming the trajectory and field (exit 1).
    """
    try:
        document = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        # Position only: the text around it may be a client's data.
        where = f" at line {exc.lineno}, column {exc.colno}" if hasattr(exc, "lineno") else ""
        raise click.ClickException(f"{file.name} is not JSON{where}") from exc
    try:
        result = check_document(document)
    except MappingError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(json.dumps(result, indent=2))


def init_app(app: Flask) -> None:
    """Add the `ruptures` command."""
    app.cli.add_command(ruptures_cli)
