"""Delivery benchmark: webhook 2xx to SMTP, and the dispatcher's throughput on the file channel.

    python -m bench.delivery [--webhooks 200] [--rate 20] [--tick 0.5] [--invitations 2000]

For each database (SQLite always, PostgreSQL when --postgres or ALLIANCE_TEST_DATABASE_URL
names a server):

1. Latency, delay 0: signed webhooks (each a new client) go to gunicorn at a fixed rate; a
   real SMTP server (aiosmtpd, in this process) timestamps each message's DATA. Latency runs
   from the webhook's 204 to that moment, in two set-ups: a real `alliance-check worker` on
   its tick, and a process running the plan and dispatch steps back-to-back (the tick
   removed: the processing cost alone). Baseline: a bare smtplib hand-off of the same bytes
   to the same server; ratio = pipeline p50 / bare p50.
2. Throughput: N due invitations bulk-inserted, then `dispatch_due` (batch N, file channel)
   timed; baseline: a bare loop over the same number of rows that composes the same message
   and sends it on the same channel, committing each row (SELECT; per row: open the contact,
   compose and write the .eml through the channel, UPDATE, commit) but has none of the
   product's queue, checks or ORM. ratio = dispatcher rate / bare rate (1.0 = no overhead).
"""

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import sessionmaker

from bench.app import WEBHOOK_PATH
from bench.load import FIXTURE, Client, Delivery, Result, fixture_account
from bench.server import (
    ROOT,
    Gunicorn,
    Instance,
    add_database_options,
    bench_database,
    free_port,
    log_to,
    machine_busy_seconds,
    prepare_instance,
)
from plugin import create_app
from plugin.core.crypto import new_token
from plugin.core.db import make_engine
from plugin.core.models import Invitation, Practice, SessionEvent, new_id
from plugin.delivery.channels import Channel, Outgoing, channels_from_config
from plugin.delivery.dispatch import DispatchSettings, dispatch_due
from plugin.delivery.unsubscribe import unsubscribe_link
from plugin.jobs import run_steps
from plugin.planning.policy import Policy
from plugin.planning.schedules import default_questionnaire, set_policy
from tests.support.smtp import Recorder
from webhooks.standard import sign

# Webhooks sent (and delivered) before each measured run: the worker has imported
# everything and opened its connections, and neither is charged to the first client.
WARMUP_WEBHOOKS = 5
# How long to wait for the last message after the last webhook, before calling it lost.
ARRIVAL_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 15
# The worker's first tick waits for its imports, and PostgreSQL's first connections.
START_TIMEOUT_SECONDS = 60
# Rows dispatched untimed first: templates compile, statements cache, the outbox exists.
WARMUP_INVITATIONS = 20


class ArrivalRecorder(Recorder):
    """The test SMTP server's recorder, also noting when each recipient's DATA completed."""

    def __init__(self) -> None:
        """Start with nothing received."""
        super().__init__()
        self.arrived: dict[str, float] = {}
        self.deliveries: Counter[str] = Counter()
        self.content = b""

    async def handle_DATA(self, server, session, envelope):
        """Timestamp first (the message is in), then keep it."""
        at = time.perf_counter()
        for address in envelope.rcpt_tos:
            self.arrived.setdefault(address, at)
            self.deliveries[address] += 1
        self.content = envelope.content
        return await super().handle_DATA(server, session, envelope)


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[int, ArrivalRecorder]]:
    """Run aiosmtpd on a free 127.0.0.1 port in this process; yield (port, recorder)."""
    recorder = ArrivalRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, recorder
    finally:
        controller.stop()


def client_webhooks(secret: str, count: int, tag: str) -> list[tuple[str, Delivery]]:
    """Sign `count` session-ended webhooks, each for a new client: (client email, delivery).

    The session ends now, so with delay 0 the invitation is due as soon as it is planned.
    """
    document = json.loads(FIXTURE.read_text())
    data, now = document["data"], datetime.now(UTC)
    data["started_at"] = (now - timedelta(minutes=50)).isoformat()
    data["ended_at"] = now.isoformat()
    out = []
    for i in range(count):
        email = f"client-{tag}-{i:05d}@example.org"
        data["session_id"] = f"delivery-{tag}-{i:05d}"
        data["client"].update(reference=f"Patient/{tag}-{i:05d}", email=email)
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = sign(secret, f"msg_delivery_{tag}_{i:05d}", now, body)
        headers["Content-Type"] = "application/json"
        out.append((email, Delivery(body, headers)))
    return out


