"""Scale: many practices and a month of history, then a peak; queue lag and cost per session.

    python -m bench.scale [--practices 1000 10000] [--history 100] [--peak-rate 200]
                          [--peak-seconds 60] [--postgres URL] [--database alliance_scale]

For each practice count, on PostgreSQL in a database of its own made fresh for the run:

1. Seed: the practices, each with a stored schedule (sent at once, no quiet hours, email, the
   default cadence: sessions 1-4, then every 3rd, never twice in 2 days), 20 clients, and
   `--history` sessions a month each (1,000,000 at 10,000 practices), spread over the last 30
   days: the sessions planned or skipped as the schedule would, their invitations answered or
   expired. Bulk-loaded with COPY; nothing of it is timed.
2. Peak: two gunicorn web instances and two `alliance-check worker` processes (tick 1 s,
   the file outbox as the channel) take `--peak-rate` signed webhooks a second for
   `--peak-seconds`, open loop, each a session of a random client of a random practice, so the
   schedule asks some and skips others against that client's history. /metrics is scraped
   every second during the peak and until the queues are empty (at most 3 minutes more).
3. Figures: the p95 and max of the planning and invitation queues' lag (the oldest due row's
   wait, as /metrics reports it) during the peak; the p95 from a webhook's 2xx to its
   invitation being sent; and the CPU of the web, worker and PostgreSQL processes per
   session. Goals: lag p95 <= 5 s at the peak, and the cost per session flat (within 20%)
   from the smallest practice count to the largest.
"""

import argparse
import functools
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.delivery import configure
from bench.load import FIXTURE, Delivery, Result, open_loop
from bench.server import (
    Gunicorn,
    Worker,
    children,
    cpu_seconds,
    log_to,
    postgres_cpu_seconds,
    postgres_database,
    prepare_instance,
)
from bench.soak import DEFAULT_SERVER
from plugin.core.db import make_engine
from plugin.planning.policy import Policy
from plugin.planning.schedules import default_questionnaire
from tests.support.metrics import bearer, parse, value
from webhooks.standard import sign

DEFAULT_DATABASE = "alliance_scale"
CLIENTS_PER_PRACTICE = 20
DRAIN_SECONDS = 180
LAG_GOAL_SECONDS = 5.0
FLAT_WITHIN = 0.2
METRICS_TOKEN = uuid.uuid4().hex
# The mix of a finished month's invitations.
ANSWERED_SHARE = 0.6


def _policy_settings() -> str:
    """Return the schedule every seeded practice stores: at once, any hour, by email."""
    policy = Policy(
        questionnaire=default_questionnaire(),
        delay_minutes=0,
        quiet_start=datetime.min.time(),
        quiet_end=datetime.min.time(),
        channels=("email",),
    )
    return json.dumps(policy.to_dict())


def _asked(number: int) -> bool:
    """Whether the default cadence asks after a client's session `number` (1-based)."""
    return number <= 4 or (number - 4) % 3 == 0


def _history(ids, accounts, per_client: int, now: datetime, questionnaire: str, seed: int):
    """Yield (session event row, invitation row or None) for a month of every client's sessions.

    The same seed yields the same rows, ids included.
    """
    rng = random.Random(seed)
    for practice_id, account in zip(ids, accounts, strict=True):
        for client in range(CLIENTS_PER_PRACTICE):
            patient = f"Patient/{account}-{client}"
            for number in range(1, per_client + 1):
                # Spread evenly over the month, the latest most recent, with some jitter.
                ended = now - timedelta(days=30 * (per_client - number + rng.random()) / per_client)
                event_id = str(uuid.UUID(int=rng.getrandbits(128)))
                asked = _asked(number)
                event = (
                    event_id, practice_id, "standard", event_id, event_id,
                    ended - timedelta(minutes=50), ended, patient,
                    "planned" if asked else "skipped", ended, 0, ended, number,
                )  # fmt: skip
                invitation = None
                if asked:
                    status = "answered" if rng.random() < ANSWERED_SHARE else "expired"
                    invitation = (
                        str(uuid.UUID(int=rng.getrandbits(128))), practice_id, event_id, status,
                        questionnaire, patient, "en", '["email"]', 0, ended, ended, 0, ended,
                        ended,
                    )  # fmt: skip
                yield event, invitation


