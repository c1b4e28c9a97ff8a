"""`serve` under slow clients: bodies that stall mid-way neither freeze it nor stay open.

Runs the real `alliance-check serve` (gunicorn, gthread) on 127.0.0.1 and talks raw sockets
to it, as a client on a bad network or a slowloris attacker would.
"""

import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.support.ports import free_port

STALLED = 6
BODY_TIMEOUT = 2


@pytest.fixture
def server(tmp_path):
    """Run `dev-init` then `serve` in a scratch instance folder; yield its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_")}
    env.update(
        ALLIANCE_INSTANCE_PATH=str(tmp_path / "var"),
        ALLIANCE_PORT=str(port),
        ALLIANCE_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    )
    command = [sys.executable, "-m", "plugin.cli"]
    init = subprocess.run([*command, "dev-init"], env=env, capture_output=True, timeout=60)
    assert init.returncode == 0, init.stderr
    process = subprocess.Popen(
        [*command, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=10)


def stall_mid_body(port: int) -> socket.socket:
    """Open a connection, send a webhook's headers and the first byte of its body, stop."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST /webhooks/standard HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    return sock


def test_stalled_bodies_delay_no_one_and_are_dropped(server):
    stalled = [stall_mid_body(server) for _ in range(STALLED)]
    time.sleep(0.5)  # each is now being read by a server thread
    try:
        started = time.monotonic()
        response = requests.get(f"http://127.0.0.1:{server}/healthz", timeout=5)
        took = time.monotonic() - started
        assert response.status_code == 200
        assert took < 1, f"/healthz took {took:.1f}s behind {STALLED} stalled bodies"

        # Each stalled body is given up after the timeout: a 408, then the server closes.
        deadline = time.monotonic() + BODY_TIMEOUT + 5
        for sock in stalled:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            assert received.startswith(b"HTTP/1.1 408"), received[:100]
    finally:
        for sock in stalled:
            sock.close()
