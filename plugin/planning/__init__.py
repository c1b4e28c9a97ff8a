"""Planning: the schedule policy engine, stored schedules, opt-outs, finding the client."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Add the `schedule` commands."""
    from plugin.planning import schedules

    for part in (schedules,):
        part.init_app(app)
