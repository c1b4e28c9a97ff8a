"""Use a table as a work queue: claim due rows a few at a time, retry with doubling waits."""

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from time import monotonic

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

# Rows claimed per transaction: fewer claim transactions per row.
CLAIM_BATCH = 10
# How long a claimed row is hidden from other workers. After a crash, it and the rest of its
# batch are taken up again after at most this long, so it is short; a batch that takes longer
# (slow sends time out within a minute each) renews it for the rows it has not reached yet.
LEASE = timedelta(minutes=2)
# Renew once less than this is left of the lease, before the next row.
RENEW_BEFORE = LEASE / 2


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


def _renew(session: Session, model: type, rows: list, due: str, held: datetime, until: datetime):
    """Extend the lease on rows still held (`due` == held); return those we still hold."""
    if not rows:
        return rows
    column = getattr(model, due)
    table = model.__table__
    kept = set(
        session.execute(
            update(table)
            # A row whose lease ran out may have been claimed by another worker: not ours now.
            .where(table.c.id.in_([row.id for row in rows]), column == held)
            .values({column.key: until})
            .returning(table.c.id)
        ).scalars()
    )
    session.commit()
    for row in rows:
        # Keep the in-memory rows in step without marking them changed.
        set_committed_value(row, due, until)
    return [row for row in rows if row.id in kept]


def drain(
    sessions: sessionmaker,
    model: type,
    now: datetime,
    limit: int,
    process: Callable[[object], bool],
    *,
    status: str = "pending",
    due: str = "next_attempt_at",
    on_claim: Callable[[object], None] | None = None,
) -> int:
    """Process up to `limit` rows in `status` whose `due` moment passed; return how many succeeded.

    Rows are claimed a batch at a time in a short transaction that leases them (pushes `due`
    past LEASE), so no lock is held while `process` talks to a mail server or an EHR.
    `on_claim` prepares each row inside that transaction (dispatch fixes the link there, so a
    retry repeats it). `process` records each row's outcome, committed right after it. A crash
    in between leaves the lease to run out and the batch to be processed again: at least once,
    never lost, and never more than LEASE late. A slow batch renews the lease as it goes.
    """
    started = monotonic()

    def clock() -> datetime:
        # The injected `now`, moved on by the time this run has taken.
        return now + timedelta(seconds=monotonic() - started)

    succeeded = 0
    remaining = limit
    while remaining > 0:
        with sessions() as session:
            with session.begin():
                rows = claim_due(
                    session, model, now, min(CLAIM_BATCH, remaining), status=status, due=due
                )
                held = clock() + LEASE
                for row in rows:
                    setattr(row, due, held)
                    if on_claim is not None:
                        on_claim(row)
            claimed = len(rows)
            queue = list(rows)
            while queue:
                if held - clock() < RENEW_BEFORE:
                    renewed = clock() + LEASE
                    queue = _renew(session, model, queue, due, held, renewed)
                    held = renewed
                    if not queue:
                        break
                row = queue.pop(0)
                succeeded += process(row)
                session.commit()
        if claimed < min(CLAIM_BATCH, remaining):
            break
        remaining -= claimed
    return succeeded
