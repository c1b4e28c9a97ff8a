"""Soak: sessions end, clients answer, processes crash and the EHR goes away; nothing is lost.

    make soak                       # 1,000 sessions, bounded to 10 minutes
    SOAK_SESSIONS=100 make soak     # a quick run
    python -m bench.soak [--sessions 1000] [--rate 8] [--outage 60] [--seed N]
                         [--postgres URL] [--database alliance_soak]

On PostgreSQL, in a database of its own made fresh for the run (alliance_soak, never `test`),
it runs two gunicorn web instances and two `alliance-check worker` processes, with the real
test FHIR server (strict, SMART tokens from the test OAuth server) as the practice's EHR and a
real SMTP server (aiosmtpd, in this process) as the mail relay. Then:

- a platform sends `--sessions` signed session-ended webhooks (a new client each) at `--rate`
  per second, to both web instances in turn, retrying a delivery on the other instance when
  one fails (as a platform does on a 5xx or a reset), and replaying every 25th after its 2xx;
- each client follows the link in the email they receive and answers, as a browser would;
- at random moments (reproducible with --seed) one worker and one web instance are killed
  with SIGKILL and started again, and the FHIR server goes down for `--outage` seconds;
- once the platform is done, it waits until no queue holds a row and every invited client has
  answered (or the 10 minutes are up), and prints the table.

Goals, each a non-zero exit when missed: lost 0 (a session acknowledged and never invited, or
an answer acknowledged and never written), duplicate EHR resources 0 (counted by the FHIR
server: resources repeating an identifier), extra messages at most one per crash (a worker
killed between handing a message to SMTP and recording it sends it again after its lease).
"""

import argparse
import os
import queue
import random
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path

import requests
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bench.app import WEBHOOK_PATH
from bench.delivery import client_webhooks, configure, send_at_once
from bench.load import Client, Delivery, fixture_account
from bench.server import (
    Gunicorn,
    Instance,
    Worker,
    children,
    cpu_seconds,
    free_port,
    log_to,
    postgres_database,
    prepare_instance,
)
from plugin import create_app
from plugin.core.db import make_engine
from plugin.core.models import EhrWrite, Invitation, Practice, SessionEvent
from plugin.ehr.keys import generate
from tests.support import fhir_server
from tests.support.backlog import FULL
from tests.support.metrics import bearer, parse, value
from tests.support.oauth_server import start_oauth_server
from tests.support.smtp import Recorder

DEFAULT_DATABASE = "alliance_soak"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# The whole run, start-up included, stays within this; what is not done by then is reported.
BUDGET_SECONDS = 600
# Settings the run needs so that it fits in the budget; every one is an existing config key.
SETTINGS = {
    "SCHEDULER_TICK_SECONDS": 1,  # default 5: a worker looks for due rows every second
    "EHR_WRITE_RETRY_SECONDS": 5,  # default 30: the first retry after the EHR failed
    "EHR_WRITE_MAX_DELAY_SECONDS": 20,  # default 3600: so writes resume soon after the outage
    "PLAN_RETRY_SECONDS": 5,  # default 60
    "DELIVERY_RETRY_SECONDS": 5,  # default 60
}
EHR_SCOPES = "system/QuestionnaireResponse.c system/Observation.c system/Observation.rs"
EHR_SCOPES += " system/Flag.cu"
# Scrapes carry it; made afresh for each run.
METRICS_TOKEN = secrets.token_urlsafe(24)
# A platform gives up on a delivery after this long; a client on a link after this long.
DELIVERY_PATIENCE_SECONDS = 120
LINK_PATIENCE_SECONDS = 30
REPLAY_EVERY = 25
SENDERS = 8
ANSWERERS = 6


