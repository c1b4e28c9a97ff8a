"""Send dead-lettered EHR writes again, for the `ehr-writes retry` command and the console."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from plugin.core.models import EhrWrite, WriteStatus


class RequeueError(ValueError):
    """Nothing can be sent again as asked; the message says which ids and why."""


def requeue_dead(
    session: Session,
    now: datetime,
    *,
    write_ids: tuple[str, ...] | list[str] = (),
    all_dead: bool = False,
    practice_id: str | None = None,
) -> list[EhrWrite]:
    """Queue dead-lettered writes again with a fresh retry window; the caller commits.

    `practice_id` scopes it to one practice (the console); the operator's CLI passes None.
    """
    query = select(EhrWrite).where(EhrWrite.status == WriteStatus.DEAD)
    if practice_id is not None:
        query = query.where(EhrWrite.practice_id == practice_id)
    if not all_dead:
        if not write_ids:
            raise RequeueError("name write ids, or ask for all dead-lettered writes")
        query = query.where(EhrWrite.id.in_(write_ids))
    writes = session.scalars(query).unique().all()
    missing = set(write_ids) - {w.id for w in writes}
    if missing:
        raise RequeueError(f"not dead-lettered or unknown: {', '.join(sorted(missing))}")
    for write in writes:
        write.status, write.next_attempt_at = WriteStatus.PENDING, now
        write.retry_until = None
    return list(writes)
