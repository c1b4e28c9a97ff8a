"""Checking a client's answers and scoring them from the Questionnaire's ordinals."""

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from fhir_mappings.errors import ScoringError
from fhir_mappings.instrument import (
    instrument_from_questionnaire,
    load_bundled,
    load_bundled_resource,
)
from fhir_mappings.scoring import Answer, score, validate_answers

DATA = Path(__file__).parents[1] / "data" / "fhir"
SUBMISSIONS = json.loads((DATA / "submissions.json").read_text())


@pytest.fixture
def instrument():
    return load_bundled()


@pytest.fixture
def form():
    return dict(SUBMISSIONS["mixed"]["form"])


@pytest.mark.parametrize("name", sorted(SUBMISSIONS))
def test_scores_are_sums_of_ordinals_per_subscale_and_overall(instrument, name):
    case = SUBMISSIONS[name]
    answers, errors = validate_answers(instrument, case["form"])
    assert errors == {}
    scores = score(instrument, answers)
    expected = {k: Decimal(v) for k, v in case["expected"].items()}
    assert scores.total == expected.pop("total")
    assert scores.subscales == expected


def test_maximum_scores_come_from_the_highest_ordinals(instrument, form):
    scores = score(instrument, validate_answers(instrument, form)[0])
    assert scores.total_max == Decimal(24)
    assert scores.subscale_max == {"goal": Decimal(8), "task": Decimal(8), "bond": Decimal(8)}


def test_scores_carry_the_codes_to_report_them_by(instrument, form):
    scores = score(instrument, validate_answers(instrument, form)[0])
    assert (scores.total_code.system, scores.total_code.code) == (
        "https://alliance-check.org/fhir/CodeSystem/alliance-score",
        "total",
    )
    assert scores.subscale_codes["bond"] == instrument.items[4].subscale


def test_total_falls_back_to_our_score_code_when_questionnaire_has_none(form):
    resource = copy.deepcopy(load_bundled_resource())
    resource.pop("code")
    instrument = instrument_from_questionnaire(resource)
    scores = score(instrument, validate_answers(instrument, form)[0])
    assert scores.total_code.code == "total"
    assert scores.total_code.system == "https://alliance-check.org/fhir/CodeSystem/alliance-score"


def test_answers_hold_the_chosen_option_and_trimmed_text(instrument, form):
    form["differently"] = "  Shorter homework, please.\r\n\tThanks  "
    answers, _ = validate_answers(instrument, form)
    assert answers["goal-1"].option.display == "Completely"
    assert answers["differently"] == Answer(
        "differently", None, "Shorter homework, please.\n\tThanks"
    )


@pytest.mark.parametrize("blank", ["", "   ", "\r\n"])
def test_blank_free_text_is_not_an_answer(instrument, form, blank):
    form["differently"] = blank
    answers, errors = validate_answers(instrument, form)
    assert "differently" not in answers
    assert errors == {}


def test_text_at_the_limit_is_accepted(instrument, form):
    form["differently"] = "x" * 1000
    answers, errors = validate_answers(instrument, form)
    assert errors == {}
    assert len(answers["differently"].text) == 1000


CHOOSE = "Please choose an answer."
NOT_LISTED = "Please choose one of the listed answers."
TOO_LONG = "Please keep this under 1000 characters."
UNUSUAL = "Please remove unusual characters, such as control characters, from your answer."

BAD_SUBMISSIONS = [
    ("missing required", "goal-1", None, CHOOSE),
    ("blank required", "task-2", "  ", CHOOSE),
    ("unknown code", "bond-1", "7", NOT_LISTED),
    ("display instead of code", "bond-1", "Completely", NOT_LISTED),
    ("markup", "goal-2", "<script>alert(1)</script>", NOT_LISTED),
    ("too long", "differently", "long answer " * 90, TOO_LONG),
    ("NUL byte", "differently", "fine\x00then not", UNUSUAL),
    ("terminal escape", "differently", "colour \x1b[31mred", UNUSUAL),
    ("lone surrogate", "differently", "broken \ud800 text", UNUSUAL),
]


@pytest.mark.parametrize(
    ("link_id", "value", "message"),
    [pytest.param(link, value, msg, id=name) for name, link, value, msg in BAD_SUBMISSIONS],
)
def test_bad_submissions_get_a_plain_error_that_never_echoes_the_value(
    instrument, form, link_id, value, message
):
    if value is None:
        form.pop(link_id)
    else:
        form[link_id] = value
    answers, errors = validate_answers(instrument, form)
    assert errors == {link_id: message}
    assert link_id not in answers
    if value and value.strip():
        assert value.strip() not in errors[link_id]


def test_every_missing_answer_is_reported_at_once(instrument):
    _, errors = validate_answers(instrument, {})
    assert errors == dict.fromkeys([i.link_id for i in instrument.choice_items], CHOOSE)


def test_scoring_refuses_a_missing_required_answer(instrument, form):
    answers, _ = validate_answers(instrument, form)
    del answers["bond-2"]
    with pytest.raises(ScoringError, match="bond-2"):
        score(instrument, answers)


def test_scoring_refuses_an_option_from_another_item(instrument, form):
    licensed = instrument_from_questionnaire(
        json.loads((DATA / "licensed-questionnaire.json").read_text())
    )
    answers, _ = validate_answers(instrument, form)
    answers["goal-1"] = Answer("goal-1", licensed.items[0].options[0], None)
    with pytest.raises(ScoringError, match="goal-1"):
        score(instrument, answers)


def test_skipped_optional_choice_leaves_the_maximum_too(form):
    resource = copy.deepcopy(load_bundled_resource())
    resource["item"][5]["required"] = False
    instrument = instrument_from_questionnaire(resource)
    form.pop("bond-2")
    answers, errors = validate_answers(instrument, form)
    scores = score(instrument, answers)
    assert errors == {}
    assert (scores.total, scores.total_max) == (Decimal(10), Decimal(20))
    assert (scores.subscales["bond"], scores.subscale_max["bond"]) == (Decimal(0), Decimal(4))
