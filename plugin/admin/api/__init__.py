"""The admin JSON API at /api/v1, its bearer tokens and the `api-token` command."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the API and add the `api-token` commands."""
    from plugin.admin.api import cli, views

    app.register_blueprint(views.bp)
    cli.init_app(app)
