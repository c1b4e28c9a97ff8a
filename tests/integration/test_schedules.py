"""Schedule policies in the database: versions, overrides, session numbers, and the CLI."""

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import select, text

from fhir_mappings.instrument import load_bundled
from plugin.core.models import Invitation, SchedulePolicy, SessionEvent
from plugin.install.practices import add_practice
from plugin.planning.policy import Policy
from plugin.planning.schedules import (
    DEFAULT_VERSION,
    current_policy,
    previous_due_at,
    session_number,
    set_policy,
)
from tests.support.data import DATA

ROOT = Path(__file__).parents[2]
SCHEDULES = ROOT / "config" / "schedules"
BAD = DATA / "schedules"
BUNDLED = load_bundled().canonical
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
DEFAULT_PATTERN = "asked after sessions 1, 2, 3, 4, 7, 10, 13, 16, 19"


def _policy(**settings) -> Policy:
    return Policy(questionnaire=BUNDLED, **settings)


# ---- versions and overrides -------------------------------------------------------------------


def test_a_practice_without_a_policy_uses_the_built_in_default(db, practice):
    assert current_policy(db, practice.id, None) == (_policy(), None, DEFAULT_VERSION)
    assert current_policy(db, practice.id, "Practitioner/7") == (_policy(), None, DEFAULT_VERSION)


def test_each_set_adds_a_version_and_the_latest_is_current(db, practice):
    first = set_policy(db, practice.id, None, _policy(first_sessions=6), NOW)
    second = set_policy(db, practice.id, None, _policy(first_sessions=5), NOW)
    db.commit()
    assert (first.version, second.version) == (1, 2)
    assert current_policy(db, practice.id, None) == (_policy(first_sessions=5), second.id, 2)
    # Version 1 is still there, unchanged: invitations that recorded it can be explained.
    rows = db.scalars(select(SchedulePolicy).order_by(SchedulePolicy.version)).all()
    assert [r.settings["first_sessions"] for r in rows] == [6, 5]


def test_a_practitioner_override_beats_the_practice_policy(db, practice, other_practice):
    set_policy(db, practice.id, None, _policy(first_sessions=6), NOW)
    override = set_policy(db, practice.id, "Practitioner/7", _policy(language="es"), NOW)
    db.commit()
    assert override.version == 1  # versions count per practitioner
    assert current_policy(db, practice.id, "Practitioner/7") == (
        _policy(language="es"),
        override.id,
        1,
    )
    # Another practitioner at the practice, and the practice itself, keep the practice's.
    assert current_policy(db, practice.id, "Practitioner/8")[0] == _policy(first_sessions=6)
    assert current_policy(db, practice.id, None)[0] == _policy(first_sessions=6)
    # Another practice never sees either, even for the same practitioner reference.
    assert current_policy(db, other_practice.id, "Practitioner/7") == (_policy(), None, 0)


def _wait_until_blocked(engine, deadline: float) -> None:
    """On PostgreSQL, wait until another transaction waits on our uncommitted row's lock."""
    if engine.dialect.name != "postgresql":
        return  # SQLite's BEGIN IMMEDIATE already makes the second writer queue
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'INSERT INTO schedule_policies%'"
                )
            )
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("the second admin never reached the unique constraint")


def test_two_admins_saving_at_once_get_versions_1_and_2(committed_app, engine):
    sessions = committed_app.extensions["db"].sessions
    with sessions() as session:
        practice = add_practice(
            session,
            account_id="race",
            name="Race",
            timezone="UTC",
            ehr_target="ndjson:var/ehr",
            root=Path(committed_app.instance_path).parent,
        )
    results, errors = [], []

    def second_admin():
        try:
            with sessions() as session:
                row = set_policy(session, practice.id, None, _policy(first_sessions=2), NOW)
                session.commit()
                results.append(row.version)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    with sessions() as first:
        results.append(set_policy(first, practice.id, None, _policy(first_sessions=1), NOW).version)
        thread = threading.Thread(target=second_admin)
        thread.start()
        _wait_until_blocked(engine, time.monotonic() + 10)
        first.commit()
    thread.join(timeout=30)
    assert errors == []
    assert sorted(results) == [1, 2]
    with sessions() as session:
        assert current_policy(session, practice.id, None)[2] == 2


# ---- session numbers --------------------------------------------------------------------------


