"""The schedule policy engine: which sessions, quiet hours across zones and DST, gaps, settings."""

import tomllib
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from plugin.planning.policy import (
    Decision,
    Policy,
    PolicyError,
    decide,
    outside_quiet_hours,
    preview,
    reminder_time,
    send_deadline,
    send_time,
)

Q = "https://alliance-check.org/fhir/Questionnaire/alliance-check|1.0.0"
DEFAULT = Policy(questionnaire=Q)
SCHEDULES = Path(__file__).parents[2] / "config" / "schedules"
# A moment nowhere near any quiet hours or DST change, for tests about other things.
NOON = datetime(2026, 6, 10, 16, 0, tzinfo=UTC)  # 12:00 in New York


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _asked(policy: Policy) -> list[int]:
    return [
        n
        for n in range(1, 21)
        if decide(policy, session_number=n, ended_at=NOON, timezone="UTC", previous_due_at=None).ask
    ]


# ---- which sessions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_sessions", "then_every", "asked"),
    [
        (4, 3, [1, 2, 3, 4, 7, 10, 13, 16, 19]),  # the default early-alliance pattern
        (0, 1, list(range(1, 21))),
        (1, 1, list(range(1, 21))),
        (2, 0, [1, 2]),
        (3, 2, [1, 2, 3, 5, 7, 9, 11, 13, 15, 17, 19]),
        (0, 5, [5, 10, 15, 20]),
        (6, 4, [1, 2, 3, 4, 5, 6, 10, 14, 18]),
        (25, 3, list(range(1, 21))),
    ],
)
def test_sessions_1_to_20(first_sessions, then_every, asked):
    policy = Policy(questionnaire=Q, first_sessions=first_sessions, then_every=then_every)
    assert _asked(policy) == asked


@pytest.mark.parametrize(
    ("number", "reason"),
    [(1, "first_sessions"), (4, "first_sessions"), (5, "not_scheduled"), (7, "every_kth")],
)
def test_the_reason_names_the_rule(number, reason):
    decision = decide(
        DEFAULT, session_number=number, ended_at=NOON, timezone="UTC", previous_due_at=None
    )
    assert decision.reason == reason
    assert (decision.due_at is None) == (reason == "not_scheduled")


def test_a_session_number_below_1_is_refused():
    with pytest.raises(ValueError, match="start at 1"):
        decide(DEFAULT, session_number=0, ended_at=NOON, timezone="UTC", previous_due_at=None)


def test_a_naive_end_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        send_time(DEFAULT, datetime(2026, 6, 10, 12, 0), "UTC")


def test_an_unknown_zone_is_refused():
    with pytest.raises(ValueError, match="unknown time zone"):
        send_time(DEFAULT, NOON, "Mars/Olympus")


# ---- when: delay and quiet hours --------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "ended_at", "due_at"),
    [
        # Outside quiet hours: just the 10-minute delay.
        ("America/New_York", _utc(2026, 6, 10, 16, 0), _utc(2026, 6, 10, 16, 10)),
        ("Asia/Kolkata", _utc(2026, 6, 1, 15, 0), _utc(2026, 6, 1, 15, 10)),  # 20:40 IST
        # 20:55 + 10 min falls in quiet hours: the next 08:00 local.
        ("Asia/Kolkata", _utc(2026, 6, 1, 15, 25), _utc(2026, 6, 2, 2, 30)),
        ("Asia/Tokyo", _utc(2026, 6, 1, 11, 55), _utc(2026, 6, 1, 23, 0)),
        # After midnight, the same morning's 08:00.
        ("Asia/Tokyo", _utc(2026, 6, 1, 17, 0), _utc(2026, 6, 1, 23, 0)),  # 02:10 JST
        # US DST starts overnight (Mar 8): 08:00 EDT is 12:00 UTC, not 13:00.
        ("America/New_York", _utc(2026, 3, 8, 1, 55), _utc(2026, 3, 8, 12, 0)),
        # US DST ends overnight (Nov 1): 08:00 EST is 13:00 UTC.
        ("America/New_York", _utc(2026, 11, 1, 0, 55), _utc(2026, 11, 1, 13, 0)),
        # EU summer time starts overnight (Mar 29): 08:00 BST is 07:00 UTC.
        ("Europe/London", _utc(2026, 3, 28, 20, 55), _utc(2026, 3, 29, 7, 0)),
        # EU summer time ends overnight (Oct 25): 08:00 GMT is 08:00 UTC.
        ("Europe/London", _utc(2026, 10, 24, 19, 55), _utc(2026, 10, 25, 8, 0)),
        # Lord Howe moves by half an hour: +10:30 -> +11 on Oct 4, +11 -> +10:30 on Apr 5.
        ("Australia/Lord_Howe", _utc(2026, 10, 3, 10, 25), _utc(2026, 10, 3, 21, 0)),
        ("Australia/Lord_Howe", _utc(2026, 4, 4, 9, 55), _utc(2026, 4, 4, 21, 30)),
    ],
)
def test_send_time_waits_for_the_clients_morning(zone, ended_at, due_at):
    assert send_time(DEFAULT, ended_at, zone) == due_at


