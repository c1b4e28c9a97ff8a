"""Drain benchmark: a backlog of EHR writes into the local FHIR server, against a plain loop.

    python -m bench.ehr_drain [--writes 5000]

Both sides post the same transaction Bundles, one at a time, to the same strict FHIR
server (tests/support/fhir_server) with a real SMART token (tests/oauth_server). The baseline is a
bare `requests` loop; the product is `write_due` as the worker runs it: claim, lease,
decrypt, post, record, commit, per row. Each runs in its own process so its peak RSS is
its own; the baseline's process (bench.post_loop) imports nothing but requests.
The ratio is baseline time / product time (1.0 = no overhead).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import func, select

from bench.post_loop import peak_rss_mb
from bench.server import prepare_instance
from plugin import create_app
from plugin.core.models import EhrConnection, EhrWrite, Practice
from plugin.ehr.drain import WriteSettings, write_due
from plugin.ehr.gateway import EhrClients
from plugin.ehr.keys import generate, load_signer
from plugin.ehr.smart import fetch_token
from tests.support import fhir_server
from tests.support.backlog import queue_writes
from tests.support.oauth_server import start_oauth_server


def run_worker(instance: str) -> dict:
    """Drain every queued write once, as the worker would; report time and peak RSS."""
    app = create_app({"INSTANCE_PATH": instance})
    sessions, vault = app.extensions["db"].sessions, app.extensions["vault"]
    with sessions() as session:
        backlog = session.scalar(select(func.count()).select_from(EhrWrite))
    settings = replace(WriteSettings.from_config(app.config), batch=backlog)
    started = time.perf_counter()
    with requests.Session() as http, app.app_context():
        clients = EhrClients(
            Path(instance).parent,
            app.extensions["smart_tokens"],
            lambda: load_signer(sessions, vault),
            http,
        )
        written = write_due(sessions, vault, clients.writer_for, settings, datetime.now(UTC))
    return {"seconds": time.perf_counter() - started, "written": written, "rss_mb": peak_rss_mb()}


def _child(module: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", module, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Prepare the backlog, run both sides, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.ehr_drain", description=__doc__)
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker)))
        return 0

    with tempfile.TemporaryDirectory() as tmp, start_oauth_server() as oauth:
        flags = fhir_server.trusting(oauth)
        with fhir_server.running(*flags) as ehr:
            path = Path(tmp) / "var"
            instance = prepare_instance(path, f"sqlite:///{path / 'bench.db'}", "demo")
            app = create_app(instance.config())
            sessions, vault = app.extensions["db"].sessions, app.extensions["vault"]
            runner = app.test_cli_runner()
            with sessions() as session:
                key = generate(session, vault, "ES384")
            oauth.register_client("alliance", jwks={"keys": [key.public_jwk]})
            result = runner.invoke(
                args=["ehr", "connect", "demo", ehr.base_url, "--client-id", "alliance"]
            )
            assert result.exit_code == 0, result.output
            print(f"queueing {args.writes} writes ...", flush=True)
            with sessions() as session:
                practice = session.scalar(select(Practice))
                queue_writes(session, practice, vault, args.writes)
                bundles = [vault.open(w.bundle) for w in session.scalars(select(EhrWrite))]
                connection = session.scalar(select(EhrConnection))
            # Only once that session is closed: on SQLite it holds the write lock until then.
            token = fetch_token(
                connection.client_id,
                connection.token_endpoint,
                connection.scope,
                load_signer(sessions, vault),
            )
            bundles_file = Path(tmp) / "bundles.ndjson"
            bundles_file.write_text("\n".join(json.dumps(b) for b in bundles))

            print("baseline: plain requests loop ...", flush=True)
            ehr.reset()
            baseline = _child(
                "bench.post_loop", str(bundles_file), ehr.base_url, token["access_token"]
            )
            print("product: write_due, as the worker runs it ...", flush=True)
            ehr.reset()
            product = _child("bench.ehr_drain", "--worker", str(path))
            stored = ehr.stats()["resources"]

    assert product["written"] == args.writes, product
    assert stored == {"QuestionnaireResponse": args.writes, "Observation": 4 * args.writes}
    ratio = baseline["seconds"] / product["seconds"]
    print()
    print(f"{'side':10} {'writes':>7} {'seconds':>8} {'writes/s':>9} {'peak RSS MB':>12}")
    for name, side in (("baseline", baseline), ("worker", product)):
        print(
            f"{name:10} {side['written']:7d} {side['seconds']:8.1f} "
            f"{side['written'] / side['seconds']:9.1f} {side['rss_mb']:12.1f}"
        )
    print(
        f"\nratio {ratio:.2f} (baseline time / worker time; goal >= 0.8): "
        f"{'met' if ratio >= 0.8 else 'NOT MET'}"
    )
    print(f"stored exactly once: {stored}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
