"""GET /metrics under gunicorn with two web processes and a separate worker: every scrape agrees.

Runs `alliance-check dev-init`, then gunicorn (2 processes) and `alliance-check worker` on the
scratch instance, all sharing one PROMETHEUS_MULTIPROC_DIR as docs/deploy.md says. Webhooks are
counted by whichever web process took them, the EHR write by the worker; each scrape, whichever
process answers it, must give the sums of all three.
"""

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime

import pytest
import requests

from tests.support.backlog import FULL
from tests.support.data import session_ended
from tests.support.metrics import bearer, parse, value
from tests.support.ports import free_port
from webhooks.standard import sign

TOKEN = "metrics-token-for-tests-0123456789"
WEBHOOKS = 4
SCRAPES = 8
TIMEOUT = 60


def wait_for(check, what: str):
    """Poll check() until it returns something truthy; return it, or fail after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def instance(tmp_path):
    """Run dev-init, then gunicorn with two processes and a worker; yield (base URL, folder)."""
    port = free_port()
    folder = tmp_path / "var"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_")}
    env.update(
        ALLIANCE_INSTANCE_PATH=str(folder),
        ALLIANCE_PORT=str(port),
        ALLIANCE_METRICS_TOKEN=TOKEN,
        ALLIANCE_SCHEDULER_TICK_SECONDS="0.5",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    cli = [sys.executable, "-m", "plugin.cli"]
    init = subprocess.run([*cli, "dev-init"], env=env, capture_output=True, timeout=60)
    assert init.returncode == 0, init.stderr
    web = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "2"]
    web += ["-b", f"127.0.0.1:{port}", "plugin:create_app()"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for command in (web, [*cli, "worker"])
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/healthz"), "gunicorn")
        yield base, folder
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or still importing the app
        return False


def post_webhook(base: str, secret: str, session_id: str) -> int:
    """Sign and post one session-ended delivery for the demo practice."""
    body = json.dumps(session_ended(session_id, email=f"{session_id}@example.org")).encode()
    headers = sign(secret, f"msg_{session_id}", datetime.now(UTC), body)
    headers["Content-Type"] = "application/json"
    return requests.post(f"{base}/webhooks/standard", data=body, headers=headers, timeout=10)


def answer(base: str, folder) -> None:
    """Open the first emailed link and send the answers, as the client's browser would."""
    mail = wait_for(lambda: sorted((folder / "outbox").glob("*.eml")), "an invitation")[0]
    link = re.search(re.escape(base) + r"/q/[A-Za-z0-9_-]+", mail.read_text()).group(0)
    with requests.Session() as browser:
        page = browser.get(link, timeout=10).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = browser.post(link, data={"csrf_token": token, **FULL}, timeout=10)
    assert response.status_code == 200


def test_every_scrape_sums_every_process(instance):
    base, folder = instance
    secret = tomllib.loads((folder / "alliance.toml").read_text())["STANDARD_WEBHOOK_SECRET"]
    for n in range(WEBHOOKS):
        assert post_webhook(base, secret, f"gunicorn-{n}").status_code == 204
    answer(base, folder)
    wait_for(lambda: (folder / "ehr" / "QuestionnaireResponse.ndjson").exists(), "the write")

    seen = set()
    for _ in range(SCRAPES):
        # A new connection each time, so either web process may answer.
        response = requests.get(
            f"{base}/metrics", headers=bearer(TOKEN) | {"Connection": "close"}, timeout=10
        )
        assert response.status_code == 200
        samples = parse(response.text)
        stored = value(samples, "alliance_webhooks_total", platform="standard", result="stored")
        written = value(samples, "alliance_ehr_writes_total", outcome="written")
        seen.add((stored, written))
    assert seen == {(WEBHOOKS, 1)}