@pytest.mark.parametrize(
    ("zone", "window", "moment", "expected"),
    [
        # A window that does not cross midnight: 13:00 is quiet, 14:00 is not.
        ("America/New_York", ("13:00", "14:00"), _utc(2026, 6, 1, 16, 59), None),
        ("America/New_York", ("13:00", "14:00"), _utc(2026, 6, 1, 17, 0), _utc(2026, 6, 1, 18)),
        ("America/New_York", ("13:00", "14:00"), _utc(2026, 6, 1, 17, 30), _utc(2026, 6, 1, 18)),
        ("America/New_York", ("13:00", "14:00"), _utc(2026, 6, 1, 18, 0), None),
        ("Asia/Tokyo", ("13:00", "14:00"), _utc(2026, 6, 1, 4, 15), _utc(2026, 6, 1, 5, 0)),
        # Crossing midnight: 21:00 is quiet, 08:00 is not.
        ("Europe/London", ("21:00", "08:00"), _utc(2026, 6, 1, 19, 59), None),
        ("Europe/London", ("21:00", "08:00"), _utc(2026, 6, 1, 20, 0), _utc(2026, 6, 2, 7)),
        ("Europe/London", ("21:00", "08:00"), _utc(2026, 6, 2, 7, 0), None),
        # Equal times: no quiet hours at all.
        ("Europe/London", ("00:00", "00:00"), _utc(2026, 6, 1, 23, 30), None),
        # quiet_end does not exist that night (clocks jump 02:00 -> 03:00 in New York, 01:00 ->
        # 02:00 in London, 02:00 -> 02:30 on Lord Howe): quiet hours end at the jump.
        ("America/New_York", ("22:00", "02:30"), _utc(2026, 3, 8, 6, 0), _utc(2026, 3, 8, 7, 0)),
        ("Europe/London", ("22:00", "01:30"), _utc(2026, 3, 29, 0, 30), _utc(2026, 3, 29, 1, 0)),
        (
            "Australia/Lord_Howe",
            ("22:00", "02:15"),
            _utc(2026, 10, 3, 14, 0),
            _utc(2026, 10, 3, 15, 30),
        ),
        # quiet_end happens twice (01:00-02:00 repeats in New York): the next one to come.
        (
            "America/New_York",
            ("22:00", "01:30"),
            _utc(2026, 11, 1, 4, 45),
            _utc(2026, 11, 1, 5, 30),
        ),
        (
            "America/New_York",
            ("22:00", "01:30"),
            _utc(2026, 11, 1, 6, 10),
            _utc(2026, 11, 1, 6, 30),
        ),
        # Between the two 01:30s the wall clock is past quiet_end: not quiet.
        ("America/New_York", ("22:00", "01:30"), _utc(2026, 11, 1, 5, 45), None),
    ],
)
def test_outside_quiet_hours(zone, window, moment, expected):
    policy = Policy(questionnaire=Q, quiet_start=window[0], quiet_end=window[1])
    result = outside_quiet_hours(policy, moment, zone)
    assert result == (expected or moment)
    assert result.tzinfo is UTC