@dataclass
class Tally:
    """What the platform and the clients saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: set[str] = field(default_factory=set)  # client emails whose session got a 2xx
    answered: set[str] = field(default_factory=set)  # clients told "thank you" (or "already")
    messages: Counter = field(default_factory=Counter)  # emails received per client
    events: list[str] = field(default_factory=list)  # what the chaos did, and when
    answering: int = 0  # clients in the middle of answering


class Mailbox(Recorder):
    """The test SMTP server's recorder, handing each questionnaire link to a client."""

    def __init__(self, tally: Tally, links: queue.Queue) -> None:
        """Start empty."""
        super().__init__()
        self.tally, self.links = tally, links

    async def handle_DATA(self, server, session, envelope):
        """Count the message for its recipient and queue its link for them."""
        message = message_from_bytes(envelope.content, policy=policy.default)
        text = message.get_body(preferencelist=("plain", "html")).get_content()
        link = re.search(r"https?://[^/\s]+/q/[A-Za-z0-9_-]+", text)
        for address in envelope.rcpt_tos:
            with self.tally.lock:
                self.tally.messages[address] += 1
            if link:
                self.links.put((address, link.group(0), time.monotonic()))
        return "250 Message accepted"


class Web:
    """The two web instances, as a load balancer sees them: any that answers will do."""

    def __init__(self, servers: list[Gunicorn]) -> None:
        """Hold the instances."""
        self.servers = servers

    def origin(self, n: int) -> str:
        """Return the base URL of instance n (modulo their number)."""
        return self.servers[n % len(self.servers)].base_url


def platform(web: Web, deliveries: list[tuple[str, Delivery]], rate: float, tally: Tally):
    """Send every delivery at `rate` per second from SENDERS threads; replay some after a 2xx."""
    origin = time.monotonic()
    counter = iter(range(len(deliveries)))
    counter_lock = threading.Lock()

    def deliver(n: int, delivery: Delivery, clients: list[Client]) -> bool:
        give_up = time.monotonic() + DELIVERY_PATIENCE_SECONDS
        attempt = 0
        while time.monotonic() < give_up:
            # Alternate instances, and move to the other one after a failure.
            status = clients[(n + attempt) % len(clients)].send(WEBHOOK_PATH, delivery)
            if 200 <= status < 300:
                return True
            if 400 <= status < 500:
                return False  # a platform never retries a 4xx
            attempt += 1
            time.sleep(0.5)
        return False

    def run() -> None:
        clients = [Client(server.port) for server in web.servers]
        while True:
            with counter_lock:
                n = next(counter, None)
            if n is None:
                break
            pause = origin + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            email, delivery = deliveries[n]
            if deliver(n, delivery, clients):
                with tally.lock:
                    tally.acknowledged.add(email)
                if n % REPLAY_EVERY == 0:
                    deliver(n + 1, delivery, clients)  # the platform's retry: same webhook id
        for client in clients:
            client.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    return threads


def answer(web: Web, link: str, n: int) -> int:
    """Open the link and send the answers as a browser would; return the final status (0: down)."""
    path = link[link.index("/q/") :]
    with requests.Session() as browser:
        try:
            page = browser.get(web.origin(n) + path, timeout=10)
            if page.status_code != 200:
                return page.status_code
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            # The POST may land on the other instance: they share the secret key.
            sent = browser.post(
                web.origin(n + 1) + path, data={"csrf_token": token, **FULL}, timeout=10
            )
            return sent.status_code
        except requests.RequestException:
            return 0


def clients(web: Web, links: queue.Queue, tally: Tally, stop: threading.Event):
    """Answer each link from ANSWERERS threads, after a moment's reading, retrying a while."""

    def run() -> None:
        n = 0
        while not stop.is_set():
            try:
                address, link, arrived = links.get(timeout=0.5)
            except queue.Empty:
                continue
            with tally.lock:
                if address in tally.answered:
                    continue  # a second message for a client who has answered
                tally.answering += 1
            try:
                time.sleep(max(0.0, arrived + random.uniform(0.5, 2.0) - time.monotonic()))
                give_up = time.monotonic() + LINK_PATIENCE_SECONDS
                while time.monotonic() < give_up and not stop.is_set():
                    n += 1
                    status = answer(web, link, n)
                    # 409: an earlier try's answers went in, and only its reply was lost.
                    if status in (200, 409):
                        with tally.lock:
                            tally.answered.add(address)
                        break
                    # 404: not yet recorded as sent, because the mail outran the worker's commit,
                    # or the worker died first (its row is sent again, same link, after the
                    # lease; that message brings the client back).
                    time.sleep(1.0)
            finally:
                with tally.lock:
                    tally.answering -= 1

    threads = [threading.Thread(target=run, daemon=True) for _ in range(ANSWERERS)]
    for thread in threads:
        thread.start()
    return threads


