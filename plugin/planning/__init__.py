"""Planning: the schedule policy engine, stored schedules, opt-outs, finding the client."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Check the SMS consent codes; add the `schedule`, `practice set` and host map commands."""
    from plugin.planning import ehr_consent, host_map, practice_settings, schedule_cli

    for part in (ehr_consent, schedule_cli, practice_settings, host_map):
        part.init_app(app)
