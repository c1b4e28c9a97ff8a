"""Planning: the schedule policy engine, stored schedules, opt-outs, finding the client."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Add the `schedule` commands and `practice set`."""
    from plugin.planning import practice_settings, schedule_cli

    for part in (schedule_cli, practice_settings):
        part.init_app(app)
