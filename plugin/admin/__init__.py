"""Admin: the practice admin console (sign-in through the platform, pages) and its services."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the admin sign-in and the console's pages."""
    from plugin.admin import auth, console, settings_views  # noqa: F401  (adds views to console)

    for part in (auth, console):
        part.init_app(app)