def _event(db, practice, session_id: str, ended_at: datetime, patient_ref="Patient/1"):
    """Store a session-ended event as the webhook would, received at NOW."""
    db.add(
        SessionEvent(
            practice_id=practice.id,
            platform=practice.platform,
            event_id=f"evt-{session_id}",
            session_id=session_id,
            started_at=ended_at - timedelta(minutes=50),
            ended_at=ended_at,
            patient_ref=patient_ref,
            next_attempt_at=NOW,
            received_at=NOW,
        )
    )
    db.commit()


def _weeks(n: int) -> datetime:
    return datetime(2026, 3, 2, 15, 0, tzinfo=UTC) + timedelta(weeks=n)


def test_sessions_are_numbered_by_when_they_ended_not_when_they_arrived(db, practice):
    # Arrival order 3, 1, 2: a delayed delivery of week 0 and week 1.
    for week in (2, 0, 1):
        _event(db, practice, f"s{week}", _weeks(week))
    numbers = [session_number(db, practice.id, "Patient/1", _weeks(w), f"s{w}") for w in range(3)]
    assert numbers == [1, 2, 3]


def test_a_replayed_session_keeps_its_number(db, practice):
    _event(db, practice, "s0", _weeks(0))
    _event(db, practice, "s1", _weeks(1))
    before = session_number(db, practice.id, "Patient/1", _weeks(1), "s1")
    # Later sessions arrive, then the platform replays s1: its number does not move.
    _event(db, practice, "s2", _weeks(2))
    _event(db, practice, "s3", _weeks(3))
    assert session_number(db, practice.id, "Patient/1", _weeks(1), "s1") == before == 2


def test_a_session_being_planned_counts_those_already_stored(db, practice):
    _event(db, practice, "s0", _weeks(0))
    # Not stored yet (or stored: the same answer), it is the second.
    assert session_number(db, practice.id, "Patient/1", _weeks(1), "s1") == 2
    _event(db, practice, "s1", _weeks(1))
    assert session_number(db, practice.id, "Patient/1", _weeks(1), "s1") == 2


def test_sessions_ending_at_the_same_moment_are_ordered_by_session_id(db, practice):
    _event(db, practice, "b", _weeks(0))
    _event(db, practice, "a", _weeks(0))
    assert session_number(db, practice.id, "Patient/1", _weeks(0), "a") == 1
    assert session_number(db, practice.id, "Patient/1", _weeks(0), "b") == 2


def test_only_this_clients_sessions_at_this_practice_count(db, practice, other_practice):
    _event(db, practice, "mine", _weeks(0))
    _event(db, practice, "theirs", _weeks(0), patient_ref="Patient/2")
    _event(db, practice, "unmatched", _weeks(0), patient_ref=None)  # Zoom, not yet resolved
    _event(db, other_practice, "elsewhere", _weeks(0))
    assert session_number(db, practice.id, "Patient/1", _weeks(1), "next") == 2
    assert session_number(db, other_practice.id, "Patient/1", _weeks(1), "next") == 2
    assert session_number(db, practice.id, "Patient/3", _weeks(1), "next") == 1


# ---- the previous invitation, for the minimum gap ---------------------------------------------


def _invitation(db, practice, due_at: datetime, status="pending", patient_ref="Patient/1"):
    session_id = f"s-{status}-{due_at:%Y%m%d%H%M}-{patient_ref}"
    _event(db, practice, session_id, due_at - timedelta(minutes=10), patient_ref=patient_ref)
    event = db.scalar(select(SessionEvent).where(SessionEvent.session_id == session_id))
    db.add(
        Invitation(
            practice_id=practice.id,
            session_event_id=event.id,
            status=status,
            questionnaire=BUNDLED,
            patient_ref=patient_ref,
            language="en",
            due_at=due_at,
            next_attempt_at=due_at,
            created_at=NOW,
        )
    )
    db.commit()


def test_previous_due_at_is_the_latest_live_invitation_before_the_moment(
    db, practice, other_practice
):
    _invitation(db, practice, _weeks(0), status="answered")
    _invitation(db, practice, _weeks(1), status="expired")
    _invitation(db, practice, _weeks(2), status="failed")  # never reached the client
    _invitation(db, practice, _weeks(3), status="cancelled")  # the client opted out
    _invitation(db, practice, _weeks(2), patient_ref="Patient/2")
    _invitation(db, other_practice, _weeks(3))
    _invitation(db, practice, _weeks(5), status="sent")  # after the moment asked about
    assert previous_due_at(db, practice.id, "Patient/1", _weeks(4)) == _weeks(1)
    assert previous_due_at(db, practice.id, "Patient/1", _weeks(6)) == _weeks(5)
    assert previous_due_at(db, practice.id, "Patient/1", _weeks(0)) is None
    assert previous_due_at(db, practice.id, "Patient/9", _weeks(6)) is None


