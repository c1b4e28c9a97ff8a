"""Use a table as a work queue: claim due rows one at a time, retry with doubling waits."""

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

# Longer than any one delivery or EHR write can take (their timeouts are seconds).
LEASE = timedelta(minutes=5)


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
    """Process up to `limit` due rows one at a time; return how many succeeded.

    Each row is claimed in a short transaction that leases it (pushes next_attempt_at past
    LEASE), so no lock is held while `process` talks to a mail server or an EHR. `process`
    records the outcome on the row, which is committed afterwards. A crash in between leaves
    the lease to run out and the row to be processed again: at least once, never lost.
    """
    succeeded = 0
    for _ in range(limit):
        with sessions() as session:
            with session.begin():
                row = claim_due(session, model, now)
                if row is None:
                    break
                row.next_attempt_at = now + LEASE
            succeeded += process(row)
            session.commit()
    return succeeded