def queues(engine) -> dict[str, int]:
    """Return how many rows each queue still holds (pending, due or not)."""
    with engine.connect() as connection:
        return {
            model.__tablename__: connection.scalar(
                select(func.count()).select_from(model).where(model.status == "pending")
            )
            for model in (SessionEvent, Invitation, EhrWrite)
        }


def statuses(engine) -> dict[str, dict[str, int]]:
    """Return each queue table's rows by status."""
    with engine.connect() as connection:
        return {
            model.__tablename__: dict(
                connection.execute(select(model.status, func.count()).group_by(model.status)).all()
            )
            for model in (SessionEvent, Invitation, EhrWrite)
        }


class Chaos:
    """Kill -9 a worker and a web instance, and take the EHR down, each at its moment."""

    def __init__(self, rng: random.Random, window: float, outage: float, tally: Tally) -> None:
        """Draw the moments within the platform's sending window."""
        self.tally = tally
        self.outage = outage
        self.began = time.monotonic()
        self.plan = sorted(
            [
                (rng.uniform(0.2, 0.6) * window, "worker"),
                (rng.uniform(0.3, 0.8) * window, "web"),
                (rng.uniform(0.3, 0.7) * window, "ehr"),
            ]
        )
        self.outage_ends = 0.0

    def note(self, text: str) -> None:
        """Record what happened, with the time since the platform began."""
        line = f"t+{time.monotonic() - self.began:6.1f}s  {text}"
        print(f"  {line}", flush=True)
        with self.tally.lock:
            self.tally.events.append(line)

    def run(self, rng: random.Random, workers: list[Worker], web: Web, ehr) -> None:
        """Carry out the plan (call in a thread)."""
        for at, what in self.plan:
            time.sleep(max(0.0, self.began + at - time.monotonic()))
            if what == "worker":
                worker = rng.choice(workers)
                busy = busy_soon([worker.process.pid])
                pid = worker.kill()
                self.note(f"kill -9 {worker.name} (pid {pid}), {busy}")
                time.sleep(1.0)
                worker.start()
                self.note(f"{worker.name} restarted (pid {worker.process.pid})")
            elif what == "web":
                server = rng.choice(web.servers)
                busy = busy_soon([server.process.pid, *children(server.process.pid)])
                pids = server.kill()
                listed = ", ".join(map(str, pids))
                self.note(f"kill -9 web on :{server.port} (pids {listed}), {busy}")
                server.start()
                self.note(f"web on :{server.port} restarted")
            else:
                ehr.go_down(self.outage)
                self.outage_ends = time.monotonic() + self.outage
                time.sleep(0.2)
                self.note(f"FHIR server down for {self.outage:g} s ({refused(ehr.port)})")


def refused(port: int) -> str:
    """Say whether a connection to 127.0.0.1:port is refused, as it is to a stopped server."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return "connections refused"
    return "STILL ACCEPTING CONNECTIONS"


def busy_soon(pids: list[int], patience: float = 10.0) -> str:
    """Wait until the processes are using the CPU (mid-tick, mid-request), up to `patience` s.

    A worker on a 1 s tick sleeps most of the time; a crash while it sleeps tests nothing. So
    the kill lands at the first sign of work after its random moment: a CPU tick (10 ms) used.
    Return which it was.
    """
    start = cpu_seconds(pids)
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        time.sleep(0.005)
        now = cpu_seconds(pids)
        if start is None or now is None or now > start:
            return "at work"
    return "idle"


@dataclass
class Figures:
    """The table, and what the goals compare."""

    acknowledged: int
    invited: int
    answered: int
    written: int
    lost: int
    duplicates: int
    extra: int
    crashes: int

    def goals(self) -> list[tuple[str, bool]]:
        """Return each goal with whether it was met."""
        return [
            ("lost 0", self.lost == 0),
            ("duplicate EHR resources 0", self.duplicates == 0),
            (f"extra messages <= {self.crashes} (1 per crash)", self.extra <= self.crashes),
        ]


def figures(tally: Tally, ehr_stats: dict, crashes: int) -> Figures:
    """Count what reached whom: the platform's 2xx, the mailbox, the clients, the EHR."""
    invited = tally.acknowledged & set(tally.messages)
    resources = ehr_stats["resources"].get("QuestionnaireResponse", 0)
    repeated = ehr_stats["duplicates"]
    written = resources - repeated.get("QuestionnaireResponse", 0)
    return Figures(
        acknowledged=len(tally.acknowledged),
        invited=len(invited),
        answered=len(tally.answered),
        written=written,
        lost=len(tally.acknowledged - invited) + max(0, len(tally.answered) - written),
        duplicates=sum(repeated.values()),
        extra=sum(tally.messages.values()) - len(tally.messages),
        crashes=crashes,
    )


