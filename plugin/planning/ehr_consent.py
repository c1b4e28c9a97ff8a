"""Consent to texts from the practice's EHR: search the client's FHIR Consents when planning.

The look-up happens once, when a session is planned (its client just found): planning already
talks to the EHR outside any transaction, and it is where the channel order is decided. The
dispatcher then checks only what is on record (`has_sms_consent`), so a STOP between planning
and the text still wins, and no text waits on the EHR. What counts as consent to texts is
fhir_mappings.consent's rule, with the practice's codes (`EHR_SMS_CONSENT_CODES`).

An EHR that did not grant `system/Consent.rs` (or offers no Consent search) is not asked; one
that refuses the search is skipped for that session with the reason logged: the client then
gets no text unless their consent is on record some other way. An EHR that is down is retried
like the rest of planning.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from flask import Flask

from fhir_mappings.consent import TextingConsent, parse_codes, texting_consents
from plugin.core.config import ConfigError
from plugin.core.models import Practice
from plugin.ehr.errors import EhrTargetError, FhirError, NoTokenError
from plugin.ehr.gateway import EhrClients
from plugin.planning.resolution import ResolutionError

log = logging.getLogger(__name__)

# A client has few Consents on file; more than this many active ones is not a normal chart.
CONSENT_COUNT = 50

# Given a Patient reference, the Consents that decide texting; None when the EHR was not read.
ConsentReader = Callable[[str], list[TextingConsent] | None]


def consent_reader_for(
    practice: Practice, clients: EhrClients, codes: list[str], now: datetime
) -> ConsentReader:
    """Return the function that reads a client's texting Consents from this practice's EHR."""
    if practice.ehr_connection is None or practice.ehr_target.startswith("ndjson:"):
        return lambda _patient_ref: None
    facts = practice.ehr_connection.facts
    wanted = parse_codes(facts.get("sms_consent_codes") or codes)

    def read(patient_ref: str) -> list[TextingConsent] | None:
        if not facts.get("consent_search", False):
            # Connections checked before this step existed, or EHRs that did not grant it.
            log.info(
                "sms_consent.ehr_skipped",
                extra={"practice_id": practice.id, "reason": "consent_not_granted"},
            )
            return None
        try:
            searcher = clients.searcher_for(practice, ["Consent"])
            resources = searcher.search(
                "Consent",
                {"patient": patient_ref, "status": "active", "_count": str(CONSENT_COUNT)},
            )
        except EhrTargetError:
            return _skipped(practice, "ehr_not_connected")
        except NoTokenError:
            # The EHR no longer grants the read: texts wait for consent recorded elsewhere.
            return _skipped(practice, "consent_token_refused")
        except FhirError as exc:
            if exc.retryable:
                raise ResolutionError("ehr_unavailable", retryable=True) from exc
            return _skipped(practice, f"consent_search_refused ({exc.reason})"[:64])
        return texting_consents(resources, patient_ref.split("/", 1)[1], wanted, now)

    return read


def _skipped(practice: Practice, reason: str) -> None:
    # Ids and a reason only: a Consent's contents are the client's and are never logged.
    log.warning("sms_consent.ehr_skipped", extra={"practice_id": practice.id, "reason": reason})
    return None


def init_app(app: Flask) -> None:
    """Refuse to start with SMS consent codes that are not "system|code"."""
    try:
        parse_codes(app.config["EHR_SMS_CONSENT_CODES"])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"ALLIANCE_EHR_SMS_CONSENT_CODES: {exc}") from exc
