"""Check an EHR before connecting it, step by step, in plain words; then store the connection.

Used by `alliance-check ehr connect` and by the console's EHR wizard, so both say the same.
"""

from dataclasses import dataclass, field
from datetime import datetime

import requests
from sqlalchemy.orm import Session

from plugin.core.crypto import Vault
from plugin.core.models import EhrConnection, Practice
from plugin.ehr.errors import NoSigningKeyError, SmartError
from plugin.ehr.keys import current_signer
from plugin.ehr.smart import (
    ServerFacts,
    discover,
    fetch_token,
    flag_scope,
    patient_search_scope,
    search_scope,
)
from webhooks import ADAPTERS


@dataclass
class Step:
    """One check: what it looked at, what it found (lines), and what is wrong, if anything."""

    title: str
    found: list[str] = field(default_factory=list)
    # None when the step passed; otherwise what is wrong and what to do, in plain words.
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the step passed."""
        return self.problem is None


@dataclass
class Check:
    """Every step run (up to the first that failed), and the facts when discovery worked."""

    steps: list[Step]
    facts: ServerFacts | None = None
    # Whether rupture Flags can be written: {"observation_search": ..., "flag_write": ...}.
    flags: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every step passed, so the EHR may be connected."""
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def problem(self) -> str | None:
        """Return the first failure in plain words, or None."""
        return next((step.problem for step in self.steps if step.problem), None)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


NO_SIGNING_KEY = (
    "This Alliance Check service has no key yet to sign in to EHRs with. Its operator "
    "creates one with `alliance-check keys generate`; then test again."
)

# What a network failure means, by the name of the requests exception the reason carries.
_NETWORK_WORDS = {
    "SSLError": "its TLS certificate was not accepted",
    "ConnectTimeout": "it did not answer in time",
    "ReadTimeout": "it did not answer in time",
    "Timeout": "it did not answer in time",
    "ConnectionError": "the connection was refused, or the name did not resolve",
}


def _network_words(reason: str) -> str:
    """Say why a connection failed without an exception's class name."""
    return next(
        (words for name, words in _NETWORK_WORDS.items() if f"({name})" in reason),
        "the connection failed",
    )


def explain(reason: str, fhir_base: str) -> str:
    """Explain a SmartError reason in words an admin can act on, without class names."""
    if reason.startswith("could not reach"):
        return (
            f"We could not reach {fhir_base}: {_network_words(reason)}. Check the address, and "
            "that the server accepts connections from this service."
        )
    if "smart-configuration" in reason and "answered" in reason:
        return (
            "The server has no SMART configuration at .well-known/smart-configuration, so it "
            f"does not offer SMART Backend Services at this address ({reason})."
        )
    if "private_key_jwt" in reason:
        return (
            "The server does not accept signed client assertions (private_key_jwt), which is "
            "how we sign in to it. Ask its administrator to enable SMART Backend Services."
        )
    if "metadata" in reason:
        return f"The server did not give a valid FHIR CapabilityStatement ({reason})."
    if "token request refused" in reason:
        return (
            "The EHR refused to give us an access token. Check that the client id is the one "
            "registered with the EHR, and that our JWKS URL is registered with it "
            f"({reason})."
        )
    if "token endpoint unreachable" in reason:
        return f"The EHR's sign-in server could not be reached: {_network_words(reason)}."
    return reason


