"""`python -m bench`: webhook ack throughput and latency against a bare durable insert, same server.

For each database (SQLite always, PostgreSQL when --postgres or ALLIANCE_TEST_DATABASE_URL
names a server) one gunicorn serves the webhook and the baselines of bench.app: a bare route
that commits one raw insert with the driver (the baseline), and a bare 204 (for reference).
The run prints:
- closed loop: the most requests/s N back-to-back clients get, and each route's rate as a
  ratio to the raw insert's;
- open loop: p50/p99/max latency at a fixed rate (200 requests/s by default);
- an in-process breakdown of one webhook's steps, to say where the time goes.
"""

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from bench import parts
from bench.app import (
    BARE_PATH,
    INSERT_PATH,
    WEBHOOK_PATH,
    count_inserted,
    create_insert_table,
)
from bench.load import Result, closed_loop, fixture_account, open_loop, signed_deliveries
from bench.server import (
    Gunicorn,
    Instance,
    add_database_options,
    bench_database,
    log_to,
    machine_busy_seconds,
    postgres_cpu_seconds,
    prepare_instance,
)
from plugin.core.db import normalize_url
from plugin.core.models import SessionEvent

GOAL_RATIO = 0.7
GOAL_P99_MS = 20.0
WARMUP_SECONDS = 1.0
# Above this many cores used by other processes, the figures say more about them than us.
NOISY_CORES = 0.2
# Upper bound on requests in one closed-loop run, so every loop is bounded by stock too.
CLOSED_STOCK = 20_000
# The baseline first: the ratio is taken against it.
BASELINE = "raw insert"
SCENARIOS = ((BASELINE, INSERT_PATH), ("bare 204", BARE_PATH), ("webhook", WEBHOOK_PATH))


@dataclass
class Usage:
    """CPU seconds spent while one run was measured, and how long it took."""

    server: float | None  # gunicorn master and workers
    client: float  # this process: the load generator
    database: float | None  # PostgreSQL's server processes; None for SQLite (in-process)
    others: float | None  # every other process on the machine: noise
    wall: float


