"""The bundled instrument, and the rules an imported Questionnaire must meet."""

import copy
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from fhir_mappings.errors import InstrumentError
from fhir_mappings.instrument import (
    instrument_from_questionnaire,
    load_bundled,
    load_bundled_resource,
)
from fhir_mappings.scoring import score, validate_answers

DATA = Path(__file__).parents[1] / "data" / "fhir"
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"

# Short fragments of well-known licensed alliance instruments (WAI, WAI-SR, SRS),
# kept to a few words each: enough to catch copied wording, not a copy of any item.
LICENSED_FRAGMENTS = (
    "mutually agreed upon goals",
    "collaborate on setting goals",
    "agree on what is important",
    "appreciates me",
    "respect each other",
    "likes me",
    "heard, understood, and respected",
    "what i wanted to work on",
    "approach is a good fit",
    "something missing in the session",
    "clearer as to how",
    "new ways of looking at my problem",
)


def _licensed() -> dict:
    return json.loads((DATA / "licensed-questionnaire.json").read_text())


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_bundled_instrument_is_referenced_by_versioned_canonical():
    instrument = load_bundled()
    assert (
        instrument.canonical == "https://alliance-check.org/fhir/Questionnaire/alliance-check|1.0.0"
    )
    assert instrument.language == "en"
    assert instrument.title == "Alliance Check"


def test_bundled_asks_two_required_items_for_each_bordin_part():
    instrument = load_bundled()
    by_subscale = {}
    for item in instrument.choice_items:
        assert item.required
        assert (
            item.subscale.system == "https://alliance-check.org/fhir/CodeSystem/alliance-subscale"
        )
        by_subscale.setdefault(item.subscale.code, []).append(item.link_id)
    assert by_subscale == {
        "goal": ["goal-1", "goal-2"],
        "task": ["task-1", "task-2"],
        "bond": ["bond-1", "bond-2"],
    }


def test_every_bundled_option_scores_from_its_ordinal():
    for item in load_bundled().choice_items:
        assert [o.ordinal for o in item.options] == [Decimal(n) for n in range(5)]
        assert item.options[0].display == "Not at all"
        assert item.options[-1].display == "Completely"


def test_bundled_json_carries_ordinal_on_each_value_coding():
    resource = load_bundled_resource()
    for item in resource["item"]:
        for option in item.get("answerOption", []):
            urls = [e["url"] for e in option["valueCoding"]["extension"]]
            assert urls == [ORDINAL]


def test_free_text_item_is_optional_and_bounded():
    item = load_bundled().items[-1]
    assert (item.link_id, item.kind, item.required, item.max_length) == (
        "differently",
        "text",
        False,
        1000,
    )


@pytest.mark.parametrize("fragment", LICENSED_FRAGMENTS)
def test_bundled_wording_is_original(fragment):
    text = " ".join(_strings(load_bundled_resource())).lower()
    assert fragment not in re.sub(r"\s+", " ", text)


def test_imported_questionnaire_flattens_groups_and_reads_item_weights():
    instrument = instrument_from_questionnaire(_licensed())
    assert [i.link_id for i in instrument.items] == ["q1", "q2", "q3", "q4", "q5", "q6", "comments"]
    assert [o.ordinal for o in instrument.items[0].options] == [Decimal(n) for n in range(1, 6)]
    assert instrument.items[4].groups[0].link_id == "part-bond"
    # Without our subscale system, the first item code is the subscale; others are ignored.
    assert instrument.items[0].subscale.system.startswith("https://licensed.example.org/")
    assert [i.subscale.code for i in instrument.choice_items] == ["goal"] * 2 + ["task"] * 2 + [
        "bond"
    ] * 2
    assert instrument.code.code == "made-up-total"


def test_imported_questionnaire_scores_by_the_same_rules():
    ours, theirs = load_bundled(), instrument_from_questionnaire(_licensed())
    positions = [4, 3, 2, 1, 0, 4]
    form_ours = {
        i.link_id: i.options[p].code for i, p in zip(ours.choice_items, positions, strict=True)
    }
    form_theirs = {
        i.link_id: i.options[p].code for i, p in zip(theirs.choice_items, positions, strict=True)
    }
    a, b = (
        score(ours, validate_answers(ours, form_ours)[0]),
        score(theirs, validate_answers(theirs, form_theirs)[0]),
    )
    # Same picks on a 1..5 scale instead of 0..4: one point more per item answered.
    assert b.total == a.total + 6
    assert {k: v - 2 for k, v in b.subscales.items()} == a.subscales
    assert (b.total_max, b.subscale_max) == (Decimal(30), dict.fromkeys(a.subscales, Decimal(10)))


def _option(q, item=0, option=0):
    return q["item"][item]["answerOption"][option]


def _set(key, value):
    return lambda q: q.__setitem__(key, value)


def _item(key, value, item=0):
    return lambda q: q["item"][item].__setitem__(key, value)


BAD_QUESTIONNAIRES = [
    ("not a Questionnaire", _set("resourceType", "Patient"), "not a Questionnaire"),
    ("no url", lambda q: q.pop("url"), "url and version"),
    ("no version", lambda q: q.pop("version"), "url and version"),
    ("status not an R4 code", _set("status", "done"), "publication status"),
    ("no status", lambda q: q.pop("status"), "status"),
    ("unknown element", _set("scoring", "sum"), "scoring"),
    ("option without ordinal", lambda q: _option(q)["valueCoding"].pop("extension"), "ordinal"),
    (
        "conflicting ordinals",
        lambda q: _option(q).__setitem__("extension", [{"url": WEIGHT, "valueDecimal": 9}]),
        "ordinal",
    ),
    ("option without display", lambda q: _option(q)["valueCoding"].pop("display"), "display"),
    (
        "duplicate option code",
        lambda q: _option(q, 0, 1)["valueCoding"].update(code="0"),
        "repeats",
    ),
    ("answerValueSet instead", lambda q: q["item"][0].pop("answerOption"), "answerOption"),
    ("unsupported type", _item("type", "boolean"), "not supported"),
    ("display item", _item("type", "display"), "not supported"),
    ("not an R4 type", _item("type", "slider"), "not an R4 item type"),
    (
        "conditional item",
        _item("enableWhen", [{"question": "goal-2", "operator": "exists", "answerBoolean": True}]),
        "enableWhen",
    ),
    ("repeating item", _item("repeats", True), "repeats"),
    ("duplicate linkId", _item("linkId", "goal-2"), "more than once"),
    ("item without text", lambda q: q["item"][0].pop("text"), "no text"),
    ("reserved subscale", lambda q: q["item"][0]["code"][0].update(code="total"), "reserved"),
    ("zero maxLength", _item("maxLength", 0, item=6), "maxLength"),
    ("empty group", _set("item", [{"linkId": "g", "type": "group", "text": "G"}]), "no items"),
    ("nothing to score", lambda q: q.__setitem__("item", q["item"][6:]), "no choice items"),
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(m, msg, id=name) for name, m, msg in BAD_QUESTIONNAIRES],
)
def test_unusable_questionnaires_are_rejected(mutate, message):
    resource = copy.deepcopy(load_bundled_resource())
    mutate(resource)
    with pytest.raises(InstrumentError, match=message):
        instrument_from_questionnaire(resource)


@pytest.mark.parametrize("name", ["missing", "../pyproject", "alliance-check.json"])
def test_only_existing_bundled_names_load(name):
    with pytest.raises(InstrumentError):
        load_bundled(name)
