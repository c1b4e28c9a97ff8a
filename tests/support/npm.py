"""Install the tests' pinned npm packages (`npm ci` of a folder with a package-lock.json).

Each folder is installed once, under a file lock, and again only when its lock file changes;
after that no network is needed. `python -m tests.support.npm` installs every folder
(`make test` runs it); the fixtures that need a folder also call `ensure_installed(folder)`.
"""

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

SUPPORT = Path(__file__).parent
# The test FHIR server (Medplum) and axe-core for the browser tests.
FOLDERS = (SUPPORT / "fhir_server", SUPPORT / "browser")
STAMP_NAME = ".alliance-check-lock.sha256"


class NpmInstallError(RuntimeError):
    """npm is missing, or `npm ci` failed in a folder."""


def _npm() -> str:
    path = shutil.which("npm")
    if path is None:
        raise NpmInstallError("npm is not on PATH; the tests need Node.js >= 20 and npm")
    return path


def _installed(stamp: Path, digest: str) -> bool:
    return stamp.exists() and stamp.read_text().strip() == digest


def ensure_installed(folder: Path) -> None:
    """Run `npm ci` in folder unless its node_modules already matches its package-lock.json."""
    folder = Path(folder)
    digest = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
    stamp = folder / "node_modules" / STAMP_NAME
    if _installed(stamp, digest):
        return
    # Outside the repository (nothing to ignore) and outside node_modules (npm ci deletes it).
    lock_name = f"alliance-npm-{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}.lock"
    with open(Path(tempfile.gettempdir()) / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes must not both run npm ci
        if _installed(stamp, digest):
            return
        result = subprocess.run(
            [_npm(), "ci", "--no-audit", "--no-fund", "--engine-strict=false"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise NpmInstallError(f"npm ci failed in {folder}:\n{result.stderr[-4000:]}")
        stamp.write_text(digest + "\n")


def ensure_all() -> None:
    """Install every folder the tests need."""
    for folder in FOLDERS:
        ensure_installed(folder)


if __name__ == "__main__":
    ensure_all()
