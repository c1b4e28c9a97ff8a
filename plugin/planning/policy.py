"""The schedule policy engine: which sessions get a questionnaire, and when it goes out.

Pure: no I/O, no Flask, no database. The store and the `schedule` command live in
plugin.planning.schedules; the planning job feeds this module the facts it needs.
"""

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CHANNELS = ("email", "sms")
# The languages the questionnaire and its messages are written in.
LANGUAGES = ("en", "es")
REASONS = ("first_sessions", "every_kth", "not_scheduled", "min_gap", "stale")
# A reminder later than this before expiry would send the client to a dead link.
REMINDER_MARGIN = timedelta(hours=1)

# field: (smallest, largest) for the whole-number settings.
_RANGES = {
    "first_sessions": (0, 100),
    "then_every": (0, 100),
    "min_gap_days": (0, 90),
    # Past a day the client rates a session they no longer remember well.
    "delay_minutes": (0, 1440),
    "reminder_after_hours": (0, 335),
    "expires_after_hours": (1, 336),
    # A client asked days after the session rates one they barely remember; two weeks at most.
    "max_send_delay_hours": (1, 336),
}
_MEANINGS = {
    "first_sessions": "how many opening sessions are all asked",
    "then_every": "ask every k-th session after those; 0 = never",
    "min_gap_days": "days; 0 = no minimum",
    "delay_minutes": "minutes after the session ends",
    "reminder_after_hours": "hours; 0 = no reminder",
    "expires_after_hours": "hours",
    "max_send_delay_hours": "hours after the session ends; later, it is skipped as stale",
}


