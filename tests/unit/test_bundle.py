"""The transaction Bundle that writes one response and its scores to the EHR."""

import dataclasses
import json
import uuid
from datetime import datetime
from decimal import Decimal

import pytest
from fhir.resources.R4B.bundle import Bundle

from fhir_mappings.bundle import build_transaction
from fhir_mappings.errors import BundleError
from fhir_mappings.instrument import instrument_from_questionnaire, load_bundled
from fhir_mappings.scoring import Answer, score, validate_answers
from tests.support.bundles import CONTEXT, DATA, ORDINAL, SUBMISSIONS, build, context, resources


@pytest.fixture
def instrument():
    return load_bundled()


@pytest.fixture
def bundle(instrument):
    return build(instrument, SUBMISSIONS["mixed"]["form"], context())


def test_bundle_round_trips_through_the_r4b_model(bundle):
    parsed = Bundle.model_validate(bundle)
    assert parsed.model_dump(mode="json", exclude_none=True) == bundle
    assert bundle["type"] == "transaction"


def test_one_response_and_one_observation_per_score(bundle):
    assert len(resources(bundle, "QuestionnaireResponse")) == 1
    observations = resources(bundle, "Observation")
    assert [
        (o["code"]["coding"][0]["code"], o["valueQuantity"]["value"]) for o in observations
    ] == [
        ("total", 14),
        ("goal", 7),
        ("task", 3),
        ("bond", 4),
    ]


def test_every_entry_is_a_conditional_create_on_its_identifier(bundle):
    for entry in bundle["entry"]:
        resource = entry["resource"]
        ident = resource["identifier"]
        ident = ident[0] if isinstance(ident, list) else ident
        assert ident["system"] == CONTEXT["identifier_system"]
        assert entry["request"] == {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
        }
    values = [e["request"]["ifNoneExist"].rsplit("|", 1)[1] for e in bundle["entry"]]
    rid = CONTEXT["response_id"]
    assert values == [rid, f"{rid}/total", f"{rid}/goal", f"{rid}/task", f"{rid}/bond"]


def test_a_retry_builds_the_identical_bundle(instrument, bundle):
    again = build(instrument, SUBMISSIONS["mixed"]["form"], context())
    assert json.dumps(again, sort_keys=True) == json.dumps(bundle, sort_keys=True)
    for entry in bundle["entry"]:
        assert uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:")).version == 5


def test_another_response_gets_other_full_urls(instrument, bundle):
    other = build(instrument, SUBMISSIONS["mixed"]["form"], context(response_id="r-2"))
    assert not {e["fullUrl"] for e in other["entry"]} & {e["fullUrl"] for e in bundle["entry"]}


def test_observations_derive_from_the_response_and_date_to_session_end(bundle):
    qr_url = bundle["entry"][0]["fullUrl"]
    for obs in resources(bundle, "Observation"):
        assert obs["derivedFrom"] == [{"reference": qr_url}]
        assert obs["effectiveDateTime"] == "2025-03-04T18:05:00Z"  # 13:05-05:00 in UTC
        assert obs["issued"] == "2025-03-04T18:20:00Z"
        assert obs["status"] == "final"
        assert obs["category"][0]["coding"][0]["code"] == "survey"
        assert obs["subject"] == {"reference": "Patient/c1"}
        assert obs["encounter"] == {"reference": "Encounter/e1"}
        assert {k: v for k, v in obs["valueQuantity"].items() if k != "value"} == {
            "unit": "{score}",
            "system": "http://unitsofmeasure.org",
            "code": "{score}",
        }


def test_response_records_who_answered_which_questionnaire(bundle, instrument):
    (qr,) = resources(bundle, "QuestionnaireResponse")
    assert qr["questionnaire"] == instrument.canonical
    assert qr["status"] == "completed"
    assert qr["subject"] == qr["author"] == {"reference": "Patient/c1"}
    assert qr["encounter"] == {"reference": "Encounter/e1"}
    assert qr["authored"] == "2025-03-04T18:20:00Z"
    assert qr["identifier"] == {
        "system": CONTEXT["identifier_system"],
        "value": CONTEXT["response_id"],
    }