def send_paced(port: int, webhooks: list[tuple[str, Delivery]], rate: float) -> dict[str, float]:
    """POST the webhooks at `rate` per second on one keep-alive connection; return 204 times."""
    client = Client(port)
    acknowledged = {}
    origin = time.perf_counter()
    for i, (email, delivery) in enumerate(webhooks):
        pause = origin + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        if client.send(WEBHOOK_PATH, delivery) == 204:
            acknowledged[email] = time.perf_counter()
    client.close()
    return acknowledged


def wait_for(recorder: ArrivalRecorder, addresses, timeout: float) -> None:
    """Return once every address has received its message, or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(a not in recorder.arrived for a in addresses):
        time.sleep(0.05)


@dataclass
class Latency:
    """One row of the latency figure."""

    result: Result  # sent, received, and the 204 -> DATA latencies in seconds
    busy: float = float("nan")  # mean cores busy machine-wide meanwhile
    duplicates: int = 0  # messages beyond the first to one client


def measure_latency(
    port: int, recorder: ArrivalRecorder, instance: Instance, tag: str, args
) -> Latency:
    """Send warm-up then measured webhooks; return 204 -> DATA latencies of the measured ones."""
    secret = instance.webhook_secret
    logs = sorted(instance.path.glob("*.log"))
    warm = client_webhooks(secret, WARMUP_WEBHOOKS, f"{tag}-warm")
    send_paced(port, warm, args.rate)
    wait_for(recorder, [email for email, _ in warm], START_TIMEOUT_SECONDS)
    if any(email not in recorder.arrived for email, _ in warm):
        # The instance folder goes with the run, so show the logs' ends now.
        tails = [f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in logs]
        raise RuntimeError(f"{tag}: the warm-up messages never arrived\n" + "\n".join(tails))
    webhooks = client_webhooks(secret, args.webhooks, tag)
    acknowledged = send_paced(port, webhooks, args.rate)
    wait_for(recorder, acknowledged, ARRIVAL_TIMEOUT_SECONDS)
    settle(instance.database_url, ARRIVAL_TIMEOUT_SECONDS)
    result = Result(sent=len(webhooks))
    result.latencies = [
        recorder.arrived[email] - at
        for email, at in acknowledged.items()
        if email in recorder.arrived
    ]
    result.ok = len(result.latencies)
    # Each client must get exactly one message: a second one would be a double send.
    return Latency(result, duplicates=sum(recorder.deliveries[e] - 1 for e in acknowledged))


def settle(url: str, timeout: float) -> None:
    """Wait until no session or invitation is pending, so stopping the worker cuts no send short.

    The SMTP server has the last message before the worker commits it as sent; a stop in
    between would leave the row to be sent again after its lease, as after a crash.
    """
    engine = make_engine(url)
    pending = [
        select(func.count()).select_from(model).where(model.status == "pending")
        for model in (SessionEvent, Invitation)
    ]
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as connection:
            while any(connection.scalar(count) for count in pending):
                connection.rollback()
                if time.monotonic() > deadline:
                    raise SystemExit(f"latency: rows still pending after {timeout:g} s")
                time.sleep(0.05)
    finally:
        engine.dispose()


def bare_handoffs(port: int, recorder: ArrivalRecorder, count: int, tag: str) -> Result:
    """Hand the last pipeline message's bytes to the SMTP server; return connect -> DATA times.

    One connection per message, as the SMTP channel opens one per send.
    """
    content = recorder.content
    result = Result(sent=count)
    for i in range(count):
        address = f"bare-{tag}-{i:05d}@example.org"
        began = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail("no-reply@localhost", [address], content)
        result.latencies.append(recorder.arrived[address] - began)
    result.ok = len(result.latencies)
    return result


@contextlib.contextmanager
def background(command: list[str], instance: Instance, log_name: str) -> Iterator[None]:
    """Run a process on the instance (its settings from alliance.toml only) while the block runs."""
    with (instance.path / log_name).open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=instance.env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


def steps_loop(instance_path: str) -> None:
    """Run the plan and dispatch steps back-to-back until terminated: the tick removed."""
    app = create_app({"INSTANCE_PATH": instance_path})
    while True:
        run_steps(app, ["plan", "dispatch"], isolate=True)


def configure(instance: Instance, **settings) -> None:
    """Add settings to the instance's alliance.toml, for every process that reads it."""
    instance.settings.update(settings)
    with (instance.path / "alliance.toml").open("a") as file:
        file.writelines(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())


