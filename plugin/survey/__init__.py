"""Survey: the client's questionnaire pages and the installed instruments."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Load the installed instruments and register the questionnaire pages."""
    from plugin.survey import instruments, views

    for part in (
        instruments,
        views,
    ):
        part.init_app(app)