def test_response_answers_are_codings_with_their_ordinal(bundle, instrument):
    (qr,) = resources(bundle, "QuestionnaireResponse")
    items = {i["linkId"]: i for i in qr["item"]}
    goal = items["goal-1"]
    assert goal["text"] == instrument.items[0].text
    assert goal["answer"] == [
        {
            "valueCoding": {
                "extension": [{"url": ORDINAL, "valueDecimal": 4}],
                "system": "https://alliance-check.org/fhir/CodeSystem/alliance-agreement",
                "code": "4",
                "display": "Completely",
            }
        }
    ]
    assert items["differently"]["answer"] == [{"valueString": "Could we start a little later?"}]


def test_no_encounter_is_written_when_unknown(instrument):
    bundle = build(instrument, SUBMISSIONS["mixed"]["form"], context(encounter=None))
    assert all("encounter" not in e["resource"] for e in bundle["entry"])


def test_skipped_free_text_is_left_out_of_the_response(instrument):
    bundle = build(instrument, SUBMISSIONS["all-lowest"]["form"], context())
    (qr,) = resources(bundle, "QuestionnaireResponse")
    assert [i["linkId"] for i in qr["item"]] == [i.link_id for i in instrument.choice_items]


def test_imported_instrument_keeps_its_groups_and_total_code():
    licensed = instrument_from_questionnaire(
        json.loads((DATA / "licensed-questionnaire.json").read_text())
    )
    form = {i.link_id: i.options[2].code for i in licensed.choice_items}
    bundle = build(licensed, form, context())
    (qr,) = resources(bundle, "QuestionnaireResponse")
    assert [(g["linkId"], [i["linkId"] for i in g["item"]]) for g in qr["item"]] == [
        ("part-goals-tasks", ["q1", "q2", "q3", "q4"]),
        ("part-bond", ["q5", "q6"]),
    ]
    total = resources(bundle, "Observation")[0]
    assert total["code"]["coding"][0]["code"] == "made-up-total"
    assert total["valueQuantity"]["value"] == 18
    Bundle.model_validate(bundle)


BAD_CONTEXTS = [
    ("naive authored", {"authored": datetime(2025, 3, 4, 18, 20)}, "timezone"),
    ("naive session end", {"session_ended_at": datetime(2025, 3, 4, 18, 5)}, "timezone"),
    ("bare patient id", {"patient": "c1"}, "patient"),
    ("wrong patient type", {"patient": "Practitioner/t1"}, "patient"),
    ("absolute patient url", {"patient": "https://ehr.example/Patient/c1"}, "patient"),
    ("bad encounter", {"encounter": "Encounter/"}, "encounter"),
    ("bad practitioner", {"practitioner": "Patient/c1"}, "practitioner"),
    ("response id with slash", {"response_id": "a/b"}, "response_id"),
    ("response id too long", {"response_id": "x" * 65}, "response_id"),
    ("system with pipe", {"identifier_system": "https://x.example/a|b"}, "identifier_system"),
    ("system with query", {"identifier_system": "https://x.example/?a=b"}, "identifier_system"),
    ("relative system", {"identifier_system": "alliance-response"}, "identifier_system"),
]


@pytest.mark.parametrize(
    ("changes", "message"),
    [pytest.param(changes, msg, id=name) for name, changes, msg in BAD_CONTEXTS],
)
def test_bad_context_is_refused_before_anything_is_sent(instrument, changes, message):
    with pytest.raises(BundleError, match=message):
        build(instrument, SUBMISSIONS["mixed"]["form"], context(**changes))


def test_answers_the_instrument_does_not_have_are_refused(instrument):
    answers, _ = validate_answers(instrument, SUBMISSIONS["mixed"]["form"])
    scores = score(instrument, answers)
    answers["extra"] = Answer("extra", None, "stray")
    with pytest.raises(BundleError, match="extra"):
        build_transaction(instrument, answers, scores, context())


def test_scores_with_clashing_keys_are_refused(instrument):
    answers, _ = validate_answers(instrument, SUBMISSIONS["mixed"]["form"])
    scores = score(instrument, answers)
    # A subscale keyed "total" would collide with the overall score's identifier.
    clash = dataclasses.replace(
        scores,
        subscales={"total": Decimal(1)},
        subscale_codes={"total": scores.total_code},
    )
    with pytest.raises(BundleError, match="fullUrl"):
        build_transaction(instrument, answers, clash, context())
