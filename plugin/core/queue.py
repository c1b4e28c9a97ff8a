"""Use a table as a work queue: claim due rows a few at a time, retry with doubling waits."""

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

# Rows claimed per transaction: fewer claim transactions per row, while a few slow sends
# still finish well inside the lease.
CLAIM_BATCH = 10
# Longer than a claimed batch can take to process (each send times out within a minute).
LEASE = timedelta(minutes=15)


def claim_due(
    session: Session,
    model: type,
    now: datetime,
    count: int = CLAIM_BATCH,
    *,
    status: str = "pending",
    due: str = "next_attempt_at",
) -> list:
    """Lock and return up to `count` of the oldest rows in `status` whose `due` moment passed."""
    due_at = getattr(model, due)
    # SKIP LOCKED lets several workers share the queue on PostgreSQL; on SQLite the
    # BEGIN IMMEDIATE in plugin.core.db serialises claims instead.
    return list(
        session.scalars(
            select(model)
            .where(model.status == status, due_at <= now)
            .order_by(due_at)
            .limit(count)
            .with_for_update(skip_locked=True, of=model)
        ).unique()
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
    *,
    status: str = "pending",
    due: str = "next_attempt_at",
) -> int:
    """Process up to `limit` rows in `status` whose `due` moment passed; return how many succeeded.

    Rows are claimed a batch at a time in a short transaction that leases them (pushes `due`
    past LEASE), so no lock is held while `process` talks to a mail server or an EHR.
    `process` records each row's outcome, committed right after it. A crash in between
    leaves the lease to run out and the row to be processed again: at least once, never lost.
    """
    succeeded = 0
    remaining = limit
    while remaining > 0:
        with sessions() as session:
            with session.begin():
                rows = claim_due(
                    session, model, now, min(CLAIM_BATCH, remaining), status=status, due=due
                )
                for row in rows:
                    setattr(row, due, now + LEASE)
            for row in rows:
                succeeded += process(row)
                session.commit()
        if len(rows) < min(CLAIM_BATCH, remaining):
            break
        remaining -= len(rows)
    return succeeded
