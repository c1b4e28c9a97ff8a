"""Practice-level weekly counts for the console's overview (and the admin API).

Practice-level only, by design: no figure is ever broken down by therapist or client.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.models import Invitation, InvitationStatus, OptOut, SessionEvent
from plugin.planning.policy import zone

WEEKS = 12
SERIES = ("sessions", "sent", "answered", "expired", "opted_out")


@dataclass(frozen=True)
class Week:
    """One week's counts; `start` is the Monday it begins on, in the practice's time zone."""

    start: date
    sessions: int = 0
    sent: int = 0
    answered: int = 0
    expired: int = 0
    opted_out: int = 0
    # Of the invitations sent this week, how many were answered (at any time since).
    answered_of_sent: int = 0

    @property
    def response_rate(self) -> float | None:
        """Return answered / sent for invitations sent this week, or None if none were sent."""
        return self.answered_of_sent / self.sent if self.sent else None


@dataclass(frozen=True)
class Stats:
    """The weeks, oldest first, and the response rate over all of them."""

    weeks: list[Week]
    timezone: str

    def total(self, series: str) -> int:
        """Return one series' sum over the weeks."""
        return sum(getattr(week, series) for week in self.weeks)

    @property
    def response_rate(self) -> float | None:
        """Return answered / sent over all the weeks, or None if nothing was sent."""
        sent = self.total("sent")
        return self.total("answered_of_sent") / sent if sent else None


def week_starts(now: datetime, timezone: str, weeks: int = WEEKS) -> list[datetime]:
    """Return the UTC instants each of the last `weeks` local Mondays began, oldest first."""
    tz = zone(timezone)
    today = now.astimezone(tz).date()
    monday = today - timedelta(days=today.weekday())
    days = [monday - timedelta(weeks=n) for n in range(weeks - 1, -1, -1)]
    return [datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC) for day in days]


def weekly_counts(
    session: Session, practice_id: str, now: datetime, timezone: str, weeks: int = WEEKS
) -> Stats:
    """Count one practice's sessions, invitations and opt-outs per local week, up to now."""
    starts = week_starts(now, timezone, weeks)
    since = starts[0]
    counts = [dict.fromkeys((*SERIES, "answered_of_sent"), 0) for _ in starts]

    def bucket(moment: datetime | None) -> int | None:
        if moment is None or not since <= moment <= now:
            return None
        return max(i for i, start in enumerate(starts) if moment >= start)

    def add(series: str, moments) -> None:
        for moment in moments:
            index = bucket(moment)
            if index is not None:
                counts[index][series] += 1

    add(
        "sessions",
        session.scalars(
            select(SessionEvent.ended_at).where(
                SessionEvent.practice_id == practice_id, SessionEvent.ended_at >= since
            )
        ),
    )
    # Timestamps and states only: nothing about who was asked is read.
    rows = session.execute(
        select(
            Invitation.status, Invitation.sent_at, Invitation.answered_at, Invitation.expires_at
        ).where(
            Invitation.practice_id == practice_id,
            (Invitation.sent_at >= since)
            | (Invitation.answered_at >= since)
            | (Invitation.expires_at >= since),
        )
    ).all()
    for status, sent_at, answered_at, expires_at in rows:
        add("sent", [sent_at])
        add("answered", [answered_at])
        if status == InvitationStatus.EXPIRED:
            add("expired", [expires_at])
        if answered_at is not None:
            add("answered_of_sent", [sent_at])
    add(
        "opted_out",
        session.scalars(
            select(OptOut.created_at).where(
                OptOut.practice_id == practice_id, OptOut.created_at >= since
            )
        ),
    )
    return Stats(
        weeks=[
            Week(start=start.astimezone(zone(timezone)).date(), **c)
            for start, c in zip(starts, counts, strict=True)
        ],
        timezone=timezone,
    )
