"""Assemble and check the transaction Bundle that writes one response to the EHR."""

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from pydantic import ValidationError

from fhir_mappings import codes
from fhir_mappings.errors import BundleError, describe_validation_error
from fhir_mappings.model import Instrument
from fhir_mappings.observations import score_observation, score_rows
from fhir_mappings.questionnaire_response import questionnaire_response
from fhir_mappings.scoring import Answer, Scores

_ID = r"[A-Za-z0-9\-.]{1,64}"  # the R4 id datatype
_REFERENCE = {
    "patient": re.compile(rf"Patient/{_ID}"),
    "practitioner": re.compile(rf"(Practitioner|PractitionerRole)/{_ID}"),
    "encounter": re.compile(rf"Encounter/{_ID}"),
}
# Characters that would break the ifNoneExist query or FHIR token search syntax.
_SYSTEM = re.compile(r"(https?://|urn:)[^\s|,$\\?#&]+")
_MODELS = {
    "QuestionnaireResponse": QuestionnaireResponse,
    "Observation": Observation,
    "DocumentReference": DocumentReference,
    "Flag": Flag,
}


@dataclass(frozen=True)
class ResponseContext:
    """Who answered, for which session, and the business identifier for idempotency."""

    response_id: str
    identifier_system: str
    patient: str
    practitioner: str | None
    encounter: str | None
    authored: datetime
    session_ended_at: datetime


def build_transaction(
    instrument: Instrument, answers: Mapping[str, Answer], scores: Scores, ctx: ResponseContext
) -> dict[str, Any]:
    """Return a validated R4 transaction Bundle: the response plus one Observation per score."""
    authored, ended = _check_context(ctx)
    qr_ident = {"system": ctx.identifier_system, "value": ctx.response_id}
    qr = questionnaire_response(
        instrument,
        answers,
        identifier=qr_ident,
        patient=ctx.patient,
        encounter=ctx.encounter,
        authored=authored,
    )
    entries = [conditional_entry(qr, qr_ident)]
    for key, coding, value in score_rows(scores):
        ident = {"system": ctx.identifier_system, "value": f"{ctx.response_id}/{key}"}
        obs = score_observation(
            coding,
            value,
            identifier=ident,
            patient=ctx.patient,
            encounter=ctx.encounter,
            effective=ended,
            issued=authored,
            derived_from=entries[0]["fullUrl"],
        )
        entries.append(conditional_entry(obs, ident))
    return transaction(entries)


def transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Wrap entries in a transaction Bundle, validated and with its codes checked."""
    bundle = _validate(Bundle, {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    _check_codes(bundle)
    return bundle


def _check_context(ctx: ResponseContext) -> tuple[datetime, datetime]:
    if not isinstance(ctx.response_id, str) or not re.fullmatch(_ID, ctx.response_id):
        raise BundleError("response_id must be a FHIR id (letters, digits, '-', '.')")
    if not isinstance(ctx.identifier_system, str) or not _SYSTEM.fullmatch(ctx.identifier_system):
        raise BundleError("identifier_system must be an absolute URI without | , $ \\ ? # &")
    refs = {"patient": ctx.patient, "practitioner": ctx.practitioner, "encounter": ctx.encounter}
    for name, value in refs.items():
        if value is None and name != "patient":
            continue
        if not isinstance(value, str) or not _REFERENCE[name].fullmatch(value):
            raise BundleError(
                f"{name} must be a relative reference like {_REFERENCE[name].pattern}"
            )
    stamps = (ctx.authored, ctx.session_ended_at)
    if any(t.tzinfo is None or t.utcoffset() is None for t in stamps):
        raise BundleError("authored and session_ended_at must be timezone-aware")
    return stamps[0].astimezone(UTC), stamps[1].astimezone(UTC)


def _full_url(identifier: dict[str, str]) -> str:
    # Derived from the business identifier, so a retry builds a byte-identical Bundle.
    name = f"{identifier['system']}|{identifier['value']}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def conditional_entry(resource: dict[str, Any], identifier: dict[str, str]) -> dict[str, Any]:
    """Return a validated transaction entry that creates resource unless identifier exists."""
    kind = resource["resourceType"]
    return {
        "fullUrl": _full_url(identifier),
        "resource": _validate(_MODELS[kind], resource),
        # Conditional create: a replayed write finds the first copy instead of duplicating it.
        "request": {
            "method": "POST",
            "url": kind,
            "ifNoneExist": f"identifier={identifier['system']}|{identifier['value']}",
        },
    }


def conditional_update_entry(
    resource: dict[str, Any], identifier: dict[str, str]
) -> dict[str, Any]:
    """Return a validated transaction entry that sets the resource with this identifier.

    Conditional update: the server updates the one match, or creates the resource when there
    is none, so sending it twice leaves the same resource behind.
    """
    kind = resource["resourceType"]
    return {
        "fullUrl": _full_url(identifier),
        "resource": _validate(_MODELS[kind], resource),
        "request": {
            "method": "PUT",
            "url": f"{kind}?identifier={identifier['system']}|{identifier['value']}",
        },
    }


def _validate(model: type, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return model.model_validate(data).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        kind = data.get("resourceType", "resource")
        raise BundleError(f"invalid {kind}: {describe_validation_error(exc)}") from exc


def _check_codes(bundle: dict[str, Any]) -> None:
    # fhir.resources accepts any string as a code; these are the R4 value sets.
    if bundle.get("type") not in codes.BUNDLE_TYPES or bundle["type"] != "transaction":
        raise BundleError("Bundle.type must be transaction")
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    if len(set(full_urls)) != len(full_urls):
        raise BundleError("two entries share a fullUrl; score keys must be unique")
    for entry in bundle["entry"]:
        if entry["request"]["method"] not in codes.HTTP_VERBS:
            raise BundleError("Bundle.entry.request.method is not an R4 http verb")
        resource = entry["resource"]
        if resource["resourceType"] == "DocumentReference":
            if resource["status"] not in codes.DOCUMENT_REFERENCE_STATUS:
                raise BundleError("DocumentReference.status is not an R4 status")
            continue
        if resource["resourceType"] == "Flag":
            _check_flag(resource)
            continue
        if resource["resourceType"] == "QuestionnaireResponse":
            if resource["status"] not in codes.QR_STATUS:
                raise BundleError("QuestionnaireResponse.status is not an R4 status")
            continue
        if resource["status"] not in codes.OBSERVATION_STATUS:
            raise BundleError("Observation.status is not an R4 status")
        for concept in resource.get("category", []):
            for coding in concept.get("coding", []):
                if coding.get("system") == codes.OBSERVATION_CATEGORY_SYSTEM and (
                    coding.get("code") not in codes.OBSERVATION_CATEGORIES
                ):
                    raise BundleError("Observation.category code is not an R4 category")


def _check_flag(resource: dict[str, Any]) -> None:
    if resource["status"] not in codes.FLAG_STATUS:
        raise BundleError("Flag.status is not an R4 status")
    for concept in resource.get("category", []):
        for coding in concept.get("coding", []):
            if coding.get("system") == codes.FLAG_CATEGORY_SYSTEM and (
                coding.get("code") not in codes.FLAG_CATEGORIES
            ):
                raise BundleError("Flag.category code is not an R4 flag category")
