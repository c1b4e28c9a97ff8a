"""Check a client's submitted form and score it from the Questionnaire's own ordinals."""

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from fhir_mappings import codes
from fhir_mappings.errors import ScoringError
from fhir_mappings.model import Instrument, Item, Option, Subscale

# A text item without maxLength still needs a bound; this matches our own item.
DEFAULT_TEXT_LIMIT = 1000
_ALLOWED_CONTROLS = frozenset("\n\t")

CHOOSE = "Please choose an answer."
NOT_LISTED = "Please choose one of the listed answers."
WRITE = "Please write an answer."
UNUSUAL = "Please remove unusual characters, such as control characters, from your answer."


@dataclass(frozen=True)
class Answer:
    """One accepted answer: an option for a choice item, text for a text item."""

    link_id: str
    option: Option | None
    text: str | None


@dataclass(frozen=True)
class Scores:
    """Total and per-subscale scores, with their maxima and the codes to report them by."""

    total: Decimal
    total_max: Decimal
    subscales: dict[str, Decimal]
    subscale_max: dict[str, Decimal]
    total_code: Subscale
    subscale_codes: dict[str, Subscale]


def validate_answers(
    instrument: Instrument, form: Mapping[str, str]
) -> tuple[dict[str, Answer], dict[str, str]]:
    """Return accepted answers and client-facing errors, both keyed by linkId."""
    # Messages are fixed strings: a submitted value is never echoed back or logged.
    answers: dict[str, Answer] = {}
    errors: dict[str, str] = {}
    for item in instrument.items:
        raw = form.get(item.link_id)
        value = raw.strip() if isinstance(raw, str) else ""
        result = _choice(item, value) if item.kind == "choice" else _text(item, value)
        if isinstance(result, Answer):
            answers[item.link_id] = result
        elif result is not None:
            errors[item.link_id] = result
    return answers, errors


def _choice(item: Item, value: str) -> Answer | str | None:
    if not value:
        return CHOOSE if item.required else None
    option = item.option(value)
    if option is None:
        return NOT_LISTED
    return Answer(item.link_id, option, None)


def _text(item: Item, value: str) -> Answer | str | None:
    # Browsers send textarea line breaks as CRLF; count and store them as one character.
    value = value.replace("\r\n", "\n")
    if not value:
        return WRITE if item.required else None
    if any(_is_unusual(ch) for ch in value):
        return UNUSUAL
    limit = item.max_length or DEFAULT_TEXT_LIMIT
    if len(value) > limit:
        return f"Please keep this under {limit} characters."
    return Answer(item.link_id, None, value)


def _is_unusual(ch: str) -> bool:
    # Cc are control characters; Cs are lone surrogates, which cannot be encoded as UTF-8.
    return unicodedata.category(ch) in ("Cc", "Cs") and ch not in _ALLOWED_CONTROLS


def score(instrument: Instrument, answers: Mapping[str, Answer]) -> Scores:
    """Sum ordinal values per subscale and overall, as the Questionnaire defines them."""
    total = total_max = Decimal(0)
    subscales: dict[str, Decimal] = {}
    subscale_max: dict[str, Decimal] = {}
    subscale_codes: dict[str, Subscale] = {}
    for item in instrument.choice_items:
        answer = answers.get(item.link_id)
        option = answer.option if answer else None
        if option is None and item.required:
            raise ScoringError(f"required item {item.link_id!r} has no answer")
        if option is not None and option not in item.options:
            raise ScoringError(f"answer to {item.link_id!r} is not one of its options")
        if option is None:
            # Skipping an optional item leaves it out of the maximum too: a zero
            # would read as the lowest answer on scales that start at 1.
            continue
        item_max = max(o.ordinal for o in item.options)
        value = option.ordinal
        total += value
        total_max += item_max
        if item.subscale is not None:
            key = item.subscale.code
            subscale_codes.setdefault(key, item.subscale)
            subscales[key] = subscales.get(key, Decimal(0)) + value
            subscale_max[key] = subscale_max.get(key, Decimal(0)) + item_max
    total_code = instrument.code or Subscale(codes.SCORE_SYSTEM, codes.TOTAL_CODE, "Total score")
    return Scores(total, total_max, subscales, subscale_max, total_code, subscale_codes)
