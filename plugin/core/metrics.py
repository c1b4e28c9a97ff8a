"""`GET /metrics` for Prometheus: counters of what happened, and the queues read at scrape time.

Two kinds of figure, gathered two ways so that every process of an instance tells the same story:

- **Counters** (webhooks by platform and result, EHR write outcomes) count events in the process
  where they happen: a web process counts webhooks, a worker counts EHR writes. Under gunicorn
  with several processes, and with a separate worker, set the environment variable
  `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's own switch, read when it is imported) to an
  empty directory the instance's processes share: each then writes its counts there and any web
  process sums them all, those of processes that have since died included. Without it the
  counts are this process's own, which is right for `alliance-check serve` (one process).
- **Gauges** (queue depth and the lag of the oldest due row, per queue) are read from the
  database when scraped. The database is the queue, so any process answers the same, and no
  process has to be alive for its backlog to show.

No label carries an id of a practice, client, session or webhook, or anything a caller chooses:
platform names come from the adapters, results and outcomes from fixed sets, so the number of
series is bounded whatever arrives.
"""

import hmac
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from plugin.core.db import database
from plugin.core.errors import problem
from plugin.core.models import (
    EhrWrite,
    Invitation,
    InvitationStatus,
    SessionEvent,
    SessionStatus,
    WriteStatus,
)
from webhooks import ADAPTERS
from webhooks.errors import SIGNATURE_REASONS

bp = Blueprint("metrics", __name__)

# Counters live outside any registry: a scrape builds its own (below), from this process's
# counters or, in multiprocess mode, from every process's files.
WEBHOOKS = Counter(
    "alliance_webhooks",
    "Webhook deliveries by platform and result (stored, duplicate, bad_signature, ...)",
    ["platform", "result"],
    registry=None,
)
EHR_WRITES = Counter(
    "alliance_ehr_writes",
    "EHR write attempts by outcome: written, retry (failed, tried again later), dead (given up)",
    ["outcome"],
    registry=None,
)
COUNTERS = (WEBHOOKS, EHR_WRITES)

# What a webhook delivery came to; the signature's reasons are added from webhooks.errors.
WEBHOOK_RESULTS = (
    # plugin.intake.events.Outcome's values for a session-ended event.
    "stored",
    "duplicate",
    "unknown_account",
    "ignored",
    "url_validation",
    "uninstalled",
    "invalid_payload",
    "too_large",
)
EHR_OUTCOMES = ("written", "retry", "dead")
# The platform label of a delivery to a platform we do not serve: the URL's own segment is
# chosen by the caller, so it never becomes a label.
UNKNOWN_PLATFORM = "unknown"

# Each queue a job drains: the model, the status its due rows are in, and the column saying
# when they are due (a claimed row's lease pushes it into the future, so in-flight rows are
# not counted as waiting).
QUEUES = {
    "planning": (SessionEvent, SessionStatus.PENDING, "next_attempt_at"),
    "invitations": (Invitation, InvitationStatus.PENDING, "next_attempt_at"),
    "reminders": (Invitation, InvitationStatus.SENT, "reminder_due_at"),
    "ehr_writes": (EhrWrite, WriteStatus.PENDING, "next_attempt_at"),
}


def count_webhook(platform: str, result: str) -> None:
    """Count one webhook delivery; `platform` must be a served one or UNKNOWN_PLATFORM."""
    WEBHOOKS.labels(platform=platform, result=result).inc()


def count_ehr_write(outcome: str) -> None:
    """Count one EHR write attempt by its outcome (one of EHR_OUTCOMES)."""
    EHR_WRITES.labels(outcome=outcome).inc()


class QueueCollector(Collector):
    """Read each queue's depth and the lag of its oldest due row from the database."""

    def __init__(self, sessions: Callable[[], Session], now: datetime) -> None:
        self.sessions = sessions
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the depth and lag gauges, one series per queue."""
        depth = GaugeMetricFamily(
            "alliance_queue_depth", "Rows due now and not claimed, per queue", labels=["queue"]
        )
        lag = GaugeMetricFamily(
            "alliance_queue_lag_seconds",
            "How long the oldest due, unclaimed row has been due, per queue (0 when none)",
            labels=["queue"],
        )
        with self.sessions() as session:
            for name, (model, status, due) in QUEUES.items():
                column = getattr(model, due)
                count, oldest = session.execute(
                    select(func.count(), func.min(column)).where(
                        model.status == status, column <= self.now
                    )
                ).one()
                depth.add_metric([name], count)
                waited = (self.now - _utc(oldest)).total_seconds() if oldest else 0.0
                lag.add_metric([name], max(waited, 0.0))
        yield depth
        yield lag


def _utc(moment: datetime) -> datetime:
    # An aggregate skips the column's type, so SQLite hands back a naive (UTC) value.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def scrape(sessions: Callable[[], Session], now: datetime) -> bytes:
    """Return the exposition text: counters (every process's, in multiprocess mode) and queues."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        for counter in COUNTERS:
            registry.register(counter)
    registry.register(QueueCollector(sessions, now))
    return generate_latest(registry)


def _authorised() -> bool:
    """Whether the request carries the configured bearer token (compared in constant time)."""
    expected = current_app.config["METRICS_TOKEN"]
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        offered.strip().encode(), expected.encode()
    )


@bp.get("/metrics")
def metrics() -> Response:
    """Answer a Prometheus scrape that carries METRICS_TOKEN; 404 while no token is set."""
    if not current_app.config["METRICS_TOKEN"]:
        # Off: the figures say how busy an instance is, so nobody reads them by default.
        return problem(404, "Not Found")
    if not _authorised():
        response = problem(401, "Unauthorized", "A valid bearer token is required.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics", error="invalid_token"'
        return response
    # Reads only: on SQLite a scrape takes no write lock, so it never holds a webhook up.
    body = scrape(database().readonly, datetime.now(UTC))
    return Response(body, mimetype=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def _precreate(platforms) -> None:
    """Create every series at zero, so a rate() has a start before the first event."""
    for platform in platforms:
        for result in (*WEBHOOK_RESULTS, *sorted(SIGNATURE_REASONS)):
            WEBHOOKS.labels(platform=platform, result=result)
    WEBHOOKS.labels(platform=UNKNOWN_PLATFORM, result="unknown_platform")
    for outcome in EHR_OUTCOMES:
        EHR_WRITES.labels(outcome=outcome)


def init_app(app: Flask) -> None:
    """Register GET /metrics and start every known series at zero."""
    _precreate(ADAPTERS)
    app.register_blueprint(bp)
