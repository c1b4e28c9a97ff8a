"""Turn a FHIR R4 Questionnaire into the instrument the survey and scoring use."""

import json
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from fhir.resources.R4B.element import Element
from fhir.resources.R4B.questionnaire import Questionnaire, QuestionnaireItem
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

# Where a Questionnaire carries text in other languages: an extension on the primitive's
# `_text` / `_display` / `_title` element, with `lang` and `content` sub-extensions.
TRANSLATION_URL = "http://hl7.org/fhir/StructureDefinition/translation"


def instrument_from_questionnaire(
    resource: dict[str, Any], language: str | None = None
) -> Instrument:
    """Validate a Questionnaire and build its Instrument, in `language` where translated."""
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
    instrument = Instrument(
        url=q.url,
        version=q.version,
        title=q.title or q.name or q.url,
        language=q.language,
        items=items,
        code=code,
        translations=_translations(q),
    )
    return instrument.in_language(language) if language else instrument


def _translations(q: Questionnaire) -> dict[str, dict[str, str]]:
    """Collect every translation extension, keyed by language, then by what it translates."""
    found: dict[str, dict[str, str]] = {}
    for key, element in _translatable(q):
        for ext in (element.extension or []) if element else []:
            if ext.url != TRANSLATION_URL:
                continue
            parts = {sub.url: sub for sub in ext.extension or []}
            lang, content = parts.get("lang"), parts.get("content")
            if lang is None or not lang.valueCode or content is None or not content.valueString:
                raise InstrumentError(f"translation of {key!r} needs a lang code and content")
            found.setdefault(lang.valueCode, {})[key] = content.valueString
    return found


def _translatable(q: Questionnaire) -> Iterator[tuple[str, Element | None]]:
    yield "title", q.title__ext
    yield from _translatable_items(q.item or [])


def _translatable_items(items: Sequence[QuestionnaireItem]) -> Iterator[tuple[str, Element | None]]:
    for node in items:
        # Groups and questions share one linkId namespace; the prefix says which is meant.
        kind = "group" if node.type == "group" else "item"
        yield f"{kind}:{node.linkId}", node.text__ext
        for answer in node.answerOption or []:
            if answer.valueCoding is not None:
                coding = answer.valueCoding
                yield f"option:{node.linkId}:{coding.code}", coding.display__ext
        yield from _translatable_items(node.item or [])


def load_bundled_resource(name: str = "alliance-check") -> dict[str, Any]:
    """Return the raw JSON of a Questionnaire shipped in this package."""
    if not name.replace("-", "").isalnum():
        raise InstrumentError("bundled questionnaire names are letters, digits and dashes")
    path = resources.files("fhir_mappings") / "questionnaires" / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InstrumentError(f"no bundled questionnaire named {name!r}") from exc


def load_bundled(name: str = "alliance-check", language: str | None = None) -> Instrument:
    """Load and parse a Questionnaire shipped in this package, in `language` where translated."""
    return instrument_from_questionnaire(load_bundled_resource(name), language)