class PolicyError(ValueError):
    """A policy setting is invalid; the message names the field, clearly, and so does `field`."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        # The setting at fault, for surfaces that point at it (the API's 422); None for the
        # policy as a whole.
        self.field = field


def _whole(name: str, value: object) -> int:
    low, high = _RANGES[name]
    # bool is an int to Python, but `first_sessions = true` is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(
            f"{name} must be a whole number from {low} to {high} ({_MEANINGS[name]}), "
            f"not {value!r}",
            name,
        )
    if not low <= value <= high:
        raise PolicyError(
            f"{name} must be from {low} to {high} ({_MEANINGS[name]}), not {value}", name
        )
    return value


def _clock(name: str, value: object) -> time:
    if isinstance(value, time) and value.tzinfo is None and not (value.second or value.microsecond):
        return value
    if isinstance(value, str):
        try:
            parsed = time.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and len(value) == 5 and parsed.tzinfo is None:
            return parsed
    raise PolicyError(f'{name} must be a local time as "HH:MM", e.g. "21:00", not {value!r}', name)


def _channels(value: object) -> tuple[str, ...]:
    allowed = " or ".join(f'"{c}"' for c in CHANNELS)
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise PolicyError(
            f'channels must be a non-empty list in the order to try, e.g. ["sms", "email"], '
            f"not {value!r}",
            "channels",
        )
    for channel in value:
        if channel not in CHANNELS:
            raise PolicyError(f"channels: each must be {allowed}, not {channel!r}", "channels")
    if len(set(value)) != len(value):
        raise PolicyError(f"channels must not repeat a channel: {list(value)!r}", "channels")
    return tuple(value)


def _questionnaire(value: object) -> str:
    url, bar, version = value.partition("|") if isinstance(value, str) else ("", "", "")
    if not (bar and url.strip() and version.strip()) or len(value) > 300 or value != value.strip():
        raise PolicyError(
            'questionnaire must be the canonical "url|version" of a Questionnaire, '
            f"at most 300 characters, not {value!r}",
            "questionnaire",
        )
    return value


@dataclass(frozen=True)
class Policy:
    """One practice's (or practitioner's) schedule: which sessions are asked, when and how."""

    questionnaire: str  # canonical "url|version" of the Questionnaire
    first_sessions: int = 4  # ask after every one of the first N sessions
    then_every: int = 3  # then after every k-th (session N+k, N+2k, ...); 0 = never
    min_gap_days: int = 2  # no second questionnaire to one client within this many days
    delay_minutes: int = 10  # after the session ends
    quiet_start: time = time(21, 0)  # in the client's zone; equal to quiet_end = no quiet hours
    quiet_end: time = time(8, 0)
    reminder_after_hours: int = 24  # 0 = no reminder
    expires_after_hours: int = 72
    max_send_delay_hours: int = 24  # later than this after the session, it is skipped (stale)
    channels: tuple[str, ...] = ("email", "sms")  # order tried; each of "email", "sms"; no repeats
    language: str = "en"  # used when the client's language is not offered

    def __post_init__(self) -> None:
        """Refuse any invalid setting, whether built in code or read from a file."""
        _questionnaire(self.questionnaire)
        for name in _RANGES:
            _whole(name, getattr(self, name))
        # "HH:MM" strings and lists are accepted and normalised; frozen, so via object.
        object.__setattr__(self, "quiet_start", _clock("quiet_start", self.quiet_start))
        object.__setattr__(self, "quiet_end", _clock("quiet_end", self.quiet_end))
        object.__setattr__(self, "channels", _channels(self.channels))
        if self.language not in LANGUAGES:
            raise PolicyError(
                f"language must be one of {', '.join(LANGUAGES)}, not {self.language!r}",
                "language",
            )
        if self.first_sessions == 0 and self.then_every == 0:
            raise PolicyError(
                "first_sessions and then_every are both 0, so no session would ever be asked",
                "then_every",
            )
        if self.max_send_delay_hours * 60 <= self.delay_minutes:
            raise PolicyError(
                f"max_send_delay_hours ({self.max_send_delay_hours}) must be longer than "
                f"delay_minutes ({self.delay_minutes} minutes), or every session would be stale",
                "max_send_delay_hours",
            )
        before_expiry = timedelta(hours=self.expires_after_hours - self.reminder_after_hours)
        if self.reminder_after_hours and before_expiry < REMINDER_MARGIN:
            raise PolicyError(
                f"reminder_after_hours ({self.reminder_after_hours}) must be at least 1 hour "
                f"before expires_after_hours ({self.expires_after_hours}), or 0 for no reminder",
                "reminder_after_hours",
            )

    def to_dict(self) -> dict:
        """Return the settings as JSON-safe values (times as "HH:MM", channels as a list)."""
        data = dataclasses.asdict(self)
        data["quiet_start"] = self.quiet_start.strftime("%H:%M")
        data["quiet_end"] = self.quiet_end.strftime("%H:%M")
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Policy":
        """Build a policy from to_dict()'s shape, validating every field; missing ones default."""
        if not isinstance(data, dict):
            raise PolicyError(f"a policy is a table of settings, not {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise PolicyError(
                f"unknown setting {unknown[0]!r}; the settings are: {', '.join(known)}",
                unknown[0],
            )
        if "questionnaire" not in data:
            raise PolicyError(
                'questionnaire is required: the canonical "url|version"', "questionnaire"
            )
        delay = data.get("delay_minutes")
        if "max_send_delay_hours" not in data and isinstance(delay, int) and delay >= 24 * 60:
            # Stored before the setting existed, or left out of a file, with a day's delay:
            # the default would make every session stale, so allow an hour past the delay.
            data = {**data, "max_send_delay_hours": delay // 60 + 1}
        return cls(**data)


@dataclass(frozen=True)
class Decision:
    """Whether one session gets a questionnaire, why, and when it is due."""

    ask: bool
    reason: str  # "first_sessions" | "every_kth" | "not_scheduled" | "min_gap" | "stale"
    due_at: datetime | None  # aware UTC when ask


def zone(name: str) -> ZoneInfo:
    """Return the IANA zone called name; ValueError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def scheduled_reason(policy: Policy, session_number: int) -> str:
    """Return why the policy asks after this session, or "not_scheduled"."""
    if session_number < 1:
        raise ValueError(f"session numbers start at 1, not {session_number}")
    if session_number <= policy.first_sessions:
        return "first_sessions"
    if policy.then_every and (session_number - policy.first_sessions) % policy.then_every == 0:
        return "every_kth"
    return "not_scheduled"


def decide(
    policy: Policy,
    *,
    session_number: int,
    ended_at: datetime,
    timezone: str,
    previous_due_at: datetime | None,
    now: datetime | None = None,
) -> Decision:
    """Decide whether this client's session_number-th session is asked, and when.

    Given `now` (the planning job's), a session whose send deadline has passed is "stale".
    """
    _aware("ended_at", ended_at)
    reason = scheduled_reason(policy, session_number)
    if reason == "not_scheduled":
        return Decision(ask=False, reason=reason, due_at=None)
    due_at = send_time(policy, ended_at, timezone)
    if now is not None:
        _aware("now", now)
        if now > send_deadline(policy, due_at):
            return Decision(ask=False, reason="stale", due_at=None)
    if previous_due_at is not None:
        _aware("previous_due_at", previous_due_at)
        # Both ways: a session that arrives late must not land just before one already planned.
        if abs(due_at - previous_due_at) < timedelta(days=policy.min_gap_days):
            return Decision(ask=False, reason="min_gap", due_at=None)
    return Decision(ask=True, reason=reason, due_at=due_at)


def send_time(policy: Policy, ended_at: datetime, timezone: str) -> datetime:
    """Return when to send: ended_at plus the delay, moved out of the client's quiet hours."""
    _aware("ended_at", ended_at)
    return outside_quiet_hours(policy, ended_at + timedelta(minutes=policy.delay_minutes), timezone)


def send_deadline(policy: Policy, due_at: datetime) -> datetime:
    """Return the last moment an invitation due at `due_at` may still go out.

    max_send_delay_hours counts from the session's end: a send planned at the end plus the
    delay may be late by the rest of it. A wait for quiet hours is on time, not late, so a
    session ending at 20:55 may still go out a day after its 08:00 send, not only until 20:55.
    """
    _aware("due_at", due_at)
    return due_at + timedelta(hours=policy.max_send_delay_hours, minutes=-policy.delay_minutes)


def _quiet(policy: Policy, wall: time) -> bool:
    start, end = policy.quiet_start, policy.quiet_end
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end  # the window crosses midnight


def _first_instant_at(day: date, wall: time, tz: ZoneInfo, after: datetime) -> datetime:
    """Return the first instant after `after` at which the clock in tz reads `wall` on day."""
    local = datetime.combine(day, wall, tzinfo=tz)
    earlier, later = (local.replace(fold=0).astimezone(UTC), local.replace(fold=1).astimezone(UTC))
    if earlier.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        # It exists, perhaps twice (clocks going back): the first occurrence still to come.
        earlier, later = min(earlier, later), max(earlier, later)
        return earlier if earlier > after else later
    # Clocks jumped over it (going forward): quiet hours ended at the jump itself, the first
    # instant whose wall time is past `wall`. fold=1 lands before the jump, fold=0 after it.
    low, high = min(earlier, later), max(earlier, later)
    before_offset = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == before_offset:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def outside_quiet_hours(policy: Policy, moment: datetime, timezone: str) -> datetime:
    """Return moment if outside quiet hours, else the next quiet_end in the client's zone (UTC)."""
    _aware("moment", moment)
    tz = zone(timezone)
    moment = moment.astimezone(UTC)
    if policy.quiet_start == policy.quiet_end:
        return moment
    local = moment.astimezone(tz)
    if not _quiet(policy, local.time()):
        return moment
    day = local.date()
    if policy.quiet_start > policy.quiet_end and local.time() >= policy.quiet_start:
        day += timedelta(days=1)  # evening side of a window that ends tomorrow morning
    return _first_instant_at(day, policy.quiet_end, tz, moment)


def reminder_time(
    policy: Policy, sent_at: datetime, expires_at: datetime, timezone: str
) -> datetime | None:
    """Return when to remind, out of quiet hours; None if no reminder or too close to expiry."""
    _aware("sent_at", sent_at)
    _aware("expires_at", expires_at)
    if not policy.reminder_after_hours:
        return None
    at = outside_quiet_hours(
        policy, sent_at + timedelta(hours=policy.reminder_after_hours), timezone
    )
    return at if at <= expires_at - REMINDER_MARGIN else None


@dataclass(frozen=True)
class PreviewRow:
    """One made-up session of a preview, and what the policy does with it."""

    session_number: int
    ended_at: datetime  # aware UTC
    decision: Decision
    reminder_at: datetime | None


def preview(
    policy: Policy,
    *,
    first_session: datetime,
    timezone: str,
    sessions: int = 20,
    every: timedelta = timedelta(weeks=1),
) -> Iterator[PreviewRow]:
    """Yield what the policy does for a client whose sessions end at the same local time."""
    _aware("first_session", first_session)
    tz = zone(timezone)
    # Same wall-clock time each week, as a client's standing appointment is, across DST.
    first_local = first_session.astimezone(tz).replace(tzinfo=None)
    previous = None
    for number in range(1, sessions + 1):
        wall = first_local + every * (number - 1)
        ended_at = wall.replace(tzinfo=tz).astimezone(UTC)
        decision = decide(
            policy,
            session_number=number,
            ended_at=ended_at,
            timezone=timezone,
            previous_due_at=previous,
        )
        reminder_at = None
        if decision.ask:
            previous = decision.due_at
            expires_at = decision.due_at + timedelta(hours=policy.expires_after_hours)
            reminder_at = reminder_time(policy, decision.due_at, expires_at, timezone)
        yield PreviewRow(number, ended_at, decision, reminder_at)
