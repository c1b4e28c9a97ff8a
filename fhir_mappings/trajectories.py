"""Check a parsed trajectories JSON document with the rupture rule.

The pure half of `alliance-check ruptures check --file trajectories.json`; the command is
`click.echo(json.dumps(check_document(json.load(file)), indent=2))`, catching MappingError.
"""

from collections.abc import Callable, Mapping
from typing import Any

from fhir_mappings.errors import MappingError
from fhir_mappings.instrument import load_bundled
from fhir_mappings.ruptures import RuleParams, Session, Signal, TrajectoryError, detect
from fhir_mappings.scale_ranges import ScaleRanges

SESSION_FIELDS = ("n", "total", "floor_items", "comment")


class DocumentError(MappingError):
    """The document's shape is wrong before any one trajectory can be named."""

    def __init__(self, where: str, field_name: str, problem: str) -> None:
        super().__init__(f"{where}: {field_name!r} {problem}")
        self.field = field_name


def check_document(
    document: object, ranges: ScaleRanges | None = None, params: RuleParams | None = None
) -> dict[str, Any]:
    """Run the rupture rule on every trajectory and return {"results": [...]} for JSON."""
    ranges = ranges or ScaleRanges.from_instrument(load_bundled())
    results = []
    for trajectory_id, sessions in parse_document(document, ranges):
        signals = detect(trajectory_id, sessions, ranges, params)
        results.append({"id": trajectory_id, "signals": [_signal(s) for s in signals]})
    return {"results": results}


def parse_document(document: object, ranges: ScaleRanges) -> list[tuple[str, tuple[Session, ...]]]:
    """Turn a trajectories document into (id, sessions) pairs, rejecting anything malformed."""
    where = "trajectories document"
    if not isinstance(document, dict):
        raise DocumentError(where, "trajectories", "must be in a JSON object")
    _exact_keys(
        document, ("trajectories",), lambda key, problem: DocumentError(where, key, problem)
    )
    trajectories = document["trajectories"]
    if not isinstance(trajectories, list):
        raise DocumentError(where, "trajectories", "must be a list")
    parsed: list[tuple[str, tuple[Session, ...]]] = []
    seen: set[str] = set()
    for index, raw in enumerate(trajectories):
        at = f"trajectories[{index}]"
        if not isinstance(raw, dict):
            raise DocumentError(at, "trajectory", "must be an object with 'id' and 'sessions'")
        trajectory_id = raw.get("id")
        if not isinstance(trajectory_id, str) or not trajectory_id.strip():
            raise DocumentError(at, "id", "must be a non-empty string")
        if trajectory_id in seen:
            raise DocumentError(at, "id", f"{trajectory_id!r} appears twice")
        seen.add(trajectory_id)

        def fail(key: str, problem: str, tid: str = trajectory_id) -> MappingError:
            return TrajectoryError(tid, "trajectory", key, problem)

        _exact_keys(raw, ("id", "sessions"), fail)
        sessions = raw["sessions"]
        if not isinstance(sessions, list) or not sessions:
            raise fail("sessions", "must be a non-empty list")
        parsed.append(
            (
                trajectory_id,
                tuple(_session(trajectory_id, i, s, ranges) for i, s in enumerate(sessions)),
            )
        )
    return parsed


def _session(trajectory_id: str, index: int, raw: object, ranges: ScaleRanges) -> Session:
    at = f"sessions[{index}]"
    if not isinstance(raw, dict):
        raise TrajectoryError(trajectory_id, at, "session", "must be an object")
    n = raw.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TrajectoryError(trajectory_id, at, "n", "must be a whole number of 1 or more")
    where = f"session {n}"

    def fail(key: str, problem: str) -> MappingError:
        return TrajectoryError(trajectory_id, where, key, problem)

    _exact_keys(raw, (*SESSION_FIELDS, *ranges.subscales), fail)
    # Types and ranges of the numbers are checked once, by the rule's own validation.
    return Session(
        n=n,
        total=raw["total"],
        subscales={code: raw[code] for code in ranges.subscales},
        floor_items=raw["floor_items"],
        comment=raw["comment"],
    )


def _exact_keys(
    raw: Mapping[str, object],
    expected: tuple[str, ...],
    fail: Callable[[str, str], MappingError],
) -> None:
    for key in expected:
        if key not in raw:
            raise fail(key, "is missing")
    for key in raw:
        if key not in expected:
            raise fail(str(key), "is not a known field")


def _signal(signal: Signal) -> dict[str, Any]:
    return {"n": signal.n, "kind": str(signal.kind), "reason": signal.reason}
