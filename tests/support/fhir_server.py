"""A real FHIR R4 server (Medplum's FhirRouter, strict validation) on 127.0.0.1 for the tests.

The server lives in tests/support/fhir_server/ (server.mjs, see its README.md). Use:

    with fhir_server.running("--no-qr-create") as ehr:
        requests.get(f"{ehr.base_url}/metadata")
        ehr.fail_next(2, status=503, retry_after=1)
        ehr.stats()["resources"]

`ensure_installed()` runs `npm ci` once (tests/support/npm.py; `start()` calls it); after that no
network is needed.
"""

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import npm

SERVER_DIR = Path(__file__).parent / "fhir_server"
START_TIMEOUT = 30.0
_LISTENING = re.compile(r"^listening (http://127\.0\.0\.1:(\d+)\S*)", re.MULTILINE)


def trusting(oauth) -> tuple[str, ...]:
    """Flags that make the server advertise and require tokens from the test OAuth server."""
    return (
        "--token-endpoint", oauth.token_endpoint, "--require-bearer",
        "--issuer-jwks", oauth.jwks_url, "--token-issuer", oauth.issuer,
    )  # fmt: skip


class FhirServerError(RuntimeError):
    """The test FHIR server could not be installed or started."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FhirServerError(f"{name} is not on PATH; the FHIR test server needs Node.js >= 20")
    return path


@functools.cache
def node_flags() -> tuple[str, ...]:
    """Return the node options Medplum needs: Node 20 has WebSocket only behind a flag."""
    version = subprocess.run(
        [_tool("node"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        raise FhirServerError(f"Node.js {version} is too old; the FHIR test server needs >= 20")
    return ("--experimental-websocket",) if major < 22 else ()


def ensure_installed() -> None:
    """Install the server's pinned npm packages unless node_modules already matches its lock."""
    try:
        npm.ensure_installed(SERVER_DIR)
    except npm.NpmInstallError as exc:
        raise FhirServerError(str(exc)) from exc


class FhirServer:
    """A running server: its base URL, the test-control calls, and stop()."""

    def __init__(self, process: subprocess.Popen, base_url: str, log_path: Path):
        self.process = process
        self.base_url = base_url
        self.port = int(re.match(r"http://127\.0\.0\.1:(\d+)", base_url).group(1))
        self.origin = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path

    def _control(self, method: str, path: str, body: dict | None = None) -> dict:
        response = requests.request(method, self.origin + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def control(self, **command) -> dict:
        """POST /__control with command, e.g. fail=2, status=503, retryAfter=1, reset=True."""
        return self._control("POST", "/__control", command)

    def fail_next(
        self,
        count: int,
        status: int = 503,
        retry_after: int | str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> dict:
        """Make the next count FHIR requests (optionally only method/path) answer status."""
        command = {"fail": count, "status": status, "method": method, "path": path}
        if retry_after is not None:
            command["retryAfter"] = retry_after
        return self.control(**{k: v for k, v in command.items() if v is not None})

    def expire_tokens(self) -> dict:
        """Reject every bearer token accepted so far (once a client refreshes, it works again)."""
        return self.control(expireTokens=True)

    def reset(self) -> dict:
        """Forget all resources, counters, injected failures and token state."""
        return self.control(reset=True)

    def go_down(self, seconds: float) -> dict:
        """Stop listening and drop every connection for `seconds`, keeping what is stored."""
        return self.control(down=seconds)

    def stats(self) -> dict:
        """Return {"requests", "responses", "log", "resources", "duplicates", "pendingFailures"}."""
        return self._control("GET", "/__control/stats")

    def log(self) -> str:
        """Return what the server wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()

    def __enter__(self) -> "FhirServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(port: int = 0, *flags: str, timeout: float = START_TIMEOUT) -> FhirServer:
    """Start server.mjs on 127.0.0.1:port (0 = any free port) with flags; wait for /metadata.

    Flags are server.mjs's, e.g. start(0, "--no-transaction", "--token-endpoint", url).
    """
    ensure_installed()
    fd, log_name = tempfile.mkstemp(prefix="fhir-server-", suffix=".log")
    log_path = Path(log_name)
    command = [_tool("node"), *node_flags(), "server.mjs", "--port", str(port), *flags]
    env = {k: v for k, v in os.environ.items() if k != "FHIR_SERVER_FLAGS"}
    with os.fdopen(fd, "wb") as log:
        # The log file, not a pipe: nobody reads the pipe, and a full pipe would block node.
        process = subprocess.Popen(
            command, cwd=SERVER_DIR, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + timeout
    try:
        base_url = _wait_listening(process, log_path, deadline)
        server = FhirServer(process, base_url, log_path)
        _wait_metadata(server, process, deadline)
    except BaseException as exc:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = log_path.read_text(errors="replace")
        log_path.unlink(missing_ok=True)
        if isinstance(exc, FhirServerError):
            raise FhirServerError(f"{exc}; its output:\n{output[-4000:]}") from None
        raise
    return server


def _wait_listening(process: subprocess.Popen, log_path: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise FhirServerError(f"FHIR server exited with {process.returncode}")
        time.sleep(0.02)
    raise FhirServerError(f"FHIR server did not start listening in {START_TIMEOUT:.0f} s")


def _wait_metadata(server: FhirServer, process: subprocess.Popen, deadline: float) -> None:
    url = f"{server.base_url}/metadata"
    while True:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            raise FhirServerError(f"FHIR server exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise FhirServerError(f"{url} did not answer in {START_TIMEOUT:.0f} s")
        time.sleep(0.05)


@contextlib.contextmanager
def running(*flags: str, port: int = 0, timeout: float = START_TIMEOUT) -> Iterator[FhirServer]:
    """Run a server for the duration of a with block."""
    server = start(port, *flags, timeout=timeout)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ehr(oauth_server):
    """A FHIR server that trusts the test OAuth server and enforces SMART scopes.

    Modules that need other server flags define their own `ehr`.
    """
    with running(*trusting(oauth_server), "--enforce-scopes") as server:
        yield server
