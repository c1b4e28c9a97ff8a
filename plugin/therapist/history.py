"""Read one patient's alliance history from the EHR and shape it for the launch view.

Two searches with the therapist's patient-scoped token: our score Observations (grouped into
sessions as the worker groups them) and our QuestionnaireResponses (for the comments and the
answers at the lowest option). The pure rupture rule then runs over the sessions, so the
markers and their reasons are the ones the worker's Flags were written from.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from fhir_mappings import codes
from fhir_mappings.flags import answer_facts, sessions_from_observations
from fhir_mappings.model import Instrument
from fhir_mappings.ruptures import Session, Signal, detect
from fhir_mappings.scale_ranges import TOTAL, ScaleRanges
from plugin.ehr.fhir import HISTORY_COUNT, FhirClient
from plugin.therapist.chart import Point

# Responses read back: one per session, as many sessions as the Observation search covers.
RESPONSE_COUNT = HISTORY_COUNT // 4


@dataclass(frozen=True)
class Marker:
    """A rule signal as the page shows it: when, what, and the rule's reason (numbers only)."""

    label: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Comment:
    """A client's free-text answer and the day of its session."""

    label: str
    text: str


@dataclass(frozen=True)
class History:
    """Everything the page draws: sessions oldest first, markers and comments newest first."""

    points: list[Point]
    highs: dict[str, float]
    markers: list[Marker]
    comments: list[Comment]


def score_codes(instrument: Instrument) -> list[str]:
    """Return system|code of every score Observation this instrument's responses produce."""
    total = instrument.code
    found = [
        f"{total.system}|{total.code}" if total else f"{codes.SCORE_SYSTEM}|{codes.TOTAL_CODE}"
    ]
    for item in instrument.choice_items:
        if item.subscale:
            found.append(f"{item.subscale.system}|{item.subscale.code}")
    return list(dict.fromkeys(found))


def search_params(patient: str, instrument: Instrument) -> list[tuple[str, dict[str, str]]]:
    """Return the two searches the page needs (the benchmark times the same two)."""
    subject = f"Patient/{patient}"
    return [
        (
            "Observation",
            {
                "subject": subject,
                "code": ",".join(score_codes(instrument)),
                "_sort": "date",
                "_count": str(HISTORY_COUNT),
            },
        ),
        ("QuestionnaireResponse", {"subject": subject, "_count": str(RESPONSE_COUNT)}),
    ]


def load(
    client: FhirClient,
    patient: str,
    instruments: Mapping[str, Instrument],
    default: Instrument,
    identifier_system: str,
    timezone: str,
) -> History:
    """Search the EHR and return the patient's history as the page shows it."""
    (obs_type, obs_params), (qr_type, qr_params) = search_params(patient, default)
    observations = client.search(obs_type, obs_params)
    responses = [r for r in client.search(qr_type, qr_params) if _ours(r, identifier_system)]
    instrument = _instrument_of(responses, instruments, default)
    return shape(observations, responses, instrument, identifier_system, ZoneInfo(timezone))


def shape(
    observations: Sequence[dict],
    responses: Sequence[dict],
    instrument: Instrument,
    identifier_system: str,
    zone: ZoneInfo,
) -> History:
    """Turn our Observations and responses into points, rule markers and comments."""
    ranges = ScaleRanges.from_instrument(instrument)
    keys = {TOTAL, *ranges.subscales}
    by_id = {_identifier(r, identifier_system): r for r in responses}
    sessions = [
        s
        for s in sessions_from_observations(observations, identifier_system)
        if set(s.scores) == keys
    ]
    rule_sessions = []
    for n, s in enumerate(sessions, start=1):
        floor, texts = answer_facts(by_id.get(s.response_id, {}), instrument)
        rest = {k: v for k, v in s.scores.items() if k != TOTAL}
        rule_sessions.append(Session(n, s.scores[TOTAL], rest, floor, bool(texts)))
    signals: dict[int, Signal] = {}
    if rule_sessions:
        signals = {sig.n: sig for sig in detect("client", rule_sessions, ranges)}
    labels = [_day(s.effective, zone) for s in sessions]
    points = [
        Point(labels[i], s.scores, str(signals[i + 1].kind) if i + 1 in signals else None)
        for i, s in enumerate(sessions)
    ]
    markers = [
        Marker(labels[n - 1], str(sig.kind), sig.reason) for n, sig in sorted(signals.items())
    ]
    comments = []
    for r in sorted(responses, key=lambda r: r.get("authored", ""), reverse=True):
        when = _when(r.get("authored"))
        for text in answer_facts(r)[1]:
            comments.append(Comment(_day(when, zone) if when else "", text))
    highs = {TOTAL: ranges.total.high} | {k: v.high for k, v in ranges.subscales.items()}
    return History(points, highs, markers[::-1], comments)


def _ours(resource: dict, identifier_system: str) -> bool:
    return _identifier(resource, identifier_system) is not None


def _identifier(resource: dict, identifier_system: str) -> str | None:
    identifier = resource.get("identifier")
    for ident in identifier if isinstance(identifier, list) else [identifier or {}]:
        if ident.get("system") == identifier_system and ident.get("value"):
            return ident["value"]
    return None


def _instrument_of(
    responses: Sequence[dict], instruments: Mapping[str, Instrument], default: Instrument
) -> Instrument:
    newest = max(responses, key=lambda r: r.get("authored", ""), default=None)
    return instruments.get((newest or {}).get("questionnaire", ""), default)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else None


def _day(when: datetime, zone: ZoneInfo) -> str:
    return when.astimezone(zone).strftime("%Y-%m-%d")
