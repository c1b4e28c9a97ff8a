"""The `manifest` command: print the marketplace listing for one deployment."""

import json

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from plugin.install.platforms import ManifestError, check_base_url, render_manifest


@click.command("manifest")
@with_appcontext
@click.option(
    "--base-url",
    help="The deployment's public https origin, e.g. https://alliance.example.org "
    "(default: ALLIANCE_PUBLIC_BASE_URL).",
)
def manifest_command(base_url: str | None) -> None:
    """Print manifest.json with every URL made absolute under the deployment's base URL."""
    if base_url is None:
        base_url = current_app.config["PUBLIC_BASE_URL"]
    try:
        origin = check_base_url(base_url)
    except ManifestError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from exc
    try:
        manifest = render_manifest(origin)
    except ManifestError as exc:
        raise click.ClickException(f"manifest.json is not valid: {exc}") from exc
    click.echo(json.dumps(manifest, indent=2, ensure_ascii=False))


def init_app(app: Flask) -> None:
    """Add the `manifest` command."""
    app.cli.add_command(manifest_command)
