"""The observations-only write, for EHRs that cannot create a QuestionnaireResponse."""

import base64

from fhir.resources.R4B.bundle import Bundle

from fhir_mappings.fallback import observations_only
from fhir_mappings.instrument import load_bundled
from fhir_mappings.references import rewrite
from tests.support.bundles import SUBMISSIONS, build, context, resources

INSTRUMENT = load_bundled()


def _full():
    return build(INSTRUMENT, SUBMISSIONS["mixed"]["form"], context())


def test_drops_the_response_keeps_every_score_and_adds_a_summary():
    full = _full()
    fallback = observations_only(full)
    Bundle.model_validate(fallback)
    assert resources(fallback, "QuestionnaireResponse") == []
    scores = resources(fallback, "Observation")
    assert len(scores) == len(resources(full, "Observation"))
    assert all("derivedFrom" not in o for o in scores)
    [summary] = resources(fallback, "DocumentReference")
    assert summary["status"] == "current"
    assert summary["subject"] == resources(full, "QuestionnaireResponse")[0]["subject"]


def test_summary_reads_as_the_answers_and_scores():
    fallback = observations_only(_full())
    [summary] = resources(fallback, "DocumentReference")
    text = base64.b64decode(summary["content"][0]["attachment"]["data"]).decode()
    assert "Could we start a little later?" in text
    for item in INSTRUMENT.choice_items:
        assert item.text in text
    assert "14" in text  # the mixed submission's total


def test_summary_is_a_conditional_create_under_the_response_identifier():
    full = _full()
    qr_identifier = resources(full, "QuestionnaireResponse")[0]["identifier"]
    fallback = observations_only(full)
    [entry] = [e for e in fallback["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    assert entry["request"]["ifNoneExist"] == (
        f"identifier={qr_identifier['system']}|{qr_identifier['value']}/summary"
    )
    assert observations_only(full) == fallback  # deterministic, so a retry finds the first copy


def test_rewrite_replaces_whole_references_only():
    resource = {"derivedFrom": [{"reference": "urn:uuid:1"}], "note": [{"text": "urn:uuid:1 x"}]}
    rewritten = rewrite(resource, {"urn:uuid:1": "QuestionnaireResponse/42"})
    assert rewritten["derivedFrom"] == [{"reference": "QuestionnaireResponse/42"}]
    assert rewritten["note"] == [{"text": "urn:uuid:1 x"}]
