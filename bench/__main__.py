"""`python -m bench`: webhook ack throughput and latency against a bare Flask 204, same server.

For each database (SQLite always, PostgreSQL when --postgres or ALLIANCE_TEST_DATABASE_URL
names a server) one gunicorn serves both routes, and the run prints:
- closed loop: the most requests/s N back-to-back clients get, and webhook/bare as a ratio;
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
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from bench import parts
from bench.app import BARE_PATH, WEBHOOK_PATH
from bench.load import Result, closed_loop, fixture_account, open_loop, signed_deliveries
from bench.server import Gunicorn, Instance, postgres_database, prepare_instance
from plugin.db import normalize_url
from plugin.models import Invitation, SessionEvent

GOAL_RATIO = 0.5
GOAL_P99_MS = 20.0
WARMUP_SECONDS = 1.0
# Upper bound on requests in one closed-loop run, so every loop is bounded by stock too.
CLOSED_STOCK = 20_000
SCENARIOS = (("bare", BARE_PATH), ("webhook", WEBHOOK_PATH))


@dataclass
class Row:
    """One scenario's figures on one server."""

    database: str
    scenario: str
    closed: Result
    opened: Result
    server_cpu_ms: float | None
    client_cpu_ms: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
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
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ALLIANCE_TEST_DATABASE_URL"),
        metavar="URL",
        help="also run on PostgreSQL, in a throw-away database alliance_bench on this server "
        "(default: $ALLIANCE_TEST_DATABASE_URL)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
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
    webhook_ok = 0
    with Gunicorn(instance, args.workers, args.threads) as server:
        for scenario, path in SCENARIOS:
            print(f"  {label}/{scenario}: closed loop ...", flush=True)
            stock = signed_deliveries(
                instance.webhook_secret, CLOSED_STOCK, f"{label}-c-{scenario}"
            )
            warm = closed_loop(server.port, path, stock, args.clients, WARMUP_SECONDS)
            server_before, client_before = server.cpu_seconds(), time.process_time()
            closed = closed_loop(server.port, path, stock, args.clients, args.closed_seconds)
            server_after, client_after = server.cpu_seconds(), time.process_time()
            server_cpu = (
                (server_after - server_before) / closed.sent * 1000
                if server_before is not None and server_after is not None and closed.sent
                else None
            )
            client_cpu = (client_after - client_before) / max(closed.sent, 1) * 1000
            if scenario == "webhook":
                webhook_ok += warm.ok + closed.ok
            rows[scenario] = Row(label, scenario, closed, Result(), server_cpu, client_cpu)
        for scenario, path in SCENARIOS:
            print(f"  {label}/{scenario}: open loop at {args.rate:g} req/s ...", flush=True)
            total = int(args.rate * args.open_seconds)
            stock = signed_deliveries(instance.webhook_secret, total, f"{label}-o-{scenario}")
            rows[scenario].opened = open_loop(
                server.port, path, stock, args.rate, args.open_seconds
            )
            if scenario == "webhook":
                webhook_ok += rows[scenario].opened.ok
    _check_stored(instance.database_url, webhook_ok)
    return list(rows.values())


