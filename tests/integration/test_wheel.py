"""The built wheel runs on its own: installed from the lock into a fresh venv, outside the repo.

Slow (about a minute: a build, a venv, the locked dependencies from pip's cache), and still part
of `make test`, because a checkout hides every file the wheel forgot to ship.
"""

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from alembic.script import ScriptDirectory

from tests.support.data import load_json
from tests.support.ports import free_port

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    """Run a command to completion, failing the test with its output if it fails."""
    result = subprocess.run(command, text=True, capture_output=True, check=False, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def wait_for(url: str, seconds: float = 30) -> None:
    """Wait until something answers at url."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail(f"nothing answered at {url}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the wheel, install it with the locked dependencies into a new venv; return its bin."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp / "dist", ROOT)
    (wheel,) = (tmp / "dist").glob("alliance_check-*.whl")
    # The venv has no pip of its own: this pip installs into it, from pip's cache when it can.
    run(sys.executable, "-m", "venv", "--without-pip", tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "--quiet")
    run(*pip, "--require-hashes", "-r", ROOT / "requirements.lock")
    run(*pip, "--no-deps", wheel)
    return tmp / "venv" / "bin"


@pytest.fixture(scope="module")
def served(installed, tmp_path_factory):
    """Run `dev-init` then `serve` from a folder outside the repo, as an operator would."""
    site = tmp_path_factory.mktemp("site")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLIANCE_", "PYTHON"))}
    env.update(ALLIANCE_PORT=str(port), ALLIANCE_SCHEDULER_TICK_SECONDS="1")
    cli = str(installed / "alliance-check")
    run(cli, "dev-init", cwd=site, env=env, timeout=60)
    server = subprocess.Popen(
        [cli, "serve"], cwd=site, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/healthz")
        yield site, env, cli, base
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_code_comes_from_the_venv_not_the_checkout(installed, tmp_path):
    where = run(
        installed / "python", "-c", "import plugin; print(plugin.__file__)", cwd=tmp_path
    ).stdout
    assert "site-packages" in where and str(ROOT) not in where


def test_instance_data_goes_to_the_working_directory_migrated_to_head(served):
    site = served[0]
    with sqlite3.connect(site / "var" / "alliance.db") as db:
        (version,) = db.execute("select version_num from alembic_version").fetchone()
    head = ScriptDirectory(str(ROOT / "plugin" / "migrations")).get_current_head()
    assert version == head


def test_the_demo_link_serves_the_bundled_questionnaire_and_takes_answers(served):
    site, env, cli, base = served
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    # The demo's webhook is checked against the packaged JSON Schema before it is accepted.
    demo = run(cli, "demo", cwd=site, env=env, timeout=60).stdout
    link = re.search(rf"questionnaire link: ({re.escape(base)}/q/\S+)", demo).group(1)
    browser = requests.Session()
    page = browser.get(link, timeout=5)
    assert page.status_code == 200
    assert "Today we spent our time on the things I care about most." in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = load_json("fhir/submissions.json")["mixed"]["form"]
    assert browser.post(link, data={"csrf_token": csrf, **form}, timeout=5).status_code == 200
    written = site / "var" / "ehr" / "QuestionnaireResponse.ndjson"
    deadline = time.monotonic() + 20
    while not written.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(written.read_text().splitlines()) == 1


def test_static_css_and_the_spanish_catalogue_are_served(served):
    base = served[3]
    css = requests.get(f"{base}/static/survey.css", timeout=5)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    missing = requests.get(f"{base}/q/no-such-link", headers={"Accept-Language": "es"}, timeout=5)
    assert missing.status_code == 404
    assert "Enlace no encontrado" in missing.text


def test_manifest_is_printed_against_the_packaged_schema(served):
    site, env, cli, _ = served
    printed = run(cli, "manifest", "--base-url", "https://alliance.example.org", cwd=site, env=env)
    assert "https://alliance.example.org/webhooks/standard" in printed.stdout
