"""What counts as consent to texts in a FHIR R4 Consent (fhir_mappings.consent), without I/O."""

from datetime import UTC, datetime

import pytest

from fhir_mappings.consent import parse_codes, texting_consents
from tests.support.schedule import SMS_CODE, consent

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
GIVEN = datetime(2026, 1, 15, 10, tzinfo=UTC)
CODES = parse_codes(["http://hl7.org/fhir/contact-point-system|sms"])


def stored(resource: dict, resource_id: str = "c1") -> dict:
    """Return the resource as the EHR serves it, with its id."""
    return {**resource, "id": resource_id}


def read(*resources: dict, patient_id: str = "p1"):
    return [
        (c.ref, c.granted, c.given_at)
        for c in texting_consents(list(resources), patient_id, CODES, NOW)
    ]


def test_an_active_permit_with_the_code_is_a_grant_given_at_its_date():
    assert read(stored(consent("p1", GIVEN))) == [("Consent/c1", True, GIVEN)]


def test_the_code_may_be_in_the_provision_instead_of_the_category():
    resource = stored(consent("p1", GIVEN, code=None))
    resource["provision"]["code"] = [{"coding": [SMS_CODE]}]
    assert read(resource) == [("Consent/c1", True, GIVEN)]


def test_a_deny_is_a_refusal_and_so_is_a_permit_whose_nested_provision_denies_texts():
    denied = stored(consent("p1", GIVEN, kind="deny"), "c2")
    excepted = stored(consent("p1", GIVEN, code=None), "c3")
    excepted["category"][0]["coding"].append(SMS_CODE)
    excepted["provision"]["provision"] = [{"type": "deny", "code": [{"coding": [SMS_CODE]}]}]
    assert read(denied, excepted) == [("Consent/c2", False, GIVEN), ("Consent/c3", False, GIVEN)]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"status": "proposed"}, "not active"),
        ({"status": "entered-in-error"}, "not active"),
        ({"patient": {"reference": "Patient/p2"}}, "another patient"),
        ({"patient": None}, "no patient"),
        ({"provision": {}}, "no provision type"),
        ({"dateTime": "2026-07-01T00:00:00Z"}, "given in the future"),
        ({"dateTime": "someday"}, "a date that cannot be ordered against a STOP"),
        ({"id": "no/such id"}, "an id that is no FHIR id"),
        ({"resourceType": "Patient"}, "not a Consent"),
    ],
)
def test_what_does_not_count(change, why):
    resource = {**stored(consent("p1", GIVEN)), **change}
    assert read(resource) == [], why


@pytest.mark.parametrize(
    ("start", "end", "counts"),
    [
        ("2026-01-01", "2026-06-01", True),  # an end date covers its whole day
        ("2026-01-01", "2026-06", True),  # ... and an end month its whole month
        ("2026-01-01", "2026-05-31", False),
        ("2026-06-02", None, False),
        (None, "2027", True),
    ],
)
def test_the_provisions_period_must_cover_now(start, end, counts):
    resource = stored(consent("p1", GIVEN))
    resource["provision"]["period"] = {
        key: value for key, value in (("start", start), ("end", end)) if value
    }
    assert bool(read(resource)) is counts


def test_without_a_datetime_the_periods_start_is_when_it_was_given():
    resource = stored(consent("p1", GIVEN))
    del resource["dateTime"]
    resource["provision"]["period"] = {"start": "2026-02-01"}
    assert read(resource) == [("Consent/c1", True, datetime(2026, 2, 1, tzinfo=UTC))]


def test_an_absolute_patient_reference_is_the_same_patient():
    resource = stored(consent("p1", GIVEN))
    resource["patient"] = {"reference": "https://ehr.example.org/fhir/Patient/p1"}
    assert read(resource) == [("Consent/c1", True, GIVEN)]


def test_consents_come_oldest_first():
    older, newer = stored(consent("p1", GIVEN), "old"), stored(consent("p1", NOW), "new")
    assert [ref for ref, _, _ in read(newer, older)] == ["Consent/old", "Consent/new"]


@pytest.mark.parametrize("bad", ["sms", "|sms", "http://x|", 7])
def test_a_code_must_be_system_bar_code(bad):
    with pytest.raises(ValueError, match=r"system\|code"):
        parse_codes([bad])
