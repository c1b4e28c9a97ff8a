"""Transaction Bundles built from the sample submissions in tests/data/fhir."""

import json
from datetime import datetime
from pathlib import Path

from fhir_mappings.bundle import ResponseContext, build_transaction
from fhir_mappings.scoring import score, validate_answers

DATA = Path(__file__).parents[1] / "data" / "fhir"
SUBMISSIONS = json.loads((DATA / "submissions.json").read_text())
CONTEXT = json.loads((DATA / "response-context.json").read_text())
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"


def context(**changes) -> ResponseContext:
    """Return the sample response context with some fields changed."""
    values = {**CONTEXT, **changes}
    for key in ("authored", "session_ended_at"):
        if isinstance(values[key], str):
            values[key] = datetime.fromisoformat(values[key])
    return ResponseContext(**values)


def build(instrument, form, ctx):
    """Validate a form, score it and build its transaction Bundle."""
    answers, errors = validate_answers(instrument, form)
    assert errors == {}
    return build_transaction(instrument, answers, score(instrument, answers), ctx)


def resources(bundle, kind):
    """Return the resources of one type in a Bundle."""
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
