"""Admin: the practice admin console (sign-in through the platform, pages) and its services."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the admin sign-in, the console's pages and the JSON API."""
    # settings_views and token_views add their views to the console's blueprint.
    from plugin.admin import api, auth, console, settings_views, token_views  # noqa: F401

    for part in (auth, console, api):
        part.init_app(app)
