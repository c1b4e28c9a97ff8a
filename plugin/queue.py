"""Use a table as a work queue: claim due rows one at a time, retry with doubling waits."""

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker


def claim_due(session: Session, model: type, now: datetime):
    """Lock and return the oldest pending row that is due, or None."""
    # SKIP LOCKED lets several workers share the queue on PostgreSQL; on SQLite the
    # BEGIN IMMEDIATE in plugin.db serialises claims instead.
    return session.scalar(
        select(model)
        .where(model.status == "pending", model.next_attempt_at <= now)
        .order_by(model.next_attempt_at)
        .limit(1)
        .with_for_update(skip_locked=True, of=model)
    )


def retry_at(
    now: datetime, attempts: int, base: timedelta, cap: timedelta | None = None
) -> datetime:
    """Return when to try again after `attempts` failures: base, 2*base, 4*base, ... (capped),
    each up to a quarter later at random so rows that failed together spread out."""
    delay = base * 2 ** (attempts - 1)
    if cap is not None:
        delay = min(delay, cap)
    return now + delay * (1 + random.random() / 4)  # noqa: S311 (jitter, not a secret)


def drain(
    sessions: sessionmaker,
    model: type,
    now: datetime,
    limit: int,
    process: Callable[[object], bool],
) -> int:
    """Process up to `limit` due rows, each in its own transaction; return how many succeeded.

    The row stays locked while `process` runs, so a crash before commit leaves it pending
    for the next run: work is done at least once and never lost.
    """
    succeeded = 0
    for _ in range(limit):
        with sessions() as session, session.begin():
            row = claim_due(session, model, now)
            if row is None:
                break
            succeeded += process(row)
    return succeeded
