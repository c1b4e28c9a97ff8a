"""Turn the rupture rule's verdict on a new response into a FHIR R4 Flag for the therapist.

Pure: the caller reads the client's earlier score Observations from the EHR (or the NDJSON
sink) and passes them in with the Bundle about to be written; we keep no copy of scores.

- A `rupture` or an `early-concern` on the new session: a Flag, status active, created once
  per episode (conditional create on its business identifier `<response id>/flag`, the
  response that opened the episode).
- A `repair`: the episode's Flag set inactive with a period end, by a conditional update on
  the same identifier, so a resend leaves the same Flag behind.

The Flag's text is the rule's reason (numbers only); when the client left a comment it says
one is waiting in the response, and never quotes it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_mappings import codes
from fhir_mappings.bundle import conditional_entry, conditional_update_entry
from fhir_mappings.errors import MappingError
from fhir_mappings.model import Instrument
from fhir_mappings.ruptures import RuleParams, Session, SignalKind, detect
from fhir_mappings.scale_ranges import TOTAL, ScaleRanges

LABELS = {
    SignalKind.RUPTURE: "Alliance rupture",
    SignalKind.EARLY_CONCERN: "Early alliance concern",
}
COMMENT_WAITING = "The client left a comment; read it in the questionnaire response."


class FlagInputError(MappingError):
    """The response or the earlier scores cannot be read as scored sessions."""


@dataclass(frozen=True)
class ScoredSession:
    """One answered session as the EHR holds it: scores by key, and when it ended."""

    response_id: str
    effective: datetime
    encounter: str | None
    scores: Mapping[str, float]
    floor_items: int = 0
    comment: bool = False


@dataclass(frozen=True)
class NewResponse:
    """What the Bundle being written says about the session it records."""

    session: ScoredSession
    patient: str
    identifier_system: str
    questionnaire: str
    # system|code of every score Observation, to search the earlier ones by.
    score_codes: tuple[str, ...]


def read_response(bundle: Mapping[str, Any], instrument: Instrument | None = None) -> NewResponse:
    """Read the session's scores, patient and identifiers from a response's Bundle.

    With the instrument, also count the answers at an item's lowest option; the comment is
    only ever noted as present, never read.
    """
    resources = [e["resource"] for e in bundle.get("entry", [])]
    responses = [r for r in resources if r["resourceType"] == "QuestionnaireResponse"]
    if len(responses) != 1:
        raise FlagInputError("the Bundle must hold exactly one QuestionnaireResponse")
    qr = responses[0]
    identifier = _one_identifier(qr)
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    found = sessions_from_observations(observations, identifier["system"])
    session = found[0] if len(found) == 1 else None
    if session is None or session.response_id != identifier["value"]:
        raise FlagInputError("the Bundle's score Observations do not belong to its response")
    floor, comments = answer_facts(qr, instrument)
    comment = bool(comments)
    session = ScoredSession(
        session.response_id, session.effective, session.encounter, session.scores, floor, comment
    )
    score_codes = tuple(
        sorted({f"{c['system']}|{c['code']}" for o in observations for c in o["code"]["coding"]})
    )
    return NewResponse(
        session, qr["subject"]["reference"], identifier["system"], qr["questionnaire"], score_codes
    )


def answer_facts(
    qr: Mapping[str, Any], instrument: Instrument | None = None
) -> tuple[int, list[str]]:
    """Return how many answers sit at their item's lowest option, and the free-text answers.

    The count needs the instrument (0 without it). The texts are the client's words: the
    rule only ever learns whether there are any; the therapist's page shows them.
    """
    answers = list(_answers(qr.get("item", [])))
    texts = [a["valueString"].strip() for _, a in answers if str(a.get("valueString", "")).strip()]
    if instrument is None:
        return 0, texts
    lowest = {i.link_id: float(min(o.ordinal for o in i.options)) for i in instrument.choice_items}
    floor = sum(
        1
        for link_id, a in answers
        if link_id in lowest and _ordinal(a.get("valueCoding")) == lowest[link_id]
    )
    return floor, texts


def sessions_from_observations(
    observations: Sequence[Mapping[str, Any]], identifier_system: str
) -> list[ScoredSession]:
    """Group our score Observations into sessions, oldest first.

    Ours carry the identifier `<response id>/<score key>` in our system, so the response and
    the score key come from it, whatever ids the server gave. Others are ignored.
    """
    grouped: dict[str, dict[str, Any]] = {}
    for obs in observations:
        if obs.get("status") not in ("final", "amended", "corrected"):
            continue
        for ident in obs.get("identifier", []):
            value = ident.get("value", "")
            if ident.get("system") != identifier_system or "/" not in value:
                continue
            response_id, key = value.rsplit("/", 1)
            quantity = obs.get("valueQuantity", {}).get("value")
            when = obs.get("effectiveDateTime")
            if not isinstance(quantity, int | float) or not isinstance(when, str):
                continue
            group = grouped.setdefault(
                response_id,
                {"when": when, "encounter": obs.get("encounter", {}).get("reference"), "s": {}},
            )
            group["s"][key] = float(quantity)
    sessions = [
        ScoredSession(rid, _datetime(g["when"]), g["encounter"], g["s"])
        for rid, g in grouped.items()
    ]
    return sorted(sessions, key=lambda s: (s.effective, s.response_id))


@dataclass(frozen=True)
class FlagDecision:
    """The entries to add to the Bundle, and a note on what was decided (safe to store)."""

    entries: tuple[dict[str, Any], ...]
    note: str


def decide(
    new: NewResponse,
    earlier: Sequence[ScoredSession],
    ranges: ScaleRanges,
    params: RuleParams | None = None,
) -> FlagDecision:
    """Run the rupture rule over the earlier sessions and this one; say which Flag to write."""
    keys = {TOTAL, *ranges.subscales}
    current = new.session
    if set(current.scores) != keys:
        return FlagDecision((), "no flag: the response's scores do not match the instrument")
    history = [
        s
        for s in earlier
        # A resend finds its own scores already written; a later session written first is
        # not history yet. Sessions missing a score (an instrument changed) cannot be judged.
        if s.response_id != current.response_id
        and s.effective < current.effective
        and set(s.scores) == keys
    ]
    sessions = [*history, current]
    rule_sessions = [
        Session(
            n=i + 1,
            total=s.scores[TOTAL],
            subscales={k: v for k, v in s.scores.items() if k != TOTAL},
            floor_items=s.floor_items,
            comment=s.comment,
        )
        for i, s in enumerate(sessions)
    ]
    try:
        signals = detect("client", rule_sessions, ranges, params)
    except MappingError:
        return FlagDecision((), "no flag: earlier scores in the EHR do not fit the instrument")
    now = len(sessions)
    signal = next((s for s in signals if s.n == now), None)
    if signal is None:
        return FlagDecision((), f"no signal ({len(history)} earlier sessions)")
    if signal.kind is SignalKind.REPAIR:
        opened = max(
            (s for s in signals if s.kind is SignalKind.RUPTURE and s.n < now), key=lambda s: s.n
        )
        start = sessions[opened.n - 1]
        text = f"{LABELS[SignalKind.RUPTURE]}: {opened.reason}. Repaired: {signal.reason}"
        flag, ident = _flag(new, start, SignalKind.RUPTURE, text, "inactive", current.effective)
        return FlagDecision(
            (conditional_update_entry(flag, ident),), "repair: the rupture flag set inactive"
        )
    text = f"{LABELS[signal.kind]}: {signal.reason}"
    flag, ident = _flag(new, current, signal.kind, text, "active", None)
    return FlagDecision((conditional_entry(flag, ident),), f"{signal.kind} flag written")


def _flag(
    new: NewResponse,
    opened: ScoredSession,
    kind: SignalKind,
    text: str,
    status: str,
    end: datetime | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    if new.session.comment:
        text = f"{text}. {COMMENT_WAITING}"
    identifier = {"system": new.identifier_system, "value": f"{opened.response_id}/flag"}
    period: dict[str, Any] = {"start": opened.effective}
    if end is not None:
        period["end"] = end
    flag: dict[str, Any] = {
        "resourceType": "Flag",
        "identifier": [identifier],
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": codes.FLAG_CATEGORY_SYSTEM,
                        "code": "clinical",
                        "display": "Clinical",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": codes.FLAG_SYSTEM, "code": str(kind), "display": LABELS[kind]}],
            "text": text,
        },
        "subject": {"reference": new.patient},
        "period": period,
        "author": {
            "identifier": {"system": codes.DEVICE_SYSTEM, "value": codes.DEVICE_VALUE},
            "display": "Alliance Check",
        },
    }
    if opened.encounter:
        flag["encounter"] = {"reference": opened.encounter}
    return flag, identifier


def _one_identifier(resource: Mapping[str, Any]) -> dict[str, str]:
    identifier = resource.get("identifier")
    if isinstance(identifier, list):
        identifier = identifier[0] if len(identifier) == 1 else None
    if not isinstance(identifier, dict) or not {"system", "value"} <= set(identifier):
        raise FlagInputError("the QuestionnaireResponse needs exactly one identifier")
    return identifier


def _answers(items: list[dict[str, Any]]):
    for item in items:
        for answer in item.get("answer", []):
            yield item["linkId"], answer
        yield from _answers(item.get("item", []))


def _ordinal(coding: Mapping[str, Any] | None) -> float | None:
    for ext in (coding or {}).get("extension", []):
        if ext.get("url") == codes.ORDINAL_VALUE_URL:
            try:
                return float(ext.get("valueDecimal"))
            except (TypeError, ValueError):
                return None
    return None


def _datetime(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FlagInputError("a score Observation has an unreadable effectiveDateTime") from exc
    if when.tzinfo is None:
        raise FlagInputError("a score Observation's effectiveDateTime has no time zone")
    return when
