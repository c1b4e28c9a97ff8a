"""Delivery: channels, messages, dispatch and reminders, unsubscribe, retention."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Add the `invitations` commands and the opt-out pages."""
    from plugin.delivery import cli, views

    for part in (
        cli,
        views,
    ):
        part.init_app(app)