def seed(dsn: str, practices: int, history: int, rng: random.Random) -> list[str]:
    """COPY the practices, their schedules and a month of sessions in; return account ids."""
    now = datetime.now(UTC)
    settings = _policy_settings()
    questionnaire = default_questionnaire()
    accounts = [f"scale-{n:05d}" for n in range(practices)]
    per_client = max(1, history // CLIENTS_PER_PRACTICE)
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        ids = [str(uuid.uuid4()) for _ in accounts]
        with cursor.copy(
            "COPY practices (id, platform, account_id, name, timezone, ehr_target, status,"
            " created_at) FROM STDIN"
        ) as copy:
            for practice_id, account in zip(ids, accounts, strict=True):
                created = now - timedelta(days=60)
                copy.write_row(
                    (practice_id, "standard", account, account, "America/New_York",
                     "ndjson:ehr", "active", created)
                )  # fmt: skip
        with cursor.copy(
            "COPY schedule_policies (id, practice_id, practitioner_ref, version, settings,"
            " created_at) FROM STDIN"
        ) as copy:
            for practice_id in ids:
                copy.write_row((str(uuid.uuid4()), practice_id, "", 1, settings, now))
        history_of = functools.partial(
            _history, ids, accounts, per_client, now, questionnaire, rng.getrandbits(32)
        )
        # Two passes over the same seeded history, so a million rows are never held at once.
        with cursor.copy(
            "COPY session_events (id, practice_id, platform, event_id, session_id, started_at,"
            " ended_at, patient_ref, status, next_attempt_at, attempts, received_at,"
            " session_number) FROM STDIN"
        ) as copy:
            for event, _ in history_of():
                copy.write_row(event)
        with cursor.copy(
            "COPY invitations (id, practice_id, session_event_id, status, questionnaire,"
            " patient_ref, language, channels, channel_index, due_at, next_attempt_at,"
            " attempts, created_at, sent_at) FROM STDIN"
        ) as copy:
            for _, invitation in history_of():
                if invitation is not None:
                    copy.write_row(invitation)
        conn.commit()
    # As a month-old table would be: hint bits set, visibility map and statistics current.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return accounts


class PeakPool:
    """Webhooks for random clients of random practices, each signed as it is taken.

    A session ends the moment its webhook goes out, as at a real peak, so its invitation is due
    then and the queues' lag measures the system, not how long ago the run was prepared.
    Signing costs microseconds, well inside the open loop's schedule.
    """

    def __init__(self, secret: str, accounts: list[str], count: int, seed: int) -> None:
        """Prepare the template; nothing is signed yet."""
        self.secret, self.accounts, self.count = secret, accounts, count
        self.document = json.loads(FIXTURE.read_text())
        self.rng = random.Random(seed)
        self.used = 0
        self.lock = threading.Lock()

    def take(self) -> Delivery | None:
        """Return the next delivery, signed now, or None when `count` were taken."""
        with self.lock:
            if self.used >= self.count:
                return None
            i, self.used = self.used, self.used + 1
            account = self.rng.choice(self.accounts)
            client = self.rng.randrange(CLIENTS_PER_PRACTICE)
            now = datetime.now(UTC)
            data = self.document["data"]
            data["started_at"] = (now - timedelta(minutes=50)).isoformat()
            data["ended_at"] = now.isoformat()
            data["account_id"] = account
            data["session_id"] = f"peak-{i:06d}"
            data["client"].update(
                reference=f"Patient/{account}-{client}", email=f"{account}-{client}@example.org"
            )
            body = json.dumps(self.document, separators=(",", ":")).encode()
        headers = sign(self.secret, f"msg_peak_{i:06d}", now, body)
        headers["Content-Type"] = "application/json"
        return Delivery(body, headers)


class Sampler:
    """Scrape /metrics every second in a thread; keep each queue's lag and depth."""

    def __init__(self, base_url: str) -> None:
        """Start with no samples."""
        self.base_url = base_url
        self.samples: list[tuple[float, dict]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        """Scrape until told to stop."""
        while not self.stop.wait(1.0):
            try:
                response = requests.get(
                    f"{self.base_url}/metrics", headers=bearer(METRICS_TOKEN), timeout=5
                )
            except requests.RequestException:
                continue
            self.samples.append((time.monotonic(), parse(response.text)))

    def lags(self, queue: str, since: float, until: float) -> list[float]:
        """Return the queue's lag samples taken between two moments."""
        return [
            value(samples, "alliance_queue_lag_seconds", queue=queue)
            for at, samples in self.samples
            if since <= at <= until
        ]


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (nearest rank); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, round(q / 100 * len(ordered)))) - 1]