def check_connection(
    session: Session,
    practice: Practice,
    fhir_base: str,
    client_id: str,
    vault: Vault,
    http: requests.Session,
) -> Check:
    """Run discovery, capability, token and scope checks against an EHR; stop at a failure."""
    check = Check(steps=[])
    step = Step("Discovery")
    check.steps.append(step)
    try:
        facts = discover(http, fhir_base)
    except SmartError as exc:
        step.problem = explain(exc.reason, fhir_base)
        return check
    check.facts = facts
    step.found = [
        f"FHIR server      {fhir_base}",
        f"token endpoint   {facts.token_endpoint}",
        f"SMART scopes     {'v2' if facts.smart_v2 else 'v1'}",
    ]

    step = Step("What the server can store")
    check.steps.append(step)
    step.found = [
        f"transactions     {_yes(facts.transaction)}",
        f"QuestionnaireResponse create  {_yes(facts.questionnaire_response_create)}",
        f"Observation create            {_yes(facts.observation_create)}",
    ]
    if not facts.observation_create:
        step.problem = "the server cannot create Observations; not connected"
        return check
    if not facts.questionnaire_response_create and not facts.document_reference_create:
        step.problem = (
            "the server takes neither QuestionnaireResponse nor DocumentReference; not connected"
        )
        return check

    step = Step("Access token")
    check.steps.append(step)
    try:
        token = fetch_token(
            client_id, facts.token_endpoint, facts.scope(), current_signer(session, vault)
        )
    except NoSigningKeyError:
        step.problem = NO_SIGNING_KEY
        return check
    except SmartError as exc:
        step.problem = explain(exc.reason, fhir_base)
        return check
    granted = token.get("scope", facts.scope())
    step.found = [f"token            granted {granted!r}, expires in {token.get('expires_in')} s"]
    missing = set(facts.scope().split()) - set(granted.split())
    if missing:
        step.problem = (
            f"the EHR did not grant {' '.join(sorted(missing))}; ask its administrator to "
            "allow it for this client; not connected"
        )
        return check

    if getattr(ADAPTERS.get(practice.platform), "attendee_emails", None):
        # Zoom names no client: each session's client is the one Patient with an attendee's
        # email, so without a search every session would end up unmatched, hours later.
        step = Step("Finding clients")
        check.steps.append(step)
        scope = patient_search_scope(facts.smart_v2)
        if not facts.patient_search:
            step.problem = (
                "this platform's sessions name no client, and the server does not offer a "
                "Patient search by email; not connected"
            )
            return check
        try:
            token = fetch_token(
                client_id, facts.token_endpoint, scope, current_signer(session, vault)
            )
        except NoSigningKeyError:
            step.problem = NO_SIGNING_KEY
            return check
        except SmartError as exc:
            step.problem = (
                f"{explain(exc.reason, fhir_base)} This platform's clients are found by a "
                f"Patient search, which needs {scope}; not connected."
            )
            return check
        if scope not in token.get("scope", scope).split():
            step.problem = (
                f"the EHR did not grant {scope}, which finding this platform's clients needs; "
                "ask its administrator to allow it for this client; not connected"
            )
            return check
        step.found = [f"Patient search   granted {scope!r}"]

    check.flags = _check_flags(check, session, facts, client_id, vault)
    if getattr(ADAPTERS.get(practice.platform), "meeting_facts", None):
        check.flags.update(_check_schedule(check, session, facts, client_id, vault))
    check.flags.update(_check_consent(check, session, facts, client_id, vault))
    what = (
        "the response and its scores"
        if facts.questionnaire_response_create
        else "the scores and a readable summary (DocumentReference)"
    )
    how = "in one transaction" if facts.transaction else "one resource at a time"
    check.steps.append(Step("How we will write", found=[f"writes           {what}, {how}"]))
    return check


def _granted(session: Session, facts: ServerFacts, client_id: str, scope: str, vault) -> bool:
    """Return whether the EHR grants us this scope; a refusal is an answer, not an error."""
    try:
        token = fetch_token(client_id, facts.token_endpoint, scope, current_signer(session, vault))
    except (SmartError, NoSigningKeyError):
        return False
    return scope in token.get("scope", scope).split()


def _check_flags(
    check: Check, session: Session, facts: ServerFacts, client_id: str, vault: Vault
) -> dict[str, bool]:
    """Find out whether rupture Flags can be written: Flag create/update and Observation reads.

    Neither is required: without them responses and scores are still written, unflagged,
    and each write notes why (`ehr-writes show`).
    """
    read = search_scope("Observation", facts.smart_v2)
    write = flag_scope(facts.smart_v2)
    found = {
        "observation_search": facts.observation_search
        and _granted(session, facts, client_id, read, vault),
        "flag_write": facts.flag_write and _granted(session, facts, client_id, write, vault),
    }
    step = Step("Rupture flags for the therapist")
    for scope, key in ((read, "observation_search"), (write, "flag_write")):
        step.found.append(
            f"rupture flags    {scope} {'granted' if found[key] else 'not available'}"
        )
    if not all(found.values()):
        step.found.append("rupture flags    off: responses are written without Flags")
    check.steps.append(step)
    return found