def report(result: Figures, sessions: int) -> list[str]:
    """Format the table and the goals."""
    head = (
        f"{'sessions':>8} {'acknowledged':>12} {'invited':>8} {'answered':>9} {'written':>8} "
        f"{'lost':>5} {'dup EHR':>8} {'extra msgs':>11}"
    )
    row = (
        f"{sessions:>8} {result.acknowledged:>12} {result.invited:>8} {result.answered:>9} "
        f"{result.written:>8} {result.lost:>5} {result.duplicates:>8} {result.extra:>11}"
    )
    lines = [head, row, ""]
    lines += [f"goal {name}: {'met' if met else 'NOT MET'}" for name, met in result.goals()]
    return lines


def scrape_metrics(web: Web) -> list[str]:
    """Return what /metrics says of the run, as Prometheus would have seen it."""
    response = requests.get(f"{web.origin(0)}/metrics", headers=bearer(METRICS_TOKEN), timeout=10)
    samples = parse(response.text)
    hooks = {
        result: value(samples, "alliance_webhooks_total", platform="standard", result=result)
        for result in ("stored", "duplicate")
    }
    writes = {
        outcome: value(samples, "alliance_ehr_writes_total", outcome=outcome)
        for outcome in ("written", "retry", "dead")
    }
    depth = {
        name: value(samples, "alliance_queue_depth", queue=name)
        for name in ("planning", "invitations", "ehr_writes")
    }
    return [
        "/metrics: webhooks " + ", ".join(f"{k} {v:g}" for k, v in hooks.items()),
        "          EHR writes " + ", ".join(f"{k} {v:g}" for k, v in writes.items()),
        "          queue depth " + ", ".join(f"{k} {v:g}" for k, v in depth.items()),
    ]


def connect_ehr(instance: Instance, oauth, ehr) -> None:
    """Connect the practice to the FHIR server with `ehr connect`, as an operator would."""
    app = create_app(instance.config())
    with app.app_context(), app.extensions["db"].sessions() as session:
        key = generate(session, app.extensions["vault"], "ES384")
        practice_id = session.scalar(select(Practice.id))
    oauth.register_client("alliance", jwks={"keys": [key.public_jwk]}, scopes=EHR_SCOPES)
    result = app.test_cli_runner().invoke(
        args=["ehr", "connect", fixture_account(), ehr.base_url, "--client-id", "alliance"]
    )
    if result.exit_code != 0:
        raise SystemExit(f"ehr connect failed:\n{result.output}")
    send_at_once(app, practice_id)
    app.extensions["db"].engine.dispose()


def settle(engine, tally: Tally, deadline: float, chaos: threading.Thread, outage) -> bool:
    """Wait until no queue holds a row and every invited client has answered; True if so."""
    chaos.join(timeout=max(0.0, deadline - time.monotonic()))
    while time.monotonic() < deadline:
        with tally.lock:
            waiting = tally.acknowledged & set(tally.messages)
            done = tally.answering == 0 and waiting <= tally.answered
        # The outage must be over too: a write that failed during it has its retry ahead.
        if done and time.monotonic() > outage.outage_ends and not any(queues(engine).values()):
            return True
        time.sleep(2.0)
    return False


