"""Where scored responses go: one writer interface, chosen per practice by its EHR target."""

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

from fhir_mappings.references import rewrite
from plugin.ehr.errors import EhrTargetError, FhirError


class EhrWriter(Protocol):
    """Write one transaction Bundle; must be idempotent, because a retry resends it.

    It also gives the rupture rule the client's earlier scores (plugin.ehr.flagging).
    """

    def write(self, bundle: dict) -> str:
        """Write the bundle and return the path taken (e.g. "transaction", "ndjson")."""
        ...

    def flags_unavailable(self) -> str | None:
        """Return why this EHR takes no Flags (safe to store), or None."""
        ...

    def score_history(self, patient: str, score_codes: tuple[str, ...]) -> list[dict]:
        """Return the patient's Observations with these system|code codings."""
        ...


class NdjsonSink:
    """Append resources to <dir>/<ResourceType>.ndjson, honouring conditional creates/updates."""

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
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _open_private(self.directory / ".lock", os.O_WRONLY) as lock:
                # One writer at a time, so the identifier check and the append are atomic.
                fcntl.flock(lock, fcntl.LOCK_EX)
                for entry, resource in zip(bundle["entry"], _resolved(bundle), strict=True):
                    if entry["request"]["method"] == "PUT":
                        self._update(resource)
                    else:
                        self._create_once(resource)
        except OSError as exc:
            raise FhirError(f"sink not writable ({type(exc).__name__})", retryable=True) from exc
        return "ndjson"

    def flags_unavailable(self) -> str | None:
        """The sink takes Flags and reads its own scores: always None."""
        return None

    def score_history(self, patient: str, score_codes: tuple[str, ...]) -> list[dict]:
        """Return the sink's Observations of this patient with any of these system|codes."""
        path = self.directory / "Observation.ndjson"
        wanted = set(score_codes)
        try:
            lines = path.read_text().splitlines() if path.exists() else []
        except OSError as exc:
            raise FhirError(f"sink not readable ({type(exc).__name__})", retryable=True) from exc
        found = []
        for line in lines:
            obs = json.loads(line)
            codings = {f"{c.get('system')}|{c.get('code')}" for c in obs["code"]["coding"]}
            if obs.get("subject", {}).get("reference") == patient and codings & wanted:
                found.append(obs)
        return found

    def _update(self, resource: dict) -> None:
        """Replace the resource with the same identifier (keeping its id), or add it."""
        path = self.directory / f"{resource['resourceType']}.ndjson"
        wanted = {(i["system"], i["value"]) for i in _identifiers(resource)}
        lines = path.read_text().splitlines() if path.exists() else []
        out, replaced = [], False
        for line in lines:
            existing = json.loads(line)
            if wanted & {(i["system"], i["value"]) for i in _identifiers(existing)}:
                line = json.dumps({**resource, "id": existing["id"]}, separators=(",", ":"))
                replaced = True
            out.append(line)
        if not replaced:
            out.append(json.dumps(resource, separators=(",", ":")))
        tmp = path.with_suffix(".tmp")
        with _open_private(tmp, os.O_WRONLY | os.O_TRUNC) as rewritten:
            rewritten.write("\n".join(out) + "\n")
        tmp.replace(path)

    def _create_once(self, resource: dict) -> None:
        path = self.directory / f"{resource['resourceType']}.ndjson"
        wanted = {(i["system"], i["value"]) for i in _identifiers(resource)}
        if path.exists():
            with path.open() as existing:
                for line in existing:
                    if wanted & {(i["system"], i["value"]) for i in _identifiers(json.loads(line))}:
                        return
        with _open_private(path, os.O_WRONLY | os.O_APPEND) as out:
            out.write(json.dumps(resource, separators=(",", ":")) + "\n")


def _open_private(path: Path, flags: int):
    """Open a text file for writing, creating it readable by its owner only.

    The sink holds clients' answers: no other local user should read them, whatever the
    process's umask.
    """
    return os.fdopen(os.open(path, flags | os.O_CREAT, 0o600), "w")


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
