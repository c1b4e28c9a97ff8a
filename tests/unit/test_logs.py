"""Log lines are JSON with ids only, and never carry a questionnaire link."""

import json
import logging

import pytest

from plugin.core.logs import JsonFormatter


def record(message: str, **extra) -> logging.LogRecord:
    """Make a log record as a logger call with `extra` would."""
    rec = logging.makeLogRecord({"name": "plugin.test", "levelname": "INFO", "msg": message})
    rec.__dict__.update(extra)
    return rec


def test_line_is_json_with_event_and_ids():
    line = json.loads(JsonFormatter().format(record("invitation.sent", invitation_id="i-1")))
    assert (line["event"], line["invitation_id"], line["level"]) == (
        "invitation.sent",
        "i-1",
        "INFO",
    )


@pytest.mark.parametrize(
    ("prefix", "token"),
    [
        ("q", "o6dsphiyvb9tXlFvfMW_kcNbLK5GEWRrTScI9va41f0"),
        # An unsubscribe link: itsdangerous' signed form has dots.
        ("u", "WyJhYmMiLCJlbWFpbCJd.aSFvxg.kq8Wmf0pWbCJ4vnxQb3nE2y7ZqI"),
    ],
)
def test_links_are_redacted_wherever_they_appear(prefix, token):
    path = f"/{prefix}/{token}"
    line = JsonFormatter().format(record(f"Exception on {path} [POST]", path=path))
    assert token not in line
    assert f"/{prefix}/<redacted>" in line


def test_exception_text_is_dropped_and_only_its_type_kept():
    try:
        raise ValueError("sam.rivera@example.org")
    except ValueError:
        import sys

        rec = record("jobs.tick_failed")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "sam.rivera" not in line
    assert json.loads(line)["error"] == "ValueError"
