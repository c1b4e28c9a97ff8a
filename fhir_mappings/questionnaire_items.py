"""Check and flatten Questionnaire items into the Items a client answers."""

from collections.abc import Iterator, Sequence
from decimal import Decimal

from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.questionnaire import QuestionnaireItem, QuestionnaireItemAnswerOption

from fhir_mappings import codes
from fhir_mappings.errors import InstrumentError
from fhir_mappings.model import Group, Item, Option, Subscale

_ORDINAL_URLS = (codes.ORDINAL_VALUE_URL, codes.ITEM_WEIGHT_URL)


def parse_items(items: Sequence[QuestionnaireItem]) -> tuple[Item, ...]:
    """Flatten the item tree into answerable items, checking every rule scoring needs."""
    seen: set[str] = set()
    parsed = tuple(_walk(items, (), seen))
    if not any(i.kind == "choice" for i in parsed):
        raise InstrumentError("Questionnaire has no choice items to score")
    systems: dict[str, str] = {}
    for item in parsed:
        if item.subscale is None:
            continue
        # Scores are keyed by subscale code, so one code must mean one thing.
        if systems.setdefault(item.subscale.code, item.subscale.system) != item.subscale.system:
            raise InstrumentError(f"subscale code {item.subscale.code!r} is used in two systems")
    return parsed


def _walk(
    items: Sequence[QuestionnaireItem], groups: tuple[Group, ...], seen: set[str]
) -> Iterator[Item]:
    for node in items:
        link_id = node.linkId
        if link_id in seen:
            raise InstrumentError(f"linkId {link_id!r} is used more than once")
        seen.add(link_id)
        if node.type not in codes.ITEM_TYPES:
            raise InstrumentError(f"item {link_id!r} has a type that is not an R4 item type")
        # Conditional and repeating items would make "required" and the score
        # depend on logic we do not evaluate, so refuse them up front.
        if node.enableWhen:
            raise InstrumentError(f"item {link_id!r} uses enableWhen, which is not supported")
        if node.repeats:
            raise InstrumentError(f"item {link_id!r} repeats, which is not supported")
        if node.type == "group":
            if not node.item:
                raise InstrumentError(f"group {link_id!r} has no items")
            yield from _walk(node.item, (*groups, Group(link_id, node.text)), seen)
            continue
        if node.type not in ("choice", "text"):
            raise InstrumentError(
                f"item {link_id!r} has type {node.type!r}, which is not supported"
            )
        if not node.text:
            raise InstrumentError(f"item {link_id!r} has no text to show")
        if node.maxLength is not None and node.maxLength < 1:
            raise InstrumentError(f"item {link_id!r} has a maxLength below 1")
        options = _options(node) if node.type == "choice" else ()
        yield Item(
            link_id=link_id,
            text=node.text,
            kind=node.type,
            required=bool(node.required),
            subscale=_subscale(node) if node.type == "choice" else None,
            options=options,
            max_length=node.maxLength if node.type == "text" else None,
            groups=groups,
        )


def _subscale(node: QuestionnaireItem) -> Subscale | None:
    if not node.code:
        return None
    # A licensed import may code items with LOINC as well; our system wins if present.
    ours = [c for c in node.code if c.system == codes.SUBSCALE_SYSTEM]
    coding = (ours or node.code)[0]
    if not coding.system or not coding.code:
        raise InstrumentError(f"item {node.linkId!r} has a code without system or code")
    if coding.code == codes.TOTAL_CODE:
        raise InstrumentError(f"item {node.linkId!r}: subscale code 'total' is reserved")
    return Subscale(coding.system, coding.code, coding.display)


def _options(node: QuestionnaireItem) -> tuple[Option, ...]:
    if not node.answerOption:
        # answerValueSet cannot carry per-answer ordinal values, so it cannot be scored.
        raise InstrumentError(f"choice item {node.linkId!r} has no answerOption list")
    options = tuple(_option(node.linkId, o) for o in node.answerOption)
    if len({o.code for o in options}) != len(options):
        raise InstrumentError(f"choice item {node.linkId!r} repeats an answer code")
    return options


def _option(link_id: str, answer: QuestionnaireItemAnswerOption) -> Option:
    coding = answer.valueCoding
    if coding is None or not coding.code or not coding.display:
        raise InstrumentError(f"item {link_id!r}: every option needs a valueCoding with display")
    found = {
        _extension_number(ext)
        for holder in (coding, answer)
        for ext in holder.extension or []
        if ext.url in _ORDINAL_URLS
    }
    if len(found) != 1 or None in found:
        raise InstrumentError(f"item {link_id!r}: option {coding.code!r} needs one ordinal value")
    (ordinal,) = found
    if not ordinal.is_finite():
        raise InstrumentError(f"item {link_id!r}: option {coding.code!r} has no finite ordinal")
    return Option(code=coding.code, system=coding.system, display=coding.display, ordinal=ordinal)


def _extension_number(ext: Extension) -> Decimal | None:
    if ext.valueDecimal is not None:
        return Decimal(ext.valueDecimal)
    if ext.valueInteger is not None:
        return Decimal(ext.valueInteger)
    return None