class Meter:
    """Measure the CPU that the server, the client and everything else used during a block."""

    def __init__(self, server: Gunicorn, database_cpu: Callable[[], float] | None) -> None:
        """Watch this server, and the database server if it runs apart."""
        self._server = server
        self._database_cpu = database_cpu or (lambda: 0.0)
        self._separate_database = database_cpu is not None
        self.usage: Usage | None = None

    def __enter__(self) -> "Meter":
        """Take the first reading."""
        self._start = (
            self._server.cpu_seconds(),
            time.process_time(),
            self._database_cpu(),
            machine_busy_seconds(),
            time.perf_counter(),
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        """Take the second reading and keep the differences."""
        server0, client0, database0, busy0, wall0 = self._start
        server1, client1, database1, busy1 = (
            self._server.cpu_seconds(),
            time.process_time(),
            self._database_cpu(),
            machine_busy_seconds(),
        )
        server = server1 - server0 if server0 is not None and server1 is not None else None
        client = client1 - client0
        database = database1 - database0
        others = (
            max(0.0, busy1 - busy0 - server - client - database)
            if busy0 is not None and busy1 is not None and server is not None
            else None
        )
        self.usage = Usage(
            server,
            client,
            database if self._separate_database else None,
            others,
            time.perf_counter() - wall0,
        )


@dataclass
class Row:
    """One scenario's figures on one server."""

    database: str
    scenario: str
    closed: Result
    closed_usage: Usage
    opened: Result = field(default_factory=Result)
    opened_usage: Usage | None = None

    @property
    def other_cores(self) -> float | None:
        """Return the mean cores other processes used while this row was measured."""
        usages = [u for u in (self.closed_usage, self.opened_usage) if u is not None]
        if any(u.others is None for u in usages):
            return None
        return sum(u.others for u in usages) / sum(u.wall for u in usages)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    # Two processes for two cores (the GIL allows one core per process). One thread each,
    # because SQLite has a single writer: a waiting writer sleeps in SQLite's busy handler
    # (1, 2, 5, ... 100 ms), so every extra concurrent writer adds tail latency, not speed.
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    parser.add_argument(
        "--clients", type=int, default=8, help="closed-loop concurrent clients (default 8)"
    )
    parser.add_argument(
        "--closed-seconds", type=float, default=5.0, help="closed-loop duration (default 5)"
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="open-loop requests/s (default 200)"
    )
    parser.add_argument(
        "--open-seconds", type=float, default=10.0, help="open-loop duration (default 10)"
    )
    add_database_options(parser)
    parser.add_argument("--no-parts", action="store_true", help="skip the step breakdown")
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile of webhook requests (in-process)"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.open_seconds <= 0 or args.closed_seconds <= 0:
        parser.error("rates and durations must be positive")
    if args.workers < 1 or args.threads < 1 or args.clients < 1:
        parser.error("workers, threads and clients must be at least 1")
    if args.rate * args.open_seconds > 100_000:
        parser.error("the open loop is capped at 100000 requests")
    return args


def environment(args: argparse.Namespace) -> list[str]:
    """Describe the machine and software the figures come from."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"machine:  {cores} usable cores ({os.cpu_count()} online), {platform.machine()}, "
        f"{platform.system()} {platform.release()}, load average {load:.2f}",
        f"software: Python {platform.python_version()}, gunicorn {version('gunicorn')}, "
        f"Flask {version('flask')}, SQLAlchemy {version('sqlalchemy')}, "
        f"SQLite {sqlite3.sqlite_version}",
        f"server:   gunicorn gthread, {args.workers} workers x {args.threads} threads, "
        "keep-alive, on 127.0.0.1 (the load generator shares the same cores)",
        f"load:     closed loop {args.clients} clients x {args.closed_seconds:g} s; "
        f"open loop {args.rate:g} req/s x {args.open_seconds:g} s",
    ]
    if args.postgres:
        lines.append(f"postgres: {_postgres_version(args.postgres)}")
    return lines


def _postgres_version(url: str) -> str:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return "PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        return f"unreachable ({type(exc).__name__})"


def run_database(label: str, instance: Instance, args: argparse.Namespace) -> list[Row]:
    """Serve one instance with gunicorn and measure both scenarios on it."""
    rows: dict[str, Row] = {}
    acknowledged = Counter()
    create_insert_table(instance.database_url)
    # SQLite works inside the gunicorn workers; PostgreSQL in processes of its own.
    database_cpu = None if instance.database_url.startswith("sqlite") else postgres_cpu_seconds
    with Gunicorn(instance, args.workers, args.threads) as server:
        for scenario, path in SCENARIOS:
            print(f"  {label}/{scenario}: closed loop, {args.clients} clients ...", flush=True)
            stock = signed_deliveries(
                instance.webhook_secret, CLOSED_STOCK, f"{label}-c-{scenario}"
            )
            warm = closed_loop(server.port, path, stock, args.clients, WARMUP_SECONDS)
            with Meter(server, database_cpu) as meter:
                closed = closed_loop(server.port, path, stock, args.clients, args.closed_seconds)
            rows[scenario] = Row(label, scenario, closed, meter.usage)
            acknowledged[scenario] += warm.ok + closed.ok
        for scenario, path in SCENARIOS:
            print(f"  {label}/{scenario}: open loop, {args.rate:g} req/s ...", flush=True)
            total = int(args.rate * args.open_seconds)
            stock = signed_deliveries(instance.webhook_secret, total, f"{label}-o-{scenario}")
            with Meter(server, database_cpu) as meter:
                opened = open_loop(server.port, path, stock, args.rate, args.open_seconds)
            rows[scenario].opened, rows[scenario].opened_usage = opened, meter.usage
            acknowledged[scenario] += opened.ok
    _check_stored(instance.database_url, acknowledged["webhook"], acknowledged[BASELINE])
    return list(rows.values())


def _check_stored(url: str, acknowledged: int, inserts: int) -> None:
    """Fail loudly unless every 204 of the webhook and of the raw insert left exactly one row."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            events = conn.scalar(select(func.count()).select_from(SessionEvent))
    finally:
        engine.dispose()
    rows = count_inserted(url)
    if events != acknowledged or rows != inserts:
        raise SystemExit(
            f"durability check failed: {acknowledged} webhooks acknowledged, "
            f"{events} session events stored; {inserts} raw inserts acknowledged, {rows} rows"
        )
    print(f"  stored: {events} session events and {rows} raw rows, one per 204")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _per_request_ms(cpu: float | None, requests: int) -> str:
    return f"{cpu / requests * 1000:.2f}" if cpu is not None and requests else "n/a"


def report(rows: list[Row], args: argparse.Namespace) -> list[str]:
    """Format the results table and the verdict against the goals."""
    header = (
        f"{'database':<10} {'scenario':<10} {'req/s':>7} {'ratio':>6} {'srv CPU':>8} "
        f"{'db CPU':>7} {'cli CPU':>8} | {'rate':>5} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} | {'errors':>6} {'noise':>5}"
    )
    lines = [header, "-" * len(header)]
    verdicts = []
    baselines = {row.database: row.closed.throughput for row in rows if row.scenario == BASELINE}
    for row in rows:
        base = baselines.get(row.database)
        ratio = row.closed.throughput / base if base else float("nan")
        opened, usage, sent = row.opened, row.closed_usage, row.closed.sent
        errors = (row.closed.sent - row.closed.ok) + (opened.sent - opened.ok)
        achieved = opened.sent / opened.elapsed if opened.elapsed else 0.0
        noise = f"{row.other_cores:.2f}" if row.other_cores is not None else "n/a"
        database = "in srv" if usage.database is None else _per_request_ms(usage.database, sent)
        lines.append(
            f"{row.database:<10} {row.scenario:<10} {row.closed.throughput:>7.0f} {ratio:>6.2f} "
            f"{_per_request_ms(usage.server, sent):>8} {database:>7} "
            f"{_per_request_ms(usage.client, sent):>8} | {achieved:>5.0f} "
            f"{_ms(opened.percentile(50)):>7} {_ms(opened.percentile(99)):>7} "
            f"{_ms(max(opened.latencies, default=float('nan'))):>7} | {errors:>6} {noise:>5}"
        )
        if row.other_cores is not None and row.other_cores > NOISY_CORES:
            verdicts.append(
                f"warning: other processes used {row.other_cores:.2f} cores during "
                f"{row.database}/{row.scenario}; rerun on a quiet machine"
            )
        if row.scenario == "webhook":
            p99 = opened.percentile(99) * 1000
            met = ratio >= GOAL_RATIO and p99 <= GOAL_P99_MS and errors == 0
            verdicts.append(
                f"{row.database}: ratio {ratio:.2f} (goal >= {GOAL_RATIO}), "
                f"p99 {p99:.1f} ms at {args.rate:g} req/s (goal <= {GOAL_P99_MS:g} ms): "
                f"{'goal met' if met else 'GOAL NOT MET'}"
            )
    lines += [
        "",
        "req/s   closed-loop throughput; ratio = this route / the raw insert, same server",
        "        (raw insert: one row committed with the bare driver; bare 204: no durable work)",
        "srv CPU CPU ms per request in gunicorn (master + workers), closed loop",
        "db CPU  CPU ms per request in PostgreSQL's processes (SQLite runs inside srv)",
        "cli CPU CPU ms per request in the load generator, closed loop",
        "rate..  open loop: achieved req/s; latency from each request's scheduled send time",
        "errors  responses other than 204 or connection errors, both loops",
        "noise   mean cores used by other processes on this machine meanwhile (should be ~0)",
        "",
        *verdicts,
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark and print the figures."""
    args = parse_args(argv)
    print("Alliance Check benchmark: POST /webhooks/standard vs a bare route's raw insert\n")
    for line in environment(args):
        print(line)
    print(flush=True)
    targets = [] if args.no_sqlite else [("sqlite", None)]
    if args.postgres:
        targets.append(("postgresql", args.postgres))
    if not targets:
        print("nothing to run: --no-sqlite without --postgres", file=sys.stderr)
        return 2
    began = time.monotonic()
    rows: list[Row] = []
    extras: list[str] = []
    account = fixture_account()
    with tempfile.TemporaryDirectory(prefix="alliance-bench-") as tmp, log_to(Path(tmp)):
        for label, url in targets:
            path = Path(tmp) / label
            with bench_database(label, url, path) as database_url:
                if database_url is None:
                    continue
                instance = prepare_instance(path, database_url, account)
                rows += run_database(label, instance, args)
                if not args.no_parts:
                    print(f"  {label}: timing the steps in-process ...", flush=True)
                    extras += _breakdown(label, parts.breakdown(instance))
                if args.profile:
                    extras += [f"\ncProfile, {label}, webhook requests via the Flask test client:"]
                    extras += [parts.profile(instance)]
    if not rows:
        print("nothing was measured", file=sys.stderr)
        return 1
    print()
    for line in [*report(rows, args), *extras]:
        print(line)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntotal time {time.monotonic() - began:.0f} s, load average now {load:.2f}")
    return 0


def _breakdown(label: str, steps: list[tuple[str, tuple[float, float]]]) -> list[str]:
    lines = [
        f"\nwhere the time goes, {label}: in-process, no HTTP, mean per op",
        f"  {'step':<42} {'wall ms':>8} {'CPU ms':>8}",
    ]
    lines += [f"  {step:<42} {wall:>8.3f} {cpu:>8.3f}" for step, (wall, cpu) in steps]
    return lines


if __name__ == "__main__":
    sys.exit(main())
