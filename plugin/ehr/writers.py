"""Where scored responses go: one writer interface, chosen per practice by its EHR target."""

import fcntl
import json
import tempfile
from pathlib import Path
from typing import Protocol

from fhir_mappings.references import rewrite


class FhirError(Exception):
    """An EHR write failed; `retryable` says whether the same write may succeed later.

    `reason` is safe to store and show (a status, an exception type); `outcome` is the
    server's OperationOutcome, whose diagnostics may quote the resource, so it is sealed.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        response: object = None,
        retry_after: float | None = None,
        outcome: dict | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.response = response
        self.retry_after = retry_after
        self.outcome = outcome


class EhrTargetError(ValueError):
    """An EHR target string is not one we can write to."""


class EhrWriter(Protocol):
    """Write one transaction Bundle; must be idempotent, because a retry resends it."""

    def write(self, bundle: dict) -> str:
        """Write the bundle and return the path taken (e.g. "transaction", "ndjson")."""
        ...


class NdjsonSink:
    """Append resources to <dir>/<ResourceType>.ndjson, honouring conditional creates."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def check(self) -> None:
        """Raise EhrTargetError unless the folder can be made and written to right now."""
        # Found when the admin sets it, not when the first client's answers wait to be written.
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-"):
                pass
        except OSError as exc:
            raise EhrTargetError(
                f"cannot write to {self.directory} ({type(exc).__name__}); choose a folder "
                "the service may write to"
            ) from exc

    def write(self, bundle: dict) -> str:
        """Write each entry once per identifier, with urn:uuid references resolved."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / ".lock", "w") as lock:
                # One writer at a time, so the identifier check and the append are atomic.
                fcntl.flock(lock, fcntl.LOCK_EX)
                for resource in _resolved(bundle):
                    self._create_once(resource)
        except OSError as exc:
            raise FhirError(f"sink not writable ({type(exc).__name__})", retryable=True) from exc
        return "ndjson"

    def _create_once(self, resource: dict) -> None:
        path = self.directory / f"{resource['resourceType']}.ndjson"
        wanted = {(i["system"], i["value"]) for i in _identifiers(resource)}
        if path.exists():
            with path.open() as existing:
                for line in existing:
                    if wanted & {(i["system"], i["value"]) for i in _identifiers(json.loads(line))}:
                        return
        with path.open("a") as out:
            out.write(json.dumps(resource, separators=(",", ":")) + "\n")


def _identifiers(resource: dict) -> list[dict]:
    identifier = resource.get("identifier", [])
    return identifier if isinstance(identifier, list) else [identifier]


def _resolved(bundle: dict) -> list[dict]:
    """Give each resource the id from its urn:uuid fullUrl and point references at it."""
    ids = {
        entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['fullUrl'][9:]}"
        for entry in bundle["entry"]
    }
    return [
        {**rewrite(entry["resource"], ids), "id": entry["fullUrl"][9:]} for entry in bundle["entry"]
    ]


def sink_for(target: str, root: Path) -> EhrWriter:
    """Return the sink for an ndjson: target; relative paths are under root."""
    scheme, _, rest = target.partition(":")
    if scheme == "ndjson" and rest:
        path = Path(rest)
        return NdjsonSink(path if path.is_absolute() else root / path)
    if scheme in ("http", "https"):
        raise EhrTargetError("connect a FHIR server with `alliance-check ehr connect`")
    raise EhrTargetError("EHR target must look like ndjson:<dir>")
