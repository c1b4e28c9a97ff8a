"""Add the therapist's Flag to a response's write: read earlier scores, run the rule, decide.

The EHR is the record of scores (DESIGN.md): the earlier score Observations are read back
from it at write time (`system/Observation.rs`), or from the NDJSON sink's own files. Any
reason no flag could be computed becomes a note on the write, and the response is written
anyway: a flag is worth less than the scores themselves.
"""

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from fhir_mappings.bundle import transaction
from fhir_mappings.errors import MappingError
from fhir_mappings.flags import decide, read_response, sessions_from_observations
from fhir_mappings.model import Instrument
from fhir_mappings.scale_ranges import ScaleRanges
from plugin.ehr.errors import EhrError

log = logging.getLogger(__name__)


class ScoreHistory(Protocol):
    """What flagging needs from a writer: its earlier scores, or why it has none to give."""

    def flags_unavailable(self) -> str | None:
        """Return why this EHR takes no Flags (safe to store), or None."""
        ...

    def score_history(self, patient: str, score_codes: tuple[str, ...]) -> list[dict]:
        """Return the patient's Observations with these system|code codings."""
        ...


def with_flag(
    bundle: dict[str, Any], ehr: ScoreHistory, instruments: Mapping[str, Instrument]
) -> tuple[dict[str, Any], str]:
    """Return the bundle with the Flag entry the rule asks for (if any), and a note on why."""
    blocked = ehr.flags_unavailable()
    if blocked:
        return bundle, f"no flag: {blocked}"
    try:
        qr = next(
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "QuestionnaireResponse"
        )
        instrument = instruments.get(qr.get("questionnaire", ""))
        if instrument is None:
            return bundle, "no flag: the response's questionnaire is not installed here"
        new = read_response(bundle, instrument)
    except (StopIteration, MappingError, KeyError) as exc:
        return bundle, f"no flag: the response could not be read ({type(exc).__name__})"
    try:
        observations = ehr.score_history(new.patient, new.score_codes)
    except EhrError as exc:
        return bundle, f"no flag: earlier scores could not be read ({exc.reason})"
    try:
        earlier = sessions_from_observations(observations, new.identifier_system)
    except MappingError as exc:
        return bundle, f"no flag: {exc.message}"
    decision = decide(new, earlier, ScaleRanges.from_instrument(instrument))
    if not decision.entries:
        return bundle, decision.note
    return transaction([*bundle["entry"], *decision.entries]), decision.note
