"""Build the QuestionnaireResponse resource for one set of accepted answers."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fhir_mappings import codes
from fhir_mappings.errors import BundleError
from fhir_mappings.model import Instrument, Item
from fhir_mappings.scoring import Answer


def questionnaire_response(
    instrument: Instrument,
    answers: Mapping[str, Answer],
    *,
    identifier: dict[str, str],
    patient: str,
    encounter: str | None,
    authored: datetime,
) -> dict[str, Any]:
    """Return a completed QuestionnaireResponse as a plain dict (not yet validated)."""
    unknown = set(answers) - {i.link_id for i in instrument.items}
    if unknown:
        raise BundleError(f"answers for items the instrument lacks: {sorted(unknown)}")
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "identifier": identifier,
        "questionnaire": instrument.canonical,
        "status": "completed",
        "subject": {"reference": patient},
        "authored": authored,
        # The client fills the form in themselves, so they are its author.
        "author": {"reference": patient},
        "item": _items(instrument, answers),
    }
    if encounter:
        resource["encounter"] = {"reference": encounter}
    return resource


def _items(instrument: Instrument, answers: Mapping[str, Answer]) -> list[dict[str, Any]]:
    # Items were flattened for the form; a response must mirror the Questionnaire's
    # group nesting, so rebuild it. Groups are contiguous, so order is preserved.
    root: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for item in instrument.items:
        answer = answers.get(item.link_id)
        if answer is None:
            continue
        siblings = root
        for group in item.groups:
            node = groups.get(group.link_id)
            if node is None:
                node = {"linkId": group.link_id, "text": group.text, "item": []}
                groups[group.link_id] = node
                siblings.append(node)
            siblings = node["item"]
        siblings.append(
            {"linkId": item.link_id, "text": item.text, "answer": [_value(item, answer)]}
        )
    return root


def _value(item: Item, answer: Answer) -> dict[str, Any]:
    if item.kind == "text":
        if not answer.text:
            raise BundleError(f"text item {item.link_id!r} has an empty answer")
        return {"valueString": answer.text}
    option = answer.option
    if option is None or option not in item.options:
        raise BundleError(f"choice item {item.link_id!r} has no listed option")
    return {
        "valueCoding": {
            # Carry the ordinal so the EHR can re-score without fetching the Questionnaire.
            "extension": [{"url": codes.ORDINAL_VALUE_URL, "valueDecimal": option.ordinal}],
            "system": option.system,
            "code": option.code,
            "display": option.display,
        }
    }