def run(args, server_url: str, tmp: Path) -> int:
    """Set everything up, run the soak, print the table; return the exit status."""
    began = time.monotonic()
    rng = random.Random(args.seed)
    tally = Tally()
    links: queue.Queue = queue.Queue()
    stop = threading.Event()
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database(server_url, args.database))
        oauth = stack.enter_context(start_oauth_server())
        ehr = stack.enter_context(
            fhir_server.running(*fhir_server.trusting(oauth), "--enforce-scopes")
        )
        smtp_port = free_port()
        controller = Controller(Mailbox(tally, links), hostname="127.0.0.1", port=smtp_port)
        controller.start()
        stack.callback(controller.stop)

        instance = prepare_instance(tmp / "instance", url, fixture_account())
        servers = [Gunicorn(instance, workers=1, threads=4) for _ in range(2)]
        configure(
            instance,
            SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
            PUBLIC_BASE_URL=servers[0].base_url,
            METRICS_TOKEN=METRICS_TOKEN,
            **SETTINGS,
        )
        connect_ehr(instance, oauth, ehr)
        # prometheus_client reads it when a process imports it: the children get it at birth.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
        (tmp / "metrics").mkdir()
        web = Web(servers)
        for server in servers:
            server.start()
            stack.callback(server.stop)
        workers = [Worker(instance, f"worker-{n}") for n in (1, 2)]
        for worker in workers:
            worker.start()
            stack.callback(worker.stop)
        engine = make_engine(url)
        stack.callback(engine.dispose)

        deliveries = client_webhooks(instance.webhook_secret, args.sessions, "soak")
        window = args.sessions / args.rate
        print(
            f"set up in {time.monotonic() - began:.0f} s; sending {args.sessions} sessions over "
            f"{window:.0f} s",
            flush=True,
        )
        chaos = Chaos(rng, window, args.outage, tally)
        answering = clients(web, links, tally, stop)
        sending = platform(web, deliveries, args.rate, tally)
        havoc = threading.Thread(target=chaos.run, args=(rng, workers, web, ehr), daemon=True)
        havoc.start()

        deadline = began + BUDGET_SECONDS - 20
        for thread in sending:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        settled = settle(engine, tally, deadline, havoc, chaos)
        chaos.note("quiet" if settled else "NOT quiet by the deadline")
        stop.set()
        for thread in answering:
            thread.join(timeout=15)
        result = figures(tally, ehr.stats(), crashes=2)
        metrics = scrape_metrics(web)
        rows = statuses(engine)

    print()
    for line in report(result, args.sessions):
        print(line)
    print()
    for line in metrics:
        print(line)
    for table, counts in rows.items():
        print(f"{table:>15}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"\nseed {args.seed}; total time {time.monotonic() - began:.0f} s")
    return 0 if all(met for _, met in result.goals()) and settled else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--sessions", type=int, default=int(os.environ.get("SOAK_SESSIONS", 1000)))
    parser.add_argument("--rate", type=float, default=8.0, help="webhooks per second (8)")
    parser.add_argument("--outage", type=float, default=60.0, help="FHIR server down, s (60)")
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ALLIANCE_TEST_DATABASE_URL", DEFAULT_SERVER),
        metavar="URL",
        help="the PostgreSQL server (only its host, user and password are used)",
    )
    parser.add_argument(
        "--database",
        default=os.environ.get("SOAK_DATABASE", DEFAULT_DATABASE),
        help=f"the database to create afresh and drop ({DEFAULT_DATABASE})",
    )
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.rate <= 0 or args.outage < 0:
        parser.error("sessions and rate must be positive, the outage not negative")
    # Dropped and created afresh: never the suite's database, nor the one the URL names.
    if args.database in ("test", "postgres", make_url(args.postgres).database):
        parser.error(f"refusing to recreate the database {args.database!r}; pick another")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its table."""
    args = parse_args(argv)
    print(
        f"Alliance Check soak: {args.sessions} sessions, 2 web + 2 workers on PostgreSQL "
        f"({args.database}), FHIR outage {args.outage:g} s, seed {args.seed}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="alliance-soak-") as tmp, log_to(Path(tmp)):
        return run(args, args.postgres, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
