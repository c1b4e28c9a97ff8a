"""Run one worker job once, as the worker's tick would, with an injected `now`."""

from datetime import datetime


def plan(app, now: datetime | None = None) -> int:
    """Run the planning job once, as the worker's tick would."""
    from plugin.jobs import tick_step

    return tick_step(app, "plan", now)


def run_dispatch(app, now: datetime | None = None) -> int:
    """Run the dispatch job once, as the worker's tick would."""
    from plugin.jobs import tick_step

    return tick_step(app, "dispatch", now)
