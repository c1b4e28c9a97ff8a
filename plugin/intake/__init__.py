"""Intake: the webhook views, storing SessionEvents, and the `sessions` commands."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Add the `sessions` commands and the webhook views."""
    from plugin.intake import cli, views

    for part in (
        cli,
        views,
    ):
        part.init_app(app)
