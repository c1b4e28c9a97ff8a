"""Turn a FHIR R4 Questionnaire into the instrument the survey and scoring use."""

import json
from importlib import resources
from typing import Any

from fhir.resources.R4B.questionnaire import Questionnaire
from pydantic import ValidationError

from fhir_mappings import codes
from fhir_mappings.errors import InstrumentError, describe_validation_error
from fhir_mappings.model import Group, Instrument, Item, Option, Subscale
from fhir_mappings.questionnaire_items import parse_items

__all__ = [
    "Group",
    "Instrument",
    "Item",
    "Option",
    "Subscale",
    "instrument_from_questionnaire",
    "load_bundled",
    "load_bundled_resource",
]


def instrument_from_questionnaire(resource: dict[str, Any]) -> Instrument:
    """Validate a Questionnaire resource and build the Instrument it describes."""
    # Imported licensed instruments go through here too, so every rule scoring
    # relies on is checked now rather than discovered when a client submits.
    if not isinstance(resource, dict) or resource.get("resourceType") != "Questionnaire":
        raise InstrumentError("resource is not a Questionnaire")
    try:
        q = Questionnaire.model_validate(resource)
    except ValidationError as exc:
        raise InstrumentError(f"invalid Questionnaire: {describe_validation_error(exc)}") from exc
    if not q.url or not q.version:
        raise InstrumentError("Questionnaire needs both url and version to be referenced")
    if q.status not in codes.PUBLICATION_STATUS:
        raise InstrumentError("Questionnaire.status is not an R4 publication status")
    items = parse_items(q.item or [])
    code = None
    if q.code:
        coding = q.code[0]
        if not coding.system or not coding.code:
            raise InstrumentError("Questionnaire.code needs a system and a code")
        code = Subscale(coding.system, coding.code, coding.display)
    return Instrument(
        url=q.url,
        version=q.version,
        title=q.title or q.name or q.url,
        language=q.language,
        items=items,
        code=code,
    )


def load_bundled_resource(name: str = "alliance-check") -> dict[str, Any]:
    """Return the raw JSON of a Questionnaire shipped in this package."""
    if not name.replace("-", "").isalnum():
        raise InstrumentError("bundled questionnaire names are letters, digits and dashes")
    path = resources.files("fhir_mappings") / "questionnaires" / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InstrumentError(f"no bundled questionnaire named {name!r}") from exc


def load_bundled(name: str = "alliance-check") -> Instrument:
    """Load and parse a Questionnaire shipped in this package."""
    return instrument_from_questionnaire(load_bundled_resource(name))
