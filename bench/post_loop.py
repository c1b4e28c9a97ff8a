"""The drain baseline: post each bundle in a file with a plain requests loop.

    python -m bench.post_loop BUNDLES_NDJSON FHIR_BASE TOKEN

Kept apart from bench.ehr_drain so its process imports nothing but requests, and its
peak RSS is that of a bare loop.
"""

import json
import sys
import time
from pathlib import Path

import requests


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child started
    by a large parent would report the parent's peak.
    """
    status = Path("/proc/self/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        / 1024
    )


def main(bundles_file: str, url: str, token: str) -> None:
    """Post every bundle in order; print time, count and peak RSS as JSON."""
    bundles = [json.loads(line) for line in Path(bundles_file).read_text().splitlines()]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    started = time.perf_counter()
    with requests.Session() as http:
        for bundle in bundles:
            http.post(url, json=bundle, headers=headers, timeout=60).raise_for_status()
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "written": len(bundles),
                "rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
