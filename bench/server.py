"""Prepare an instance folder and database, and run gunicorn on it as a subprocess."""

import argparse
import base64
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests
from cryptography.fernet import Fernet
from psycopg import sql
from sqlalchemy.engine import make_url

from plugin import create_app
from plugin.core.db import database, upgrade
from plugin.core.logs import JsonFormatter
from plugin.install.practices import add_practice

ROOT = Path(__file__).resolve().parents[1]
BENCH_DATABASE = "alliance_bench"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class Instance:
    """What the load generator needs to know about a prepared instance."""

    path: Path
    settings: dict = field(repr=False)  # what alliance.toml holds, secrets included

    @property
    def database_url(self) -> str:
        """Return the instance's database URL."""
        return self.settings["DATABASE_URL"]

    @property
    def webhook_secret(self) -> str:
        """Return the Standard Webhooks secret deliveries are signed with."""
        return self.settings["STANDARD_WEBHOOK_SECRET"]

    def config(self) -> dict:
        """Return create_app() overrides for this process: beat any ALLIANCE_* in its env."""
        return {"INSTANCE_PATH": str(self.path), **self.settings}

    def env(self) -> dict[str, str]:
        """Return the environment for a child process that runs on this instance."""
        # Only our settings reach it: a stray ALLIANCE_DATABASE_URL in the caller's
        # environment would otherwise beat the instance file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_")}
        env["ALLIANCE_INSTANCE_PATH"] = str(self.path)
        return env


def prepare_instance(path: Path, database_url: str, account_id: str) -> Instance:
    """Write fresh secrets to <path>/alliance.toml, migrate the database, seed one practice."""
    path.mkdir(parents=True, exist_ok=True)
    instance = Instance(
        path=path,
        settings={
            "SECRET_KEY": secrets.token_urlsafe(32),
            "SECRET_KEYS": Fernet.generate_key().decode(),
            "STANDARD_WEBHOOK_SECRET": "whsec_"
            + base64.b64encode(secrets.token_bytes(24)).decode(),
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "INFO",
        },
    )
    # The gunicorn workers read this file (their environment holds no other ALLIANCE_*).
    lines = ["# Written by `python -m bench` for one run; thrown away afterwards."]
    lines += [f"{key} = {json.dumps(value)}" for key, value in instance.settings.items()]
    settings_file = path / "alliance.toml"
    settings_file.touch(mode=0o600)
    settings_file.write_text("\n".join(lines) + "\n")
    app = create_app(instance.config())
    with app.app_context():
        engine = database().engine
        upgrade(engine)
        with database().sessions() as session:
            add_practice(
                session,
                account_id=account_id,
                name="Bench Practice",
                timezone="America/New_York",
                ehr_target="ndjson:ehr",
                root=path,
            )
        engine.dispose()
    return instance


@contextmanager
def postgres_database(url: str, database: str = BENCH_DATABASE) -> Iterator[str]:
    """Create the dedicated `database` (alliance_bench) on `url`'s server, yield its URL, drop it.

    Only the server, user and password of `url` are used: the database it names (e.g. the
    test database) is never touched.
    """
    server = make_url(url)
    # CREATE/DROP DATABASE run from the maintenance database, as psql would.
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    name = sql.Identifier(database)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        yield server.set(database=database).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


@contextmanager
def bench_database(label: str, server_url: str | None, folder: Path) -> Iterator[str | None]:
    """Yield one run's database URL: SQLite under folder when server_url is None, else a
    throw-away PostgreSQL database on that server; None (said on stdout) if it cannot be made."""
    if server_url is None:
        yield f"sqlite:///{folder / 'alliance.db'}"
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database(server_url))
        except psycopg.Error as exc:
            print(f"  {label}: skipped, cannot create the bench database: {exc}")
            url = None
        yield url


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """Add --postgres and --no-sqlite, which every benchmark takes."""
    parser.add_argument(
        "--postgres",
        default=os.environ.get("ALLIANCE_TEST_DATABASE_URL"),
        metavar="URL",
        help="also run on PostgreSQL, in a throw-away database alliance_bench on this server "
        "(default: $ALLIANCE_TEST_DATABASE_URL)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")