def send_at_once(app, practice_id: str) -> None:
    """Store the practice policy the latency figure needs: delay 0, no quiet hours, email."""
    with app.app_context(), app.extensions["db"].sessions() as session:
        policy = Policy(
            questionnaire=default_questionnaire(),
            delay_minutes=0,
            quiet_start=clock(0, 0),
            quiet_end=clock(0, 0),
            min_gap_days=0,
            channels=("email",),
        )
        set_policy(session, practice_id, None, policy, datetime.now(UTC))
        session.commit()


def queue_due(sessions: sessionmaker, practice_id: str, vault, count: int, tag: str) -> datetime:
    """Bulk-insert `count` planned sessions, each with an invitation due now; return now."""
    now = datetime.now(UTC)
    stamps = {"started_at": now, "ended_at": now, "next_attempt_at": now, "attempts": 0}
    events, invitations = [], []
    for i in range(count):
        client = {"practice_id": practice_id, "patient_ref": f"Patient/{tag}-{i}"}
        event = {**client, **stamps, "id": new_id(), "platform": "standard", "status": "planned"}
        event.update(event_id=f"{tag}-{i}", session_id=f"{tag}-{i}", received_at=now)
        events.append(event)
        contact = vault.seal({"email": f"{tag}-{i}@example.org", "phone": None})
        invitations.append(
            {**client, "id": new_id(), "session_event_id": event["id"], "status": "pending"}
            | {"questionnaire": default_questionnaire(), "contact": contact, "language": "en"}
            | {"channels": ["email"], "channel_index": 0, "due_at": now, "created_at": now}
            | {"next_attempt_at": now, "attempts": 0}
        )
    with sessions() as session:
        session.execute(insert(SessionEvent), events)
        session.execute(insert(Invitation), invitations)
        session.commit()
    return now


def bare_dispatch(engine, channel: Channel, vault, settings, practice: Practice, now) -> int:
    """Compose and send the same messages on the same channel with no queue around them, then
    commit each row; return rows sent.

    One SELECT of the due rows; per row: open the contact, mint and seal the link's token,
    compose the same message (same templates, same email building, same unsubscribe link) and
    hand it to the channel, then UPDATE the row as sent and commit. What it leaves out is the
    product's own work: claiming and leasing, the opt-out and consent checks, the policy, the
    ORM and the log line.
    """
    table = Invitation.__table__
    expires_after = timedelta(
        hours=Policy(questionnaire=default_questionnaire()).expires_after_hours
    )
    with engine.connect() as connection:
        with connection.begin():
            rows = connection.execute(
                select(table.c.id, table.c.contact, table.c.language, table.c.timezone)
                .where(table.c.status == "pending", table.c.next_attempt_at <= now)
                .order_by(table.c.next_attempt_at)
            ).all()
        for row in rows:
            token, token_hash = new_token()
            channel.send(
                Outgoing(
                    key=row.id,
                    to=vault.open(row.contact)["email"],
                    link=f"{settings.base_url}/q/{token}",
                    unsubscribe_link=unsubscribe_link(settings.base_url, row.id),
                    practice_name=practice.name,
                    language=row.language,
                    sent_at=now,
                    expires_at=now + expires_after,
                    timezone=row.timezone or practice.timezone,
                )
            )
            with connection.begin():
                connection.execute(
                    update(table)
                    .where(table.c.id == row.id)
                    .values(
                        status="sent",
                        token=vault.seal(token),
                        token_hash=token_hash,
                        sent_at=now,
                        expires_at=now + expires_after,
                    )
                )
    return len(rows)


class Busy:
    """Measure the cores the whole machine kept busy while a block ran, this bench included,
    and the CPU this process used meanwhile."""

    cores = float("nan")
    cpu = float("nan")

    def __enter__(self) -> "Busy":
        """Take the first reading."""
        self._start = machine_busy_seconds(), time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Keep the mean over the block (nan where /proc/stat cannot be read)."""
        busy, wall, cpu = self._start
        self.cpu = time.process_time() - cpu
        now = machine_busy_seconds()
        if busy is not None and now is not None:
            self.cores = (now - busy) / (time.perf_counter() - wall)


@dataclass
class Throughput:
    """One side of the throughput figure."""

    side: str
    sent: int
    seconds: float
    busy: float = float("nan")
    # CPU seconds of this process: on a shared machine a steadier figure than the wall clock.
    cpu: float = float("nan")

    @property
    def rate(self) -> float:
        """Return invitations per second."""
        return self.sent / self.seconds

    @property
    def cpu_ms(self) -> float:
        """Return this process's CPU milliseconds per invitation."""
        return self.cpu / self.sent * 1e3


