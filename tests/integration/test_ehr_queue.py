"""EhrWrite rows reach the EHR sink exactly once, survive failures, and leave no answers behind."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from plugin.core.models import EhrWrite
from plugin.ehr.drain import WriteSettings, write_due
from plugin.ehr.errors import EhrTargetError, FhirError
from plugin.ehr.writers import NdjsonSink, sink_for
from tests.support.backlog import FULL
from tests.support.survey import csrf


def drain(app, writer=None, now=None) -> int:
    """Run the EHR write job once."""
    root = Path(app.instance_path).parent
    return write_due(
        app.extensions["db"].sessions,
        app.extensions["vault"],
        lambda practice: writer or sink_for(practice.ehr_target, root),
        WriteSettings.from_config(app.config),
        now or datetime.now(UTC),
    )


@pytest.fixture
def queued(client, link, db):
    """Answer the questionnaire and return the queued EhrWrite."""
    path, _ = link
    client.post(path, data={"csrf_token": csrf(client, path), **FULL})
    return db.scalar(select(EhrWrite))


def lines(app, resource_type: str) -> list[dict]:
    """Read what the sink holds for a resource type."""
    path = Path(app.instance_path) / "ehr" / f"{resource_type}.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_write_lands_once_and_the_copy_here_is_purged(app, queued, db):
    assert drain(app) == 1
    assert drain(app) == 0
    assert len(lines(app, "QuestionnaireResponse")) == 1
    assert len(lines(app, "Observation")) == 4
    db.refresh(queued)
    assert (queued.status, queued.bundle) == ("done", None)


def test_sink_is_a_conditional_create_so_a_resend_after_a_crash_duplicates_nothing(app, queued):
    bundle = app.extensions["vault"].open(queued.bundle)
    sink = NdjsonSink(Path(app.instance_path) / "ehr")
    sink.write(bundle)
    sink.write(bundle)  # as if the worker died after writing, before committing
    drain(app)
    assert len(lines(app, "QuestionnaireResponse")) == 1
    assert len(lines(app, "Observation")) == 4


class Failing:
    """A writer that fails the way an EHR does, to drive the retry path."""

    def __init__(self, retryable: bool):
        self.retryable = retryable

    def write(self, bundle: dict) -> str:
        """Fail."""
        raise FhirError("503 from EHR", retryable=self.retryable)

    def flags_unavailable(self) -> str:
        """Take no flags: these tests are about the write."""
        return "not under test"


def test_outage_is_retried_with_backoff_then_succeeds(app, queued, db):
    now = datetime.now(UTC)
    drain(app, Failing(retryable=True), now)
    db.refresh(queued)
    assert (queued.status, queued.attempts, queued.last_error) == ("pending", 1, "503 from EHR")
    assert now + timedelta(seconds=30) <= queued.next_attempt_at <= now + timedelta(seconds=37.5)
    assert drain(app, now=now + timedelta(seconds=10)) == 0
    assert drain(app, now=now + timedelta(seconds=38)) == 1
    assert len(lines(app, "QuestionnaireResponse")) == 1


def test_rejected_write_is_dead_lettered_at_once(app, queued, db):
    drain(app, Failing(retryable=False))
    db.refresh(queued)
    assert (queued.status, queued.attempts) == ("dead", 1)
    assert drain(app, now=datetime.now(UTC) + timedelta(days=1)) == 0


def test_unexpected_error_counts_as_an_attempt_and_blocks_nothing(app, queued, db):
    class Broken(Failing):
        def write(self, bundle):
            raise KeyError("Could we start a little later?")

    drain(app, Broken(retryable=True))
    db.refresh(queued)
    assert queued.attempts == 1
    assert queued.last_error == "internal error (KeyError)"


@pytest.mark.parametrize("target", ["https://ehr.example.org/fhir", "ndjson:", "s3://bucket"])
def test_unsupported_targets_are_refused(target, tmp_path):
    with pytest.raises(EhrTargetError):
        sink_for(target, tmp_path)


def test_each_practice_writes_to_its_own_target(app, queued, db, practice):
    # Tenant isolation at the EHR: a write goes only where its own practice points.
    practice.ehr_target = "ndjson:var/ehr-a"
    db.commit()
    drain(app)
    assert lines(app, "QuestionnaireResponse") == []
    assert (Path(app.instance_path) / "ehr-a" / "QuestionnaireResponse.ndjson").exists()