def _check_schedule(
    check: Check, session: Session, facts: ServerFacts, client_id: str, vault: Vault
) -> dict[str, bool]:
    """Find out whether clients can be found in the schedule: Appointment and Practitioner reads.

    Not required: without them a session's client is found by its registrants' and attendees'
    emails only, and more sessions stay unmatched.
    """
    granted = _check_reads(
        check, session, facts, client_id, vault,
        title="Finding clients by the schedule",
        label="schedule",
        offered={kind: kind in facts.schedule_search for kind in ("Appointment", "Practitioner")},
        off="clients are found by registrants' and attendees' emails only; "
        "ask the EHR's administrator to grant both reads to find more",
    )  # fmt: skip
    return {"appointment_search": granted}


def _check_consent(
    check: Check, session: Session, facts: ServerFacts, client_id: str, vault: Vault
) -> dict[str, bool]:
    """Find out whether clients' consent to texts can be read from the EHR's Consents.

    Not required: without it a client is texted only when their consent reaches us another
    way (the platform's webhook, or their texting START).
    """
    granted = _check_reads(
        check, session, facts, client_id, vault,
        title="Consent to texts from the EHR",
        label="sms consent",
        offered={"Consent": facts.consent_offered},
        off="clients are texted only with consent from the platform or START; "
        "ask the EHR's administrator to grant the read to use the EHR's Consents",
    )  # fmt: skip
    return {"consent_search": granted}


def _check_reads(
    check: Check,
    session: Session,
    facts: ServerFacts,
    client_id: str,
    vault: Vault,
    *,
    title: str,
    label: str,
    offered: dict[str, bool],
    off: str,
) -> bool:
    """Ask for each optional read (by type: whether offered), say what was granted in one step."""
    step = Step(title)
    prefix = f"{label:<17}"
    granted = True
    for kind, is_offered in offered.items():
        scope = search_scope(kind, facts.smart_v2)
        if not is_offered:
            step.found.append(f"{prefix}{kind} search not offered by the server")
            granted = False
        elif _granted(session, facts, client_id, scope, vault):
            step.found.append(f"{prefix}{scope} granted")
        else:
            step.found.append(f"{prefix}{scope} not granted")
            granted = False
    if not granted:
        step.found.append(f"{prefix}off: {off}")
    check.steps.append(step)
    return granted


def save_connection(
    session: Session,
    practice: Practice,
    fhir_base: str,
    client_id: str,
    check: Check,
    now: datetime,
    sms_consent_codes: list[str] | None = None,
) -> EhrConnection:
    """Store a checked connection and point the practice's writes at it; the caller commits.

    The practice's own SMS consent codes (None: keep those it had) stay with the connection.
    """
    facts = check.facts
    connection = practice.ehr_connection or EhrConnection(practice_id=practice.id)
    if sms_consent_codes is None:
        sms_consent_codes = (connection.facts or {}).get("sms_consent_codes")
    connection.fhir_base = fhir_base.rstrip("/")
    connection.client_id = client_id
    connection.token_endpoint = facts.token_endpoint
    connection.facts = {
        **{k: v for k, v in vars(facts).items() if k != "token_endpoint"},
        **check.flags,
        **({"sms_consent_codes": sms_consent_codes} if sms_consent_codes else {}),
    }
    connection.scope = facts.scope()
    if check.flags.get("flag_write"):
        connection.scope += " " + flag_scope(facts.smart_v2)
    connection.checked_at = now
    session.add(connection)
    practice.ehr_target = connection.fhir_base
    return connection