@dataclass
class Run:
    """What one practice count measured."""

    practices: int
    history: int
    seed_seconds: float
    result: Result
    planning_p95: float
    planning_max: float
    invitations_p95: float
    invitations_max: float
    sent_p95: float
    sessions: int  # planned (asked or skipped) by the end
    invited: int
    drained_seconds: float
    cpu_ms: float


def sent_latency(engine, since: datetime) -> tuple[list[float], int, int]:
    """Return (seconds from receipt to send per invitation, sessions planned, invitations) of
    the sessions received since then."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT EXTRACT(EPOCH FROM i.sent_at - e.received_at) FROM invitations i"
                " JOIN session_events e ON e.id = i.session_event_id"
                " WHERE e.received_at >= :since AND i.sent_at IS NOT NULL"
            ),
            {"since": since},
        ).scalars()
        latencies = [float(v) for v in rows]
        sessions = connection.scalar(
            text(
                "SELECT count(*) FROM session_events WHERE received_at >= :since"
                " AND status != 'pending'"
            ),
            {"since": since},
        )
        invited = connection.scalar(
            text(
                "SELECT count(*) FROM invitations i JOIN session_events e"
                " ON e.id = i.session_event_id WHERE e.received_at >= :since"
            ),
            {"since": since},
        )
    return latencies, sessions, invited


def pending(engine) -> int:
    """Return the rows still waiting in the planning and invitation queues."""
    with engine.connect() as connection:
        return connection.scalar(
            text(
                "SELECT (SELECT count(*) FROM session_events WHERE status = 'pending')"
                " + (SELECT count(*) FROM invitations WHERE status = 'pending')"
            )
        )


def run_one(practices: int, args, tmp: Path) -> Run:
    """Seed, run the peak on 2 web + 2 workers, and measure."""
    rng = random.Random(practices)
    with postgres_database(args.postgres, args.database) as url:
        instance = prepare_instance(tmp / f"p{practices}", url, "demo")
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        print(f"  {practices} practices: seeding {practices * args.history:,} sessions ...")
        began = time.monotonic()
        accounts = seed(dsn, practices, args.history, rng)
        seed_seconds = time.monotonic() - began
        print(f"  {practices} practices: seeded in {seed_seconds:.0f} s; the peak ...", flush=True)
        configure(
            instance,
            SCHEDULER_TICK_SECONDS=1,
            SMTP_URL="",
            OUTBOX_DIR=str(instance.path / "outbox"),
            METRICS_TOKEN=METRICS_TOKEN,
        )
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / f"metrics-{practices}")
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
        count = int(args.peak_rate * args.peak_seconds)
        # One half to each web instance, as a load balancer would share them.
        halves = [
            PeakPool(instance.webhook_secret, accounts, count // 2, seed=practices + n)
            for n in (0, 1)
        ]
        servers = [Gunicorn(instance, workers=1, threads=8) for _ in range(2)]
        workers = [Worker(instance, f"worker-{n}") for n in (1, 2)]
        engine = make_engine(url)
        try:
            for server in servers:
                server.start()
            for worker in workers:
                worker.start()
            time.sleep(3)  # the workers' first ticks: imports, connections
            pids = [p for s in servers for p in (s.process.pid, *children(s.process.pid))]
            pids += [w.process.pid for w in workers]
            sampler = Sampler(servers[0].base_url)
            threading.Thread(target=sampler.run, daemon=True).start()
            cpu_before, pg_before = cpu_seconds(pids), postgres_cpu_seconds(args.database)
            since = datetime.now(UTC)
            peak_began = time.monotonic()
            results: list[Result] = [Result(), Result()]

            def send(n: int) -> None:
                results[n] = open_loop(
                    servers[n].port, "/webhooks/standard", halves[n], args.peak_rate / 2,
                    args.peak_seconds, senders=24,
                )  # fmt: skip

            senders = [threading.Thread(target=send, args=(n,)) for n in (0, 1)]
            for thread in senders:
                thread.start()
            for thread in senders:
                thread.join()
            peak_ended = time.monotonic()
            deadline = peak_ended + DRAIN_SECONDS
            while pending(engine) and time.monotonic() < deadline:
                time.sleep(1)
            drained = time.monotonic() - peak_ended
            cpu = (cpu_seconds(pids) or 0) - (cpu_before or 0)
            cpu += postgres_cpu_seconds(args.database) - pg_before
            sampler.stop.set()
            latencies, sessions, invited = sent_latency(engine, since)
        finally:
            for worker in workers:
                worker.stop()
            for server in servers:
                server.stop()
            engine.dispose()
    result = Result(
        sent=sum(r.sent for r in results),
        ok=sum(r.ok for r in results),
        elapsed=max(r.elapsed for r in results),
        latencies=[x for r in results for x in r.latencies],
    )
    planning = sampler.lags("planning", peak_began, peak_ended)
    invitations = sampler.lags("invitations", peak_began, peak_ended)
    return Run(
        practices=practices,
        history=args.history,
        seed_seconds=seed_seconds,
        result=result,
        planning_p95=percentile(planning, 95),
        planning_max=max(planning, default=float("nan")),
        invitations_p95=percentile(invitations, 95),
        invitations_max=max(invitations, default=float("nan")),
        sent_p95=percentile(latencies, 95),
        sessions=sessions,
        invited=invited,
        drained_seconds=drained,
        cpu_ms=cpu / max(sessions, 1) * 1e3,
    )


def report(runs: list[Run], args) -> list[str]:
    """Format the table and the goals."""
    lines = [
        f"peak: {args.peak_rate:g} webhooks/s for {args.peak_seconds:g} s on 2 web + 2 workers",
        f"{'practices':>9} {'history':>9} {'2xx':>6} {'ack p99 ms':>10} {'plan lag p95/max s':>18}"
        f" {'inv lag p95/max s':>17} {'2xx->sent p95 s':>15} {'planned':>7} {'invited':>7}"
        f" {'drain s':>7}"
        f" {'CPU ms/session':>14}",
    ]
    for run in runs:
        lines.append(
            f"{run.practices:>9} {run.practices * run.history:>9,} {run.result.ok:>6} "
            f"{run.result.percentile(99) * 1e3:>10.1f} "
            f"{run.planning_p95:>8.1f} / {run.planning_max:>6.1f}  "
            f"{run.invitations_p95:>7.1f} / {run.invitations_max:>6.1f} "
            f"{run.sent_p95:>15.1f} {run.sessions:>7} {run.invited:>7} {run.drained_seconds:>7.0f} "
            f"{run.cpu_ms:>14.1f}"
        )
    lag = max(max(r.planning_p95, r.invitations_p95) for r in runs)
    lines.append("")
    lines.append(
        f"goal queue lag p95 <= {LAG_GOAL_SECONDS:g} s at the peak: "
        f"{'met' if lag <= LAG_GOAL_SECONDS else 'NOT MET'} (worst p95 {lag:.1f} s)"
    )
    if len(runs) > 1:
        ratio = runs[-1].cpu_ms / runs[0].cpu_ms
        flat = abs(ratio - 1) <= FLAT_WITHIN
        lines.append(
            f"goal cost per session flat from {runs[0].practices} to {runs[-1].practices} "
            f"practices: {'met' if flat else 'NOT MET'} (ratio {ratio:.2f}, within "
            f"{FLAT_WITHIN:.0%})"
        )
    lines += [
        "",
        "lag     alliance_queue_lag_seconds from /metrics, sampled every second of the peak",
        "planned sessions of the peak planned (asked or skipped) once the queues drained, or "
        f"after {DRAIN_SECONDS} s",
        "CPU     web + worker processes and the PostgreSQL backends serving this database, per "
        "planned session",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run each practice count and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--practices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--history", type=int, default=100, help="sessions a practice a month")
    parser.add_argument("--peak-rate", type=float, default=200.0)
    parser.add_argument("--peak-seconds", type=float, default=60.0)
    parser.add_argument(
        "--postgres", default=os.environ.get("ALLIANCE_TEST_DATABASE_URL", DEFAULT_SERVER)
    )
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    args = parser.parse_args(argv)
    if args.database in ("test", "postgres", make_url(args.postgres).database):
        parser.error(f"refusing to recreate the database {args.database!r}; pick another")
    print(f"Alliance Check scale: {args.practices} practices, {args.history} sessions each")
    runs = []
    with tempfile.TemporaryDirectory(prefix="alliance-scale-") as tmp, log_to(Path(tmp)):
        for practices in sorted(args.practices):
            runs.append(run_one(practices, args, Path(tmp)))
    print()
    for line in report(runs, args):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