def _quiet_at(instant: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    wall = instant.astimezone(zone).time()
    return start <= wall < end if start < end else (wall >= start or wall < end)


@pytest.mark.parametrize(
    ("zone", "window", "day"),
    [
        ("America/New_York", ("21:00", "08:00"), datetime(2026, 3, 7)),
        ("America/New_York", ("00:30", "02:30"), datetime(2026, 3, 7)),
        ("America/New_York", ("22:00", "01:30"), datetime(2026, 10, 31)),
        ("Europe/London", ("21:00", "08:00"), datetime(2026, 3, 28)),
        ("Europe/London", ("23:00", "01:30"), datetime(2026, 10, 24)),
        ("Australia/Lord_Howe", ("22:00", "02:15"), datetime(2026, 10, 3)),
        ("Australia/Lord_Howe", ("01:00", "01:45"), datetime(2026, 4, 4)),
        ("Asia/Kolkata", ("13:00", "14:00"), datetime(2026, 6, 1)),
    ],
)
def test_quiet_hours_end_at_the_first_instant_they_allow(zone, window, day):
    """Sweep two days around a DST change: the answer is the first non-quiet instant."""
    policy = Policy(questionnaire=Q, quiet_start=window[0], quiet_end=window[1])
    tz = ZoneInfo(zone)
    start, end = policy.quiet_start, policy.quiet_end
    moment = day.replace(tzinfo=tz).astimezone(UTC)
    for _ in range(2 * 24 * 6):
        result = outside_quiet_hours(policy, moment, zone)
        assert result >= moment
        assert not _quiet_at(result, tz, start, end)
        if result > moment:
            step = moment
            while step < result:
                assert _quiet_at(step, tz, start, end), (moment, step, result)
                step += timedelta(minutes=5)
            assert _quiet_at(result - timedelta(seconds=1), tz, start, end)
        moment += timedelta(minutes=10)


# ---- the minimum gap, in and out of order -----------------------------------------------------

DUE = _utc(2026, 6, 10, 16, 10)  # NOON's due time


@pytest.mark.parametrize(
    ("min_gap_days", "previous", "decision"),
    [
        (2, None, Decision(True, "first_sessions", DUE)),
        (2, DUE - timedelta(days=7), Decision(True, "first_sessions", DUE)),
        (2, DUE - timedelta(days=2), Decision(True, "first_sessions", DUE)),
        (2, DUE - timedelta(days=2) + timedelta(minutes=1), Decision(False, "min_gap", None)),
        (2, DUE - timedelta(hours=1), Decision(False, "min_gap", None)),
        (2, DUE, Decision(False, "min_gap", None)),
        # A late (out-of-order) session lands just before one already planned: still too close.
        (2, DUE + timedelta(days=1), Decision(False, "min_gap", None)),
        (2, DUE + timedelta(days=3), Decision(True, "first_sessions", DUE)),
        (0, DUE, Decision(True, "first_sessions", DUE)),
        (14, DUE - timedelta(days=13), Decision(False, "min_gap", None)),
    ],
)
def test_min_gap(min_gap_days, previous, decision):
    policy = Policy(questionnaire=Q, min_gap_days=min_gap_days)
    result = decide(
        policy,
        session_number=2,
        ended_at=NOON,
        timezone="America/New_York",
        previous_due_at=previous,
    )
    assert result == decision


def test_an_unscheduled_session_is_not_scheduled_whatever_the_gap():
    result = decide(DEFAULT, session_number=5, ended_at=NOON, timezone="UTC", previous_due_at=NOON)
    assert result == Decision(False, "not_scheduled", None)


def test_the_gap_is_measured_between_send_times_after_quiet_hours():
    # Sessions at 20:55 and 23:00 two days apart: both sends are pushed to 08:00, 2 days apart.
    tz = "America/New_York"
    first = send_time(DEFAULT, _utc(2026, 6, 2, 0, 55), tz)  # Mon 20:55 EDT -> Tue 08:00
    later = decide(
        DEFAULT,
        session_number=2,
        ended_at=_utc(2026, 6, 4, 3, 0),  # Wed 23:00 EDT -> Thu 08:00
        timezone=tz,
        previous_due_at=first,
    )
    assert later == Decision(True, "first_sessions", _utc(2026, 6, 4, 12, 0))


# ---- stale sessions: not asked days late ------------------------------------------------------


@pytest.mark.parametrize(
    ("max_hours", "now", "decision"),
    [
        # Planned at once: due 10 minutes after the end.
        (24, NOON + timedelta(minutes=1), Decision(True, "first_sessions", DUE)),
        (24, NOON + timedelta(hours=24), Decision(True, "first_sessions", DUE)),
        # A worker outage: planned more than a day after the session ended.
        (24, NOON + timedelta(hours=24, seconds=1), Decision(False, "stale", None)),
        (24, NOON + timedelta(days=3), Decision(False, "stale", None)),
        (72, NOON + timedelta(days=2), Decision(True, "first_sessions", DUE)),
    ],
)
def test_a_session_planned_too_long_after_it_ended_is_stale(max_hours, now, decision):
    policy = Policy(questionnaire=Q, max_send_delay_hours=max_hours)
    result = decide(
        policy,
        session_number=2,
        ended_at=NOON,
        timezone="America/New_York",
        previous_due_at=None,
        now=now,
    )
    assert result == decision


def test_a_schedule_stored_before_the_setting_keeps_working_with_a_days_delay():
    # The longest delay a schedule allows, stored before max_send_delay_hours existed.
    policy = Policy.from_dict({"questionnaire": Q, "delay_minutes": 1440})
    assert policy.max_send_delay_hours == 25
    assert Policy.from_dict({"questionnaire": Q, "delay_minutes": 600}).max_send_delay_hours == 24


def test_waiting_for_quiet_hours_to_end_is_not_lateness():
    # Ends Mon 20:55 in New York, due Tue 08:00: the day's grace counts from the 08:00 send.
    ended = _utc(2026, 6, 2, 0, 55)
    due = send_time(DEFAULT, ended, "America/New_York")
    assert due == _utc(2026, 6, 2, 12, 0)
    assert send_deadline(DEFAULT, due) == due + timedelta(hours=24, minutes=-10)
    kwargs = {"session_number": 1, "ended_at": ended, "timezone": "America/New_York"}
    on_time = decide(DEFAULT, previous_due_at=None, now=due + timedelta(hours=20), **kwargs)
    assert on_time == Decision(True, "first_sessions", due)
    late = decide(DEFAULT, previous_due_at=None, now=due + timedelta(hours=24), **kwargs)
    assert late == Decision(False, "stale", None)


def test_preview_of_daily_sessions_skips_those_within_the_gap():
    policy = Policy(questionnaire=Q, first_sessions=6, then_every=0)
    rows = list(
        preview(
            policy,
            first_session=_utc(2026, 6, 1, 14, 0),
            timezone="UTC",
            sessions=6,
            every=timedelta(days=1),
        )
    )
    assert [r.decision.reason for r in rows] == [
        "first_sessions",
        "min_gap",
        "first_sessions",
        "min_gap",
        "first_sessions",
        "min_gap",
    ]


def test_preview_keeps_the_local_session_time_across_dst():
    rows = list(
        preview(
            DEFAULT,
            first_session=datetime(2026, 3, 2, 20, 55, tzinfo=ZoneInfo("America/New_York")),
            timezone="America/New_York",
        )
    )
    assert [r.session_number for r in rows if r.decision.ask] == [1, 2, 3, 4, 7, 10, 13, 16, 19]
    # Before and after the change on Mar 8, the session ends at 20:55 and the send is 08:00.
    assert rows[0].ended_at == _utc(2026, 3, 3, 1, 55)
    assert rows[0].decision.due_at == _utc(2026, 3, 3, 13, 0)
    assert rows[1].ended_at == _utc(2026, 3, 10, 0, 55)
    assert rows[1].decision.due_at == _utc(2026, 3, 10, 12, 0)
    assert rows[1].reminder_at == _utc(2026, 3, 11, 12, 0)
    assert all(r.reminder_at is None for r in rows if not r.decision.ask)


# ---- reminders --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "sent_at", "expires_in", "expected"),
    [
        # Default: 24 h later, 08:00 the next day.
        ({}, _utc(2026, 6, 2, 12, 0), 72, _utc(2026, 6, 3, 12, 0)),
        # Sent at 20:30 local with a 1-hour reminder: 21:30 is quiet, so 08:00 next day.
        ({"reminder_after_hours": 1}, _utc(2026, 6, 3, 0, 30), 72, _utc(2026, 6, 3, 12, 0)),
        # ... unless that is within an hour of expiry: no reminder.
        ({"reminder_after_hours": 1}, _utc(2026, 6, 3, 0, 30), 3, None),
        # Exactly one hour before expiry is still comfortable.
        (
            {"reminder_after_hours": 24, "expires_after_hours": 25},
            _utc(2026, 6, 2, 12, 0),
            25,
            _utc(2026, 6, 3, 12, 0),
        ),
        ({"reminder_after_hours": 0}, _utc(2026, 6, 2, 12, 0), 72, None),
    ],
)
def test_reminder_time(settings, sent_at, expires_in, expected):
    policy = Policy(questionnaire=Q, **settings)
    expires_at = sent_at + timedelta(hours=expires_in)
    assert reminder_time(policy, sent_at, expires_at, "America/New_York") == expected