def measure_throughput(instance: Instance, args) -> tuple[Throughput, Throughput, str]:
    """Time the bare loop and dispatch_due on args.invitations due rows each."""
    outbox = instance.path / "outbox-dispatch"
    app = create_app(instance.config() | {"SMTP_URL": "", "OUTBOX_DIR": str(outbox)})
    sessions, vault = app.extensions["db"].sessions, app.extensions["vault"]
    with sessions() as session:
        practice_id = session.scalar(select(Practice.id))
    channels = channels_from_config(app.config)
    settings = DispatchSettings.from_config(app.config)

    dispatched = []

    def dispatch(count: int, tag: str) -> Throughput:
        now = queue_due(sessions, practice_id, vault, count, tag)
        began = time.perf_counter()
        with Busy() as busy:
            sent = dispatch_due(sessions, channels, vault, replace(settings, batch=count), now)
        dispatched.append(sent)
        return Throughput("dispatch_due", sent, time.perf_counter() - began, busy.cores, busy.cpu)

    with app.app_context():
        dispatch(WARMUP_INVITATIONS, "warm")
        with sessions() as session:
            practice = session.get(Practice, practice_id)
        now = queue_due(sessions, practice_id, vault, args.invitations, "bare")
        began = time.perf_counter()
        # The same channel class and settings, writing to a folder of its own.
        bare_outbox = instance.path / "outbox-bare"
        bare_email = channels_from_config({**app.config, "OUTBOX_DIR": str(bare_outbox)})["email"]
        with Busy() as busy:
            sent = bare_dispatch(
                app.extensions["db"].engine, bare_email, vault, settings, practice, now
            )
        bare = Throughput("bare loop", sent, time.perf_counter() - began, busy.cores, busy.cpu)
        product = dispatch(args.invitations, "product")
        listing = ""
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(dispatch, args.invitations // 4, "profile")
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
            listing = out.getvalue()
    with sessions() as session:
        pending = session.scalar(
            select(func.count()).select_from(Invitation).where(Invitation.status != "sent")
        )
    app.extensions["db"].engine.dispose()
    if product.sent != args.invitations or bare.sent != args.invitations or pending:
        raise SystemExit(
            f"throughput: expected {args.invitations} sent by each side and none left, got "
            f"{product.sent} and {bare.sent}, {pending} left"
        )
    if (
        len(list(outbox.glob("*.eml"))) != sum(dispatched)
        or len(list(bare_outbox.glob("*.eml"))) != bare.sent
    ):
        raise SystemExit("throughput: an outbox does not hold one .eml per sent invitation")
    return bare, product, listing


@dataclass
class Figures:
    """Everything measured on one database."""

    database: str
    latency: dict[str, Latency]
    bare: Throughput
    product: Throughput


def run_database(label: str, url: str, tmp: Path, smtp: tuple[int, ArrivalRecorder], args):
    """Prepare an instance on this database and measure both figures on it."""
    port, recorder = smtp
    instance = prepare_instance(tmp / label, url, fixture_account())
    configure(instance, SMTP_URL=f"smtp://127.0.0.1:{port}", SCHEDULER_TICK_SECONDS=args.tick)
    app = create_app(instance.config())
    with app.app_context(), app.extensions["db"].sessions() as session:
        practice_id = session.scalar(select(Practice.id))
    send_at_once(app, practice_id)
    app.extensions["db"].engine.dispose()

    latency: dict[str, Latency] = {}
    if not args.throughput_only:
        # `alliance-check worker`, through the same entry point as the console script.
        worker = [sys.executable, "-m", "plugin.cli", "worker"]
        loop = [sys.executable, "-m", "bench.delivery", "--steps-loop", str(instance.path)]
        with Gunicorn(instance, workers=2, threads=1) as server:
            print(f"  {label}: worker, tick {args.tick:g} s ...", flush=True)
            with background(worker, instance, "worker.log"), Busy() as busy:
                result = measure_latency(server.port, recorder, instance, f"{label}-worker", args)
            latency[f"worker, tick {args.tick:g} s"] = replace(result, busy=busy.cores)
            print(f"  {label}: plan+dispatch back-to-back ...", flush=True)
            with background(loop, instance, "steps-loop.log"), Busy() as busy:
                result = measure_latency(server.port, recorder, instance, f"{label}-loop", args)
            latency["steps back-to-back"] = replace(result, busy=busy.cores)
        print(f"  {label}: bare smtplib hand-offs ...", flush=True)
        with Busy() as busy:
            result = bare_handoffs(port, recorder, args.webhooks, label)
        latency = {"bare smtplib": Latency(result, busy.cores)} | latency
    print(f"  {label}: dispatch_due vs a bare loop, {args.invitations} rows ...", flush=True)
    bare, product, listing = measure_throughput(instance, args)
    if listing:
        print(f"\ncProfile of dispatch_due on {label}, by cumulative time:\n{listing}")
    return Figures(label, latency, bare, product)


def report(figures: list[Figures], args) -> list[str]:
    """Format both tables (the throughput one alone with --throughput-only)."""
    lines = (
        []
        if args.throughput_only
        else [
            f"latency: webhook 204 -> SMTP DATA, delay 0, {args.webhooks} webhooks at "
            f"{args.rate:g}/s (each a new client)",
            f"{'database':<11} {'path':<22} {'lost':>5} {'dup':>4} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'max ms':>8} {'p50 ratio':>9} {'busy':>5}",
        ]
    )
    for figure in figures if not args.throughput_only else []:
        base = figure.latency["bare smtplib"].result.percentile(50)
        for path, row in figure.latency.items():
            result = row.result
            worst = max(result.latencies, default=float("nan"))
            lost = result.sent - result.ok
            lines.append(
                f"{figure.database:<11} {path:<22} {lost:>5} {row.duplicates:>4} "
                f"{result.percentile(50) * 1e3:>8.1f} {result.percentile(95) * 1e3:>8.1f} "
                f"{worst * 1e3:>8.1f} {result.percentile(50) / base:>9.1f} {row.busy:>5.2f}"
            )
    lines += [
        "",
        f"throughput: file channel, {args.invitations} due invitations, commit per row",
        f"{'database':<11} {'side':<14} {'sent':>6} {'seconds':>8} {'inv/s':>7} {'ratio':>6} "
        f"{'busy':>5} {'CPU ms':>7} {'CPU ratio':>9}",
    ]
    for figure in figures:
        for side in (figure.bare, figure.product):
            lines.append(
                f"{figure.database:<11} {side.side:<14} {side.sent:>6} {side.seconds:>8.2f} "
                f"{side.rate:>7.0f} {side.rate / figure.bare.rate:>6.2f} {side.busy:>5.2f} "
                f"{side.cpu_ms:>7.2f} {figure.bare.cpu_ms / side.cpu_ms:>9.2f}"
            )
    lines += [
        "",
        "lost   webhooks without a 204, or whose message did not arrive within "
        f"{ARRIVAL_TIMEOUT_SECONDS} s",
        "dup    clients who got more than one message (should be 0)",
        "ratio  latency: p50 / bare smtplib p50; throughput: rate / bare loop rate",
        "busy   mean cores busy machine-wide meanwhile, this benchmark's own processes included",
        "       (the back-to-back loop and the throughput runs keep about one core busy alone)",
        "CPU ms this process's CPU per invitation (PostgreSQL's own CPU not included)",
        "       CPU ratio = bare CPU / this side's CPU: steadier than the wall-clock ratio",
        "       when other processes share the machine",
    ]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.delivery", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--webhooks", type=int, default=200, help="measured webhooks (200)")
    parser.add_argument("--rate", type=float, default=20.0, help="webhooks per second (20)")
    parser.add_argument("--tick", type=float, default=0.5, help="worker tick seconds (0.5)")
    parser.add_argument(
        "--invitations", type=int, default=2000, help="due invitations to dispatch (2000)"
    )
    add_database_options(parser)
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile of dispatch_due (cumulative)"
    )
    parser.add_argument("--throughput-only", action="store_true", help="skip the latency figures")
    parser.add_argument("--steps-loop", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.webhooks < 1 or args.rate <= 0 or args.tick <= 0 or args.invitations < 4:
        parser.error("counts, the rate and the tick must be positive (at least 4 invitations)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on each database and print the figures."""
    args = parse_args(argv)
    if args.steps_loop:
        steps_loop(args.steps_loop)
        return 0
    print("Alliance Check delivery benchmark: webhook -> SMTP latency, dispatcher throughput")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} usable cores, load average {os.getloadavg()[0]:.2f}\n", flush=True)
    targets = [] if args.no_sqlite else [("sqlite", None)]
    if args.postgres:
        targets.append(("postgresql", args.postgres))
    began = time.monotonic()
    figures = []
    with (
        tempfile.TemporaryDirectory(prefix="alliance-delivery-") as tmp,
        log_to(Path(tmp)),
        smtp_server() as smtp,
    ):
        for label, server in targets:
            with bench_database(label, server, Path(tmp) / label) as url:
                if url is None:
                    continue
                figures.append(run_database(label, url, Path(tmp), smtp, args))
    if not figures:
        print("nothing was measured", file=sys.stderr)
        return 1
    print()
    for line in report(figures, args):
        print(line)
    print(f"\ntotal time {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
