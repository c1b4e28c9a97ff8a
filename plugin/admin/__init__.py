"""Admin: the practice admin console (sign-in through the platform, pages) and its services."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the admin sign-in, the console's pages and the JSON API."""
    from plugin.admin import api, auth, console, settings_views  # noqa: F401  (adds views to console)

    for part in (auth, console, api):
        part.init_app(app)
