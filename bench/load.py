"""Load generation against 127.0.0.1: pre-signed deliveries, closed-loop and open-loop runs."""

import gc
import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from webhooks.standard import sign

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "webhooks" / "session_ended.json"
REQUEST_TIMEOUT_SECONDS = 10


def fixture_account() -> str:
    """Return the account id of the fixture payload (the practice the bench seeds)."""
    return json.loads(FIXTURE.read_text())["data"]["account_id"]


@dataclass(frozen=True)
class Delivery:
    """One request ready to send: the raw body and its headers, signature included."""

    body: bytes
    headers: dict[str, str]


class Pool:
    """A fixed stock of deliveries handed out once each, safely across threads."""

    def __init__(self, deliveries: list[Delivery]) -> None:
        """Hold the stock."""
        self._deliveries = deliveries
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> Delivery | None:
        """Return the next unused delivery, or None when the stock is spent."""
        with self._lock:
            if self._next >= len(self._deliveries):
                return None
            self._next += 1
            return self._deliveries[self._next - 1]

    @property
    def used(self) -> int:
        """Return how many deliveries were handed out."""
        return self._next


def signed_deliveries(secret: str, count: int, tag: str) -> Pool:
    """Sign `count` copies of the fixture, each with a unique webhook-id and session_id.

    Signing happens here, before any timed loop, so the client's HMAC is never measured.
    Ids are zero-padded so every body has the same size.
    """
    document = json.loads(FIXTURE.read_text())
    now = datetime.now(UTC)
    deliveries = []
    for i in range(count):
        document["data"]["session_id"] = f"bench-{tag}-{i:07d}"
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = sign(secret, f"msg_bench_{tag}_{i:07d}", now, body)
        headers["Content-Type"] = "application/json"
        deliveries.append(Delivery(body, headers))
    return Pool(deliveries)


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Keep the load generator's own garbage collector out of the measured latencies.

    A full collection over the pre-signed stock stalls every sender thread for tens of ms,
    which would be charged to the server. Garbage made during one bounded run is small.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects after an error."""

    def __init__(self, port: int) -> None:
        """Open lazily on first send."""
        self._port = port
        self._conn: http.client.HTTPConnection | None = None

    def send(self, path: str, delivery: Delivery) -> int:
        """POST the delivery and return the status, or 0 on a connection error."""
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self._port, timeout=REQUEST_TIMEOUT_SECONDS
                )
            self._conn.request("POST", path, body=delivery.body, headers=delivery.headers)
            response = self._conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.close()
            return 0

    def close(self) -> None:
        """Close the connection if open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Result:
    """What one run measured; latencies are in seconds."""

    sent: int = 0
    ok: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Return successful requests per second."""
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """Return the q-th percentile latency (nearest rank), in seconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, round(q / 100 * len(ordered)))
        return ordered[min(rank, len(ordered)) - 1]

    def record(self, status: int, latency: float, expected: int) -> None:
        """Count one response (call under the caller's lock)."""
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == expected:
            self.ok += 1
            self.latencies.append(latency)


def closed_loop(
    port: int, path: str, pool: Pool, clients: int, seconds: float, expected: int = 204
) -> Result:
    """Run `clients` threads that each send back-to-back until `seconds` pass or stock ends."""
    result = Result()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def run() -> None:
        client = Client(port)
        start.wait()
        while time.perf_counter() < deadline[0]:
            delivery = pool.take()
            if delivery is None:
                break
            began = time.perf_counter()
            status = client.send(path, delivery)
            latency = time.perf_counter() - began
            with lock:
                result.record(status, latency, expected)
        client.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    with quiet_gc():
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        deadline[0] = began + seconds
        start.wait()
        for thread in threads:
            thread.join(timeout=seconds + 2 * REQUEST_TIMEOUT_SECONDS)
        result.elapsed = time.perf_counter() - began
    return result


def open_loop(
    port: int,
    path: str,
    pool: Pool,
    rate: float,
    seconds: float,
    senders: int = 32,
    expected: int = 204,
) -> Result:
    """Send rate*seconds requests on a fixed schedule, whatever the server's pace.

    Latency runs from each request's scheduled time, not from when a sender got to it, so a
    slow server cannot hide its queueing (no coordinated omission) as long as senders suffice.
    """
    total = int(rate * seconds)
    result = Result()
    lock = threading.Lock()
    counter = [0]
    start = threading.Barrier(senders + 1)
    origin = [0.0]

    def run() -> None:
        client = Client(port)
        start.wait()
        while True:
            with lock:
                index = counter[0]
                counter[0] += 1
            if index >= total:
                break
            delivery = pool.take()
            if delivery is None:
                break
            scheduled = origin[0] + index / rate
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            status = client.send(path, delivery)
            latency = time.perf_counter() - scheduled
            with lock:
                result.record(status, latency, expected)
        client.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(senders)]
    with quiet_gc():
        for thread in threads:
            thread.start()
        origin[0] = time.perf_counter() + 0.05
        start.wait()
        for thread in threads:
            thread.join(timeout=seconds + 2 * REQUEST_TIMEOUT_SECONDS + 1)
        result.elapsed = time.perf_counter() - origin[0]
    return result
