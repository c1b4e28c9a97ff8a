"""The job that drains EhrWrite rows into each practice's EHR. Safe to rerun."""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import sessionmaker

from fhir_mappings.instrument import load_bundled
from fhir_mappings.model import Instrument
from plugin.core.crypto import Vault
from plugin.core.metrics import count_ehr_write
from plugin.core.models import EhrWrite, Practice, WriteStatus
from plugin.core.queue import drain, retry_at
from plugin.ehr.errors import FhirError
from plugin.ehr.flagging import with_flag
from plugin.ehr.writers import EhrWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteSettings:
    """What the EHR write job needs from config."""

    give_up: timedelta
    retry: timedelta
    max_delay: timedelta
    batch: int

    @classmethod
    def from_config(cls, config: dict) -> "WriteSettings":
        """Read the settings from a Flask config."""
        return cls(
            give_up=timedelta(hours=config["EHR_WRITE_GIVE_UP_HOURS"]),
            retry=timedelta(seconds=config["EHR_WRITE_RETRY_SECONDS"]),
            max_delay=timedelta(seconds=config["EHR_WRITE_MAX_DELAY_SECONDS"]),
            batch=config["BATCH_SIZE"],
        )


def _record_failure(
    write: EhrWrite, exc: FhirError, vault: Vault, settings: WriteSettings, now
) -> None:
    write.attempts += 1
    write.last_error = exc.reason
    if exc.outcome is not None:
        write.outcome = vault.seal(exc.outcome)
    if write.retry_until is None:
        write.retry_until = now + settings.give_up
    if not exc.retryable or now >= write.retry_until:
        write.status = WriteStatus.DEAD
        return
    next_attempt = retry_at(now, write.attempts, settings.retry, settings.max_delay)
    if exc.retry_after is not None:
        # The server said when it will be ready; asking sooner only adds to its load.
        next_attempt = max(next_attempt, now + timedelta(seconds=exc.retry_after))
    write.next_attempt_at = next_attempt


def _send(writer, bundle: dict, instruments) -> tuple[str, str]:
    """Write the response with its Flag if the rule asks for one; return path and flag note."""
    flagged, note = with_flag(bundle, writer, instruments)
    try:
        return writer.write(flagged), note
    except FhirError as exc:
        if flagged is bundle or exc.retryable:
            raise
        # The EHR refused the write with the Flag in it (a scope, a profile): the response
        # and its scores still go, and the write says why the therapist got no flag.
        return writer.write(bundle), f"no flag: the EHR refused it ({exc.reason})"


def _write(write: EhrWrite, writer_for, vault: Vault, settings, now, instruments) -> bool:
    try:
        path, note = _send(writer_for(write.practice), vault.open(write.bundle), instruments)
    except Exception as exc:
        # Unknown failures are retried like outages; their text may hold PHI, so only the
        # type is kept.
        if not isinstance(exc, FhirError):
            exc = FhirError(f"internal error ({type(exc).__name__})", retryable=True)
        _record_failure(write, exc, vault, settings, now)
        count_ehr_write("dead" if write.status == WriteStatus.DEAD else "retry")
        log.warning(
            "ehr_write.failed",
            extra={"ehr_write_id": write.id, "reason": exc.reason, "status": write.status},
        )
        return False
    write.status = WriteStatus.DONE
    write.path = path
    write.flag_note = note
    write.done_at = now
    count_ehr_write("written")
    # The EHR is now the record; keep no copy of the answers here.
    write.bundle = None
    # Not the flag note: whether a client's alliance dropped is for their therapist, and logs
    # travel further than the database (`ehr-writes show` gives it to the operator).
    log.info("ehr_write.done", extra={"ehr_write_id": write.id, "path": path})
    return True


def write_due(
    sessions: sessionmaker,
    vault: Vault,
    writer_for: Callable[[Practice], EhrWriter],
    settings: WriteSettings,
    now: datetime,
    instruments: Mapping[str, Instrument] | None = None,
) -> int:
    """Send every due write to its own practice's EHR, flagged by the rule; return how many.

    `instruments` (canonical -> Instrument) are those responses may come from; the bundled
    one when not given.
    """
    if instruments is None:
        bundled = load_bundled()
        instruments = {bundled.canonical: bundled}
    return drain(
        sessions,
        EhrWrite,
        now,
        settings.batch,
        lambda write: _write(write, writer_for, vault, settings, now, instruments),
    )
