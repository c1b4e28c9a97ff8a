"""Therapist: the SMART EHR-launch view."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the launch view."""
    from plugin.therapist import cli, views

    for part in (views, cli):
        part.init_app(app)