# ---- the `schedule` command -------------------------------------------------------------------


def _run(runner, *args):
    return runner.invoke(args=["schedule", *map(str, args)])


def test_show_prints_the_built_in_default(runner, practice):
    result = _run(runner, "show", "demo")
    assert result.exit_code == 0, result.output
    assert "built-in default" in result.output
    assert f'questionnaire = "{BUNDLED}"' in result.output
    assert "first_sessions = 4\nthen_every = 3\n" in result.output
    assert 'quiet_start = "21:00"' in result.output
    assert 'channels = ["email", "sms"]' in result.output


def test_set_twice_stores_versions_1_and_2_and_show_prints_2(runner, practice):
    first = _run(runner, "set", "demo", "--set", "first_sessions=6", "--set", "channels=sms,email")
    assert first.exit_code == 0, first.output
    assert "version 1" in first.output
    second = _run(runner, "set", "demo", "--set", 'quiet_start="22:30"', "--set", "language=es")
    assert "version 2" in second.output
    shown = _run(runner, "show", "demo").output
    assert "the practice policy, version 2" in shown
    # --set edits on top of what is in effect: version 1's changes are kept.
    for line in (
        "first_sessions = 6",
        'channels = ["sms", "email"]',
        'quiet_start = "22:30"',
        'language = "es"',
    ):
        assert line in shown


def test_show_output_can_be_stored_again_as_a_file(runner, practice, tmp_path):
    _run(runner, "set", "demo", "--set", "min_gap_days=5")
    shown = _run(runner, "show", "demo").output
    (tmp_path / "copy.toml").write_text(shown)
    result = _run(runner, "set", "demo", "--file", tmp_path / "copy.toml")
    assert result.output == "unchanged: version 1 already says this\n"


def test_set_from_an_example_file_keeps_the_questionnaire(runner, practice):
    result = _run(runner, "set", "demo", "--file", SCHEDULES / "sms-first.toml")
    assert result.exit_code == 0, result.output
    shown = _run(runner, "show", "demo").output
    assert 'channels = ["sms", "email"]' in shown
    assert "expires_after_hours = 48" in shown
    assert f'questionnaire = "{BUNDLED}"' in shown
    # The file is a whole policy: what it leaves out is the default, not the previous value.
    _run(runner, "set", "demo", "--set", "first_sessions=9")
    _run(runner, "set", "demo", "--file", SCHEDULES / "default.toml")
    assert "first_sessions = 4" in _run(runner, "show", "demo").output


def test_a_practitioner_override_through_the_cli(runner, practice, other_practice):
    result = _run(
        runner,
        "set",
        "demo",
        "--practitioner",
        "Practitioner/7",
        "--file",
        SCHEDULES / "one-practitioner-spanish.toml",
    )
    assert "stored the override for Practitioner/7 of demo as version 1" in result.output
    shown = _run(runner, "show", "demo", "--practitioner", "Practitioner/7").output
    assert "the override for Practitioner/7, version 1" in shown
    assert 'language = "es"' in shown
    assert "built-in default" in _run(runner, "show", "demo").output
    assert "built-in default" in _run(runner, "show", "other").output
    _run(runner, "set", "demo", "--set", "min_gap_days=3")
    other = _run(runner, "show", "demo", "--practitioner", "Practitioner/8").output
    assert "the practice policy, version 1 (Practitioner/8 has no override)" in other


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--set", "first_sessions=-1"], "first_sessions must be from 0 to 100"),
        (["--set", "first_sessions=four"], "first_sessions must be a whole number"),
        (["--set", "then_every=0", "--set", "first_sessions=0"], "no session would ever be asked"),
        (["--set", "colour=blue"], "unknown setting 'colour'"),
        (["--set", "channels=fax"], "channels: each must be"),
        (["--set", "quiet_start=9pm"], 'quiet_start must be a local time as "HH:MM"'),
        (["--set", "reminder_after_hours=80"], "must be at least 1 hour before"),
        (["--set", "language=fr"], "language must be one of en, es"),
        (["--set", "questionnaire=https://example.org/Q|9"], "is not installed"),
        (["--set", "nonsense"], "is not key=value"),
        ([], "give either --file or"),
        (["--file", SCHEDULES / "default.toml", "--set", "language=es"], "give either --file"),
        (["--file", BAD / "missing.toml"], "does not exist"),
        (["--file", BAD / "not-toml.toml"], "is not valid TOML"),
        (["--file", BAD / "fax-first.toml"], "channels: each must be"),
        (["--file", BAD / "unknown-questionnaire.toml"], "is not installed"),
    ],
)
def test_set_refuses_bad_input_clearly_and_stores_nothing(runner, practice, args, error):
    result = _run(runner, "set", "demo", *args)
    assert result.exit_code != 0
    assert error in result.output
    assert "built-in default" in _run(runner, "show", "demo").output


