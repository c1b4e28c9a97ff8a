"""Rewrite a response for EHRs that cannot take a QuestionnaireResponse: scores plus a summary."""

import base64
import copy
import json
from typing import Any

from fhir_mappings.bundle import conditional_entry, transaction

SUMMARY_TYPE = {"text": "Alliance Check questionnaire summary"}


def observations_only(bundle: dict[str, Any]) -> dict[str, Any]:
    """Return the write without its QuestionnaireResponse: the score Observations, plus a
    DocumentReference whose text lets the therapist read the answers anyway."""
    entries = bundle["entry"]
    response = next(
        e["resource"] for e in entries if e["resource"]["resourceType"] == "QuestionnaireResponse"
    )
    observations = [
        copy.deepcopy(e) for e in entries if e["resource"]["resourceType"] == "Observation"
    ]
    for entry in observations:
        # The response they were derived from will not exist on this server.
        entry["resource"].pop("derivedFrom", None)
    [identifier] = (
        response["identifier"]
        if isinstance(response["identifier"], list)
        else [response["identifier"]]
    )
    summary_id = {"system": identifier["system"], "value": f"{identifier['value']}/summary"}
    document = {
        "resourceType": "DocumentReference",
        "identifier": [summary_id],
        "status": "current",
        "type": SUMMARY_TYPE,
        "subject": response["subject"],
        "date": response["authored"],
        "description": "Client-reported alliance after a session, with scores",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(
                        summary_text(response, observations).encode()
                    ).decode(),
                    "title": "Alliance Check summary",
                    "creation": response["authored"],
                }
            }
        ],
    }
    if "encounter" in response:
        document["context"] = {"encounter": [response["encounter"]]}
    # Flags stand on their own (subject, encounter), so they travel unchanged.
    flags = [copy.deepcopy(e) for e in entries if e["resource"]["resourceType"] == "Flag"]
    return transaction([*observations, conditional_entry(document, summary_id), *flags])


def summary_text(response: dict[str, Any], observations: list[dict[str, Any]]) -> str:
    """Render the scores and every answer as plain text for a therapist to read."""
    lines = ["Alliance Check", f"Answered: {response['authored']}", "", "Scores"]
    for entry in observations:
        resource = entry["resource"]
        lines.append(
            f"  {resource['code'].get('text', resource['code']['coding'][0]['code'])}: "
            f"{_number(resource['valueQuantity']['value'])}"
        )
    lines += ["", "Answers"]
    for item in _answered(response.get("item", [])):
        answer = item["answer"][0]
        value = answer.get("valueCoding", {}).get("display") or answer.get("valueString", "")
        lines.append(f"  {item.get('text', item['linkId'])}\n    {value}")
    return "\n".join(lines) + "\n"


def _answered(items: list[dict[str, Any]]):
    for item in items:
        if item.get("answer"):
            yield item
        yield from _answered(item.get("item", []))


def _number(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
