"""Install: marketplace OAuth install and uninstall, platforms and their APIs, practices."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the platforms' OAuth clients, the install views and their commands."""
    from plugin.install import manifest, platforms, practices, views

    for part in (
        platforms,
        practices,
        manifest,
        views,
    ):
        part.init_app(app)