@contextmanager
def log_to(folder: Path) -> Iterator[None]:
    """Send this process's logs to a file, as JSON like the server's, while the block runs.

    create_app() keeps a root handler that is already there, so the in-process timings pay
    for the same log lines as gunicorn does, and the terminal stays readable.
    """
    handler = logging.FileHandler(folder / "bench.log")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        handler.close()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """One gunicorn master (gthread workers) serving bench.app on 127.0.0.1."""

    # What gunicorn loads; a class attribute so an experiment can serve a variant.
    app_spec = "bench.app:create_bench_app()"

    def __init__(self, instance: Instance, workers: int, threads: int) -> None:
        """Remember the settings; start() launches the process."""
        self.instance = instance
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.log_path = instance.path / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """Return the server's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch gunicorn and wait until /healthz answers, or raise with the log's tail."""
        env = self.instance.env()
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--keep-alive",
            "30",
            "--log-level",
            "warning",
            self.app_spec,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            if self._wait_until_ready():
                return
        except BaseException:
            self.stop()
            raise
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"gunicorn did not start; its log ends with:\n{tail}")

    def _wait_until_ready(self) -> bool:
        """Poll /healthz until it answers 200 (True), or the process dies or time runs out."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                # The master listens before the workers have imported the app: allow time.
                if requests.get(f"{self.base_url}/healthz", timeout=5).status_code == 200:
                    # Each worker imports the app on its own; give the others a moment too.
                    time.sleep(1.0)
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Stop the master we started (it stops its workers), killing it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def kill(self) -> list[int]:
        """Kill -9 the master and its workers at once, as a crash would; return their pids."""
        if self.process is None or self.process.poll() is not None:
            return []
        pids = [self.process.pid, *children(self.process.pid)]
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        return pids

    def cpu_seconds(self) -> float | None:
        """Return user+system CPU seconds of the master and its workers so far (Linux only)."""
        if self.process is None:
            return None
        return cpu_seconds([self.process.pid, *children(self.process.pid)])

    def __enter__(self) -> "Gunicorn":
        """Start on entry."""
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Always stop on exit."""
        self.stop()


class Worker:
    """One `alliance-check worker` process on the instance, which can be killed and restarted."""

    def __init__(self, instance: Instance, name: str) -> None:
        """Remember where it runs; start() launches it."""
        self.instance, self.name = instance, name
        self.process = None

    def start(self) -> None:
        """Start the worker, its output appended to <instance>/<name>.log."""
        with (self.instance.path / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "plugin.cli", "worker"],
                cwd=ROOT,
                env=self.instance.env(),
                stdout=log,
                stderr=log,
            )

    def kill(self) -> int:
        """Kill -9 the worker, as a crash would; return its pid."""
        self.process.kill()
        self.process.wait(timeout=15)
        return self.process.pid

    def stop(self) -> None:
        """Stop it gently (the scheduler finishes its tick)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def cpu_seconds(pids: list[int]) -> float | None:
    """Return user+system CPU seconds the processes used so far; None if one is gone (Linux)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # After the ")" closing the command name: utime and stime are fields 12 and 13.
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_busy_seconds() -> float | None:
    """Return CPU seconds all processes on this machine spent busy since boot (Linux only)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


def _process_stats() -> Iterator[tuple[int, str]]:
    """Yield (pid, contents of /proc/<pid>/stat) for every process still there."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text()
        except OSError:
            continue


def postgres_cpu_seconds(database: str | None = None) -> float:
    """Return CPU seconds used so far by the running PostgreSQL server processes (Linux only).

    With `database`, only the backends serving it (named in their title, "postgres: ... user
    database host"), so that other work on a shared server is left out.
    """
    total = 0.0
    for pid, stat in _process_stats():
        command, _, rest = stat.partition(" (")[2].rpartition(")")
        if command != "postgres":
            continue
        if database is not None:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if database not in title.split():
                continue
        fields = rest.split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children(pid: int) -> list[int]:
    """Return the pids whose parent is `pid`, from /proc."""
    return [
        child for child, stat in _process_stats() if int(stat.rsplit(")", 1)[1].split()[1]) == pid
    ]
