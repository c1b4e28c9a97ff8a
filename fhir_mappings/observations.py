"""Build one survey Observation per score, derived from the QuestionnaireResponse."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir_mappings import codes
from fhir_mappings.model import Subscale
from fhir_mappings.scoring import Scores


def score_rows(scores: Scores) -> list[tuple[str, Subscale, Decimal]]:
    """List (key, coding, value) for the total and then each subscale, in a stable order."""
    rows = [(codes.TOTAL_CODE, scores.total_code, scores.total)]
    rows.extend((key, scores.subscale_codes[key], value) for key, value in scores.subscales.items())
    return rows


def score_observation(
    coding: Subscale,
    value: Decimal,
    *,
    identifier: dict[str, str],
    patient: str,
    encounter: str | None,
    effective: datetime,
    issued: datetime,
    derived_from: str,
) -> dict[str, Any]:
    """Return a final survey-category score Observation as a plain dict."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [identifier],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": codes.OBSERVATION_CATEGORY_SYSTEM,
                        "code": "survey",
                        "display": "Survey",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": coding.system, "code": coding.code, "display": coding.display}],
            "text": coding.display,
        },
        "subject": {"reference": patient},
        # The alliance describes the session, so the score is dated to when it ended.
        "effectiveDateTime": effective,
        "issued": issued,
        "valueQuantity": {
            "value": value,
            "unit": codes.SCORE_UNIT,
            "system": codes.UCUM_SYSTEM,
            "code": codes.SCORE_UNIT,
        },
        "derivedFrom": [{"reference": derived_from}],
    }
    if encounter:
        resource["encounter"] = {"reference": encounter}
    return resource