@pytest.mark.parametrize(
    "args",
    [
        ["show", "nope"],
        ["set", "nope", "--set", "first_sessions=5"],
        ["preview", "nope"],
        ["show", "demo", "--platform", "zoom"],
    ],
)
def test_an_unknown_account_is_a_clear_error(runner, practice, args):
    result = _run(runner, *args)
    assert result.exit_code != 0
    assert "no practice with account" in result.output


def _rows(output: str) -> dict[int, str]:
    return {
        int(line.split()[0]): line for line in output.splitlines() if line[:7].strip().isdigit()
    }


def test_preview_shows_the_default_early_alliance_pattern(runner, practice):
    result = _run(runner, "preview", "demo", "--start", "2026-03-02")
    assert result.exit_code == 0, result.output
    assert DEFAULT_PATTERN in result.output
    rows = _rows(result.output)
    assert sorted(rows) == list(range(1, 21))
    # 20:55 + 10 minutes is quiet: sent at 08:00 the next morning, reminded a day later,
    # the same local times after the US clocks change on Mar 8.
    assert rows[1].split()[1:] == [
        "Mon", "2026-03-02", "20:55", "yes", "one", "of", "the", "first", "4",
        "Tue", "2026-03-03", "08:00", "Wed", "2026-03-04", "08:00",
    ]  # fmt: skip
    assert "Tue 2026-03-10 08:00" in rows[2]
    assert " no " in rows[5] and "not scheduled" in rows[5]
    assert "then one in every 3" in rows[7]


def test_preview_in_the_clients_zone(runner, practice):
    result = _run(runner, "preview", "demo", "--start", "2026-03-02", "--timezone", "Asia/Tokyo")
    assert "in Asia/Tokyo" in result.output
    assert "Tue 2026-03-03 08:00" in _rows(result.output)[1]


def test_preview_of_a_file_stores_nothing(runner, practice):
    path = SCHEDULES / "fortnightly-after-intake.toml"
    result = _run(runner, "preview", "demo", "--start", "2026-03-02", "--file", path)
    assert "asked after sessions 1, 2, 3, 5, 7, 9, 11, 13, 15, 17, 19" in result.output
    assert "built-in default" in _run(runner, "show", "demo").output


def test_preview_follows_the_stored_policy_and_the_gap(runner, practice):
    _run(runner, "set", "demo", "--set", "first_sessions=2", "--set", "then_every=1")
    _run(runner, "set", "demo", "--set", "min_gap_days=10")
    result = _run(runner, "preview", "demo", "--start", "2026-03-02")
    assert "the practice policy, version 2" in result.output
    assert "asked after sessions 1, 3, 5, 7, 9, 11, 13, 15, 17, 19" in result.output
    assert "within 10 days of the last one" in _rows(result.output)[2]


def test_preview_starts_next_monday_by_default(runner, practice):
    with time_machine.travel(datetime(2026, 3, 4, 15, 0, tzinfo=UTC), tick=False):
        result = _run(runner, "preview", "demo")
    assert "Mon 2026-03-09 20:55" in _rows(result.output)[1]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--start", "next week"], "Invalid value for '--start'"),
        (["--file", BAD / "fax-first.toml"], "channels: each must be"),
    ],
)
def test_preview_refuses_bad_input_clearly(runner, practice, args, error):
    result = _run(runner, "preview", "demo", *args)
    assert result.exit_code != 0
    assert error in result.output
