"""The job that drains EhrWrite rows into each practice's EHR. Safe to rerun."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from plugin.crypto import Vault
from plugin.ehr_writers import EhrWriter, FhirError
from plugin.models import EhrWrite, Practice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteSettings:
    """What the EHR write job needs from config."""

    max_attempts: int
    retry: timedelta
    batch: int

    @classmethod
    def from_config(cls, config: dict) -> "WriteSettings":
        """Read the settings from a Flask config."""
        return cls(
            max_attempts=config["EHR_WRITE_MAX_ATTEMPTS"],
            retry=timedelta(seconds=config["EHR_WRITE_RETRY_SECONDS"]),
            batch=config["BATCH_SIZE"],
        )


def _claim_due(session: Session, now: datetime) -> EhrWrite | None:
    return session.scalar(
        select(EhrWrite)
        .where(EhrWrite.status == "pending", EhrWrite.next_attempt_at <= now)
        .order_by(EhrWrite.next_attempt_at)
        .limit(1)
        .with_for_update(skip_locked=True, of=EhrWrite)
    )


def _record_failure(write: EhrWrite, exc: FhirError, settings: WriteSettings, now) -> None:
    write.attempts += 1
    write.last_error = exc.reason
    if not exc.retryable or write.attempts >= settings.max_attempts:
        write.status = "dead"
    else:
        write.next_attempt_at = now + settings.retry * 2 ** (write.attempts - 1)


def write_due(
    sessions: sessionmaker,
    vault: Vault,
    writer_for: Callable[[Practice], EhrWriter],
    settings: WriteSettings,
    now: datetime,
) -> int:
    """Send every due write to its practice's EHR, one row per transaction; return the count."""
    written = 0
    for _ in range(settings.batch):
        with sessions() as session, session.begin():
            write = _claim_due(session, now)
            if write is None:
                break
            try:
                path = writer_for(write.practice).write(vault.open(write.bundle))
            except Exception as exc:
                # Unknown failures are retried like outages; their text may hold PHI, so
                # only the type is kept.
                if not isinstance(exc, FhirError):
                    exc = FhirError(f"internal error ({type(exc).__name__})", retryable=True)
                _record_failure(write, exc, settings, now)
                log.warning(
                    "ehr_write.failed",
                    extra={"ehr_write_id": write.id, "reason": exc.reason, "status": write.status},
                )
                continue
            write.status = "done"
            write.done_at = now
            # The EHR is now the record; keep no copy of the answers here.
            write.bundle = None
            written += 1
            log.info("ehr_write.done", extra={"ehr_write_id": write.id, "path": path})
    return written
