"""The alliance-check command: practices, and the README walkthrough against a real server."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from plugin.cli import main
from tests.support.data import load_json
from tests.support.ports import free_port


def test_help_lists_our_commands_and_none_of_flasks(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line}
    ours = {"serve", "worker", "dev-init", "demo", "db", "practice", "schedule", "manifest"}
    assert ours <= listed
    assert not listed & {"run", "routes", "shell"}
    for flask_option in ("--debug", "--app", "--env-file", "--version", "-A", "-e"):
        assert flask_option not in result.output


def test_practice_add_then_list(runner):
    result = runner.invoke(
        args=[
            "practice",
            "add",
            "acme",
            "--name",
            "Acme Counselling",
            "--timezone",
            "Europe/Dublin",
        ]
    )
    assert result.exit_code == 0, result.output
    listed = runner.invoke(args=["practice", "list"]).output
    assert "standard\tacme\tAcme Counselling\tEurope/Dublin\tactive\tndjson:var/ehr" in listed


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--timezone", "Mars/Olympus"], "unknown time zone"),
        (["--ehr", "https://ehr.example.org/fhir"], "alliance-check ehr connect"),
        (["--ehr", "ftp://x"], "must look like ndjson:<dir>"),
        (["--platform", "skype"], "unknown platform 'skype'"),
    ],
)
def test_practice_add_refuses_bad_input_clearly(runner, args, error):
    result = runner.invoke(args=["practice", "add", "acme", "--name", "Acme", *args])
    assert result.exit_code != 0
    assert error in result.output
    assert "no practices installed" in runner.invoke(args=["practice", "list"]).output


def test_practice_add_refuses_a_second_install_of_one_account(runner):
    runner.invoke(args=["practice", "add", "acme", "--name", "Acme"])
    result = runner.invoke(args=["practice", "add", "acme", "--name", "Acme again"])
    assert result.exit_code != 0
    assert "already installed" in result.output


def test_one_account_id_on_two_platforms_is_two_practices(runner):
    runner.invoke(args=["practice", "add", "acme", "--name", "Acme"])
    result = runner.invoke(args=["practice", "add", "acme", "--platform", "zoom", "--name", "Z"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(args=["practice", "list"]).output.splitlines()
    assert listed[0].split("\t")[:2] == ["platform", "account"]
    assert [line.split("\t")[:2] for line in listed[1:]] == [["standard", "acme"], ["zoom", "acme"]]
    # Commands that name a practice say which platform's they mean.
    missing = runner.invoke(args=["schedule", "show", "acme", "--platform", "zoom"])
    assert missing.exit_code == 0, missing.output
    unknown = runner.invoke(
        args=["ehr", "connect", "acme", "https://x", "--client-id", "c", "--platform", "zoom-typo"]
    )
    assert unknown.exit_code != 0
    assert "no practice with account 'acme' on platform 'zoom-typo'" in unknown.output


def _cli(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plugin.cli", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
        **kwargs,
    )


@pytest.fixture
def served(tmp_path):
    """Run `dev-init` then `serve`, as `make run` does, in a scratch instance folder."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_")}
    env.update(
        ALLIANCE_INSTANCE_PATH=str(tmp_path / "var"),
        ALLIANCE_PORT=str(port),
        ALLIANCE_SCHEDULER_TICK_SECONDS="1",
    )
    init = _cli(env, "dev-init")
    assert init.returncode == 0, init.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "plugin.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(f"{base}/healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield env, base, init.stdout
    server.terminate()
    server.wait(timeout=10)


def test_readme_walkthrough_make_run_demo_answer_lands_in_var_ehr(served, tmp_path):
    env, base, init_output = served
    assert "webhook secret: whsec_" in init_output
    demo = _cli(env, "demo")
    assert demo.returncode == 0, demo.stderr
    link = re.search(rf"questionnaire link: ({re.escape(base)}/q/\S+)", demo.stdout).group(1)

    browser = requests.Session()
    page = browser.get(link, timeout=5)
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = load_json("fhir/submissions.json")["mixed"]["form"]
    assert browser.post(link, data={"csrf_token": csrf, **form}, timeout=5).status_code == 200

    ehr = tmp_path / "var" / "ehr"
    for _ in range(100):
        if (ehr / "Observation.ndjson").exists():
            break
        time.sleep(0.1)
    assert len((ehr / "QuestionnaireResponse.ndjson").read_text().splitlines()) == 1
    assert len((ehr / "Observation.ndjson").read_text().splitlines()) == 4


def test_dev_init_is_idempotent_and_keeps_its_secrets(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_")}
    env["ALLIANCE_INSTANCE_PATH"] = str(tmp_path / "var")
    first, second = _cli(env, "dev-init"), _cli(env, "dev-init")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert oct((tmp_path / "var" / "alliance.toml").stat().st_mode & 0o777) == "0o600"


def test_environment_secret_wins_over_the_dev_secret(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_")}
    env["ALLIANCE_INSTANCE_PATH"] = str(tmp_path / "var")
    secret = load_json("webhooks/secrets.json")["rotated"]
    result = _cli({**env, "ALLIANCE_STANDARD_WEBHOOK_SECRET": secret}, "dev-init")
    assert f"webhook secret: {secret}" in result.stdout


def test_demo_without_a_running_service_says_how_to_start_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_")}
    env.update(ALLIANCE_INSTANCE_PATH=str(tmp_path / "var"), ALLIANCE_PORT=str(free_port()))
    _cli(env, "dev-init")
    result = _cli(env, "demo")
    assert result.returncode != 0
    assert "make run" in result.stderr
    assert Path(tmp_path / "var" / "outbox").exists() is False