def _check_stored(url: str, acknowledged: int) -> None:
    """Fail loudly unless every acknowledged webhook left one SessionEvent and one Invitation."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            events = conn.scalar(select(func.count()).select_from(SessionEvent))
            invitations = conn.scalar(select(func.count()).select_from(Invitation))
    finally:
        engine.dispose()
    if not events == invitations == acknowledged:
        raise SystemExit(
            f"durability check failed: {acknowledged} webhooks acknowledged, "
            f"{events} session events and {invitations} invitations stored"
        )
    print(f"  stored: {events} session events and {invitations} invitations, one per 204")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(rows: list[Row], args: argparse.Namespace) -> list[str]:
    """Format the results table and the verdict against the goals."""
    header = (
        f"{'database':<10} {'scenario':<8} {'req/s':>7} {'ratio':>6} {'srv CPU':>8} "
        f"{'cli CPU':>8} | {'rate':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    verdicts = []
    baselines = {row.database: row.closed.throughput for row in rows if row.scenario == "bare"}
    for row in rows:
        base = baselines.get(row.database)
        ratio = row.closed.throughput / base if base else float("nan")
        opened = row.opened
        errors = (row.closed.sent - row.closed.ok) + (opened.sent - opened.ok)
        achieved = opened.sent / opened.elapsed if opened.elapsed else 0.0
        cpu = f"{row.server_cpu_ms:.2f}" if row.server_cpu_ms is not None else "n/a"
        lines.append(
            f"{row.database:<10} {row.scenario:<8} {row.closed.throughput:>7.0f} "
            f"{ratio:>6.2f} {cpu:>8} {row.client_cpu_ms:>8.2f} | {achieved:>6.0f} "
            f"{_ms(opened.percentile(50)):>7} {_ms(opened.percentile(99)):>7} "
            f"{_ms(max(opened.latencies, default=float('nan'))):>7} {errors:>6}"
        )
        if row.scenario == "webhook":
            p99 = opened.percentile(99) * 1000
            met = ratio >= GOAL_RATIO and p99 <= GOAL_P99_MS and errors == 0
            verdicts.append(
                f"{row.database}: ratio {ratio:.2f} (goal >= {GOAL_RATIO}), "
                f"p99 {p99:.1f} ms at {args.rate:g} req/s (goal <= {GOAL_P99_MS:g} ms), "
                f"errors {errors}: {'goal met' if met else 'GOAL NOT MET'}"
            )
    lines += [
        "",
        "req/s: closed-loop throughput; ratio: webhook/bare on the same server;",
        "srv/cli CPU: CPU ms per request in gunicorn (all processes) / in the load generator;",
        "rate..max: open loop, latency from each request's scheduled send time.",
        "",
        *verdicts,
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark and print the figures."""
    args = parse_args(argv)
    print("Alliance Check benchmark: POST /webhooks/standard vs a bare Flask 204\n")
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
    breakdowns: dict[str, list[tuple[str, float]]] = {}
    profiles: dict[str, str] = {}
    account = fixture_account()
    with tempfile.TemporaryDirectory(prefix="alliance-bench-") as tmp:
        for label, url in targets:
            path = Path(tmp) / label
            if url is None:
                rows += _run_one(label, path, f"sqlite:///{path / 'alliance.db'}", account, args)
                if not args.no_parts:
                    breakdowns[label] = parts.breakdown(_reopen(path, account))
                if args.profile:
                    profiles[label] = parts.profile(_reopen(path, account))
                continue
            with postgres_database(url) as bench_url:
                rows += _run_one(label, path, bench_url, account, args)
                if not args.no_parts:
                    breakdowns[label] = parts.breakdown(_reopen(path, account))
                if args.profile:
                    profiles[label] = parts.profile(_reopen(path, account))
    print()
    for line in report(rows, args):
        print(line)
    for label, steps in breakdowns.items():
        print(f"\nwhere the time goes, {label} (in-process, no HTTP, mean of 300, us per op):")
        for step, micros in steps:
            print(f"  {step:<40} {micros:>9.0f}")
    for label, text in profiles.items():
        print(f"\ncProfile, {label}, webhook requests through the Flask test client:\n{text}")
    print(f"\ntotal time {time.monotonic() - began:.0f} s")
    return 0


_INSTANCES: dict[Path, Instance] = {}


def _run_one(label: str, path: Path, url: str, account: str, args) -> list[Row]:
    instance = prepare_instance(path, url, account)
    _INSTANCES[path] = instance
    return run_database(label, instance, args)


def _reopen(path: Path, _account: str) -> Instance:
    return _INSTANCES[path]


if __name__ == "__main__":
    sys.exit(main())