# ---- settings ---------------------------------------------------------------------------------


def test_to_dict_is_json_safe_and_round_trips():
    data = DEFAULT.to_dict()
    assert data == {
        "questionnaire": Q,
        "first_sessions": 4,
        "then_every": 3,
        "min_gap_days": 2,
        "delay_minutes": 10,
        "quiet_start": "21:00",
        "quiet_end": "08:00",
        "reminder_after_hours": 24,
        "expires_after_hours": 72,
        "max_send_delay_hours": 24,
        "channels": ["email", "sms"],
        "language": "en",
    }
    assert Policy.from_dict(data) == DEFAULT


def test_from_dict_takes_toml_native_times_and_defaults_what_is_missing():
    policy = Policy.from_dict({"questionnaire": Q, "quiet_start": time(22, 0)})
    assert policy.quiet_start == time(22, 0)
    assert policy.quiet_end == DEFAULT.quiet_end
    assert policy.channels == ("email", "sms")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"first_sessions": -1}, "first_sessions must be from 0 to 100"),
        ({"first_sessions": "4"}, "first_sessions must be a whole number"),
        ({"first_sessions": True}, "first_sessions must be a whole number"),
        ({"then_every": 2.5}, "then_every must be a whole number"),
        ({"then_every": 101}, "then_every must be from 0 to 100"),
        ({"first_sessions": 0, "then_every": 0}, "no session would ever be asked"),
        ({"min_gap_days": 91}, "min_gap_days must be from 0 to 90"),
        ({"delay_minutes": 1441}, "delay_minutes must be from 0 to 1440"),
        ({"quiet_start": "9pm"}, 'quiet_start must be a local time as "HH:MM"'),
        ({"quiet_start": "21:00:30"}, "quiet_start must be"),
        ({"quiet_start": time(21, 0, 30)}, "quiet_start must be"),
        ({"quiet_end": "24:00"}, "quiet_end must be"),
        ({"quiet_end": 8}, "quiet_end must be"),
        ({"reminder_after_hours": 72}, "reminder_after_hours (72) must be at least 1 hour"),
        ({"reminder_after_hours": -1}, "reminder_after_hours must be from 0"),
        ({"expires_after_hours": 0}, "expires_after_hours must be from 1 to 336"),
        ({"max_send_delay_hours": 0}, "max_send_delay_hours must be from 1 to 336"),
        ({"max_send_delay_hours": 337}, "max_send_delay_hours must be from 1 to 336"),
        (
            {"max_send_delay_hours": 2, "delay_minutes": 120},
            "max_send_delay_hours (2) must be longer than delay_minutes",
        ),
        ({"channels": []}, "channels must be a non-empty list"),
        ({"channels": "sms"}, "channels must be a non-empty list"),
        ({"channels": ["fax"]}, 'channels: each must be "email" or "sms", not \'fax\''),
        ({"channels": ["sms", "sms"]}, "channels must not repeat"),
        ({"language": "fr"}, "language must be one of en, es, not 'fr'"),
        ({"questionnaire": "https://example.org/Q"}, 'questionnaire must be the canonical "url|v'),
        ({"questionnaire": "|1.0"}, "questionnaire must be"),
        ({"questionnaire": 5}, "questionnaire must be"),
        ({"questionnaire": "x" * 300 + "|1"}, "at most 300 characters"),
        ({"colour": "blue"}, "unknown setting 'colour'; the settings are: questionnaire, first_"),
        ({"questionnaire": None}, "questionnaire must be"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(settings, message):
    with pytest.raises(PolicyError) as caught:
        Policy.from_dict({"questionnaire": Q} | settings)
    assert message in str(caught.value)


def test_a_policy_needs_its_questionnaire():
    with pytest.raises(PolicyError, match="questionnaire is required"):
        Policy.from_dict({"first_sessions": 4})


def test_a_policy_is_a_table():
    with pytest.raises(PolicyError, match="table of settings"):
        Policy.from_dict(["first_sessions", 4])


def test_building_a_policy_in_code_validates_too():
    with pytest.raises(PolicyError, match="language"):
        Policy(questionnaire=Q, language="de")


# ---- the documented examples ------------------------------------------------------------------


def test_config_schedules_default_is_the_built_in_default():
    data = tomllib.loads((SCHEDULES / "default.toml").read_text())
    assert Policy.from_dict({"questionnaire": Q} | data) == DEFAULT
    assert set(data) | {"questionnaire"} == set(DEFAULT.to_dict())


@pytest.mark.parametrize("path", sorted(SCHEDULES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_schedule_is_valid(path):
    data = tomllib.loads(path.read_text())
    policy = Policy.from_dict({"questionnaire": Q} | data)
    assert _asked(policy)
