"""`python -m bench.launch`: launch to rendered page, against the page's two bare FHIR searches.

One client with 50 answered sessions sits in the strict FHIR test server; the authorization
server is tests/support/oauth_server.py. Each launch is timed from `GET /launch?iss&launch`
through the EHR's authorization endpoint, the callback (code exchange) and the page (two
patient-scoped searches, the rule, the chart). The baseline is the same two searches, sent
with `requests` and a patient token, to the same server in the same run. The app runs
in-process (Flask's test client); the EHR's endpoints are real HTTP.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.server import prepare_instance
from fhir_mappings.instrument import load_bundled
from plugin import create_app
from plugin.ehr.keys import generate
from plugin.therapist.history import search_params
from tests.support import fhir_server
from tests.support.launch import (
    LAUNCH_CLIENT,
    LAUNCH_SCOPES,
    REDIRECT_URI,
    follow_launch,
    launch_flags,
    patient_token,
    seed,
    session_bundles,
)
from tests.support.oauth_server import start_oauth_server

PATIENT = "bench1"
# A steady client with one rupture and its repair, repeated: the rule has work to do.
PATTERN = ["3", "3", "3", "3", "3", "1", "2", "3", "3", "4"]


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def bare_searches(http: requests.Session, base: str, token: str) -> None:
    """Send the page's two searches, nothing else."""
    for resource_type, params in search_params(PATIENT, load_bundled()):
        reply = http.get(
            f"{base}/{resource_type}",
            params=params,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text[:500]


def main(argv: list[str] | None = None) -> int:
    """Seed the history, time both sides, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.launch", description=__doc__)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--launches", type=int, default=40)
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory() as tmp,
        start_oauth_server() as oauth,
        fhir_server.running(*launch_flags(oauth)) as ehr,
    ):
        path = Path(tmp) / "var"
        instance = prepare_instance(path, f"sqlite:///{path / 'bench.db'}", "demo")
        app = create_app(instance.config())
        with app.extensions["db"].sessions() as session:
            key = generate(session, app.extensions["vault"], "ES384")
        oauth.register_client(
            "alliance",
            jwks={"keys": [key.public_jwk]},
            scopes="system/QuestionnaireResponse.c system/Observation.c",
        )
        callback = app.config["PUBLIC_BASE_URL"].rstrip("/") + "/launch/callback"
        oauth.register_launch_client(LAUNCH_CLIENT, [callback, REDIRECT_URI], LAUNCH_SCOPES)
        result = app.test_cli_runner().invoke(
            args=[
                *("ehr", "connect", "demo", ehr.base_url, "--client-id", "alliance"),
                *("--launch-client-id", LAUNCH_CLIENT),
            ]
        )
        assert result.exit_code == 0, result.output
        history = [{"option": PATTERN[n % len(PATTERN)]} for n in range(args.sessions)]
        system = app.config["FHIR_IDENTIFIER_SYSTEM"]
        seed(ehr.base_url, oauth, session_bundles(history, PATIENT, system))

        client = app.test_client()
        token = patient_token(oauth, ehr.base_url, oauth.register_launch(PATIENT, ehr.base_url))
        launches, bare = [], []
        with requests.Session() as http:
            for _ in range(3):  # warm both paths: imports, connection pools, JIT of node
                warm = oauth.register_launch(PATIENT, ehr.base_url)
                follow_launch(client, ehr.base_url, warm)
                bare_searches(http, ehr.base_url, token)
            # Interleaved, so both sides see the same machine load.
            for _ in range(args.launches):
                launch = oauth.register_launch(PATIENT, ehr.base_url)
                started = time.perf_counter()
                done = follow_launch(client, ehr.base_url, launch)
                launches.append(time.perf_counter() - started)
                assert done.statuses == [302, 302, 303, 200], done.statuses
                page = done.response.get_data(as_text=True)
                assert f"{args.sessions} answered sessions" in page
                started = time.perf_counter()
                bare_searches(http, ehr.base_url, token)
                bare.append(time.perf_counter() - started)

    ms = lambda seconds: seconds * 1000  # noqa: E731
    print(f"{args.sessions} sessions of history, {args.launches} launches, interleaved")
    print(f"{'side':28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, values in (("launch to rendered page", launches), ("two bare FHIR searches", bare)):
        print(
            f"{name:28} {ms(statistics.median(values)):8.1f} "
            f"{ms(percentile(values, 95)):8.1f} {ms(max(values)):8.1f}"
        )
    ratio = statistics.median(launches) / statistics.median(bare)
    print(f"ratio (p50 launch / p50 bare searches): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
