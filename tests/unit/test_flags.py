"""fhir_mappings.flags: the rule's verdict on a new response as a Flag entry, or a note."""

from datetime import timedelta

import pytest

from fhir_mappings.bundle import transaction
from fhir_mappings.errors import BundleError
from fhir_mappings.flags import decide, read_response, sessions_from_observations
from fhir_mappings.instrument import load_bundled
from fhir_mappings.scale_ranges import ScaleRanges
from tests.support.backlog import every_item
from tests.support.bundles import build, context, resources

INSTRUMENT = load_bundled()
RANGES = ScaleRanges.from_instrument(INSTRUMENT)
SYSTEM = context().identifier_system


def response(n: int, option: str, **extra):
    """The Bundle of session n (a week apart), every item answered with `option`."""
    ended = context().session_ended_at + timedelta(weeks=n)
    ctx = context(response_id=f"r{n}", session_ended_at=ended, authored=ended)
    return build(INSTRUMENT, every_item(option, **extra), ctx)


def history(*bundles):
    return [o for b in bundles for o in resources(b, "Observation")]


def test_the_first_low_session_is_an_early_concern_flag_that_never_quotes_the_comment():
    new = read_response(response(1, "0", differently="My brother again."), INSTRUMENT)
    assert (new.session.floor_items, new.session.comment) == (6, True)
    decision = decide(new, [], RANGES)
    [entry] = decision.entries
    flag = entry["resource"]
    assert decision.note == "early-concern flag written"
    assert entry["request"] == {
        "method": "POST",
        "url": "Flag",
        "ifNoneExist": f"identifier={SYSTEM}|r1/flag",
    }
    assert flag["status"] == "active"
    assert "6 items at the lowest option" in flag["code"]["text"]
    assert "The client left a comment" in flag["code"]["text"]
    assert "brother" not in str(flag)


def test_a_resend_or_a_later_session_already_written_is_not_history():
    earlier = [response(n, "3") for n in range(1, 5)]
    drop = response(5, "1")
    later = response(6, "3")
    new = read_response(drop, INSTRUMENT)
    seen = sessions_from_observations(history(*earlier, drop, later), SYSTEM)
    assert [s.response_id for s in seen] == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert decide(new, seen, RANGES).note == "rupture flag written"


def test_a_drop_over_two_sessions_is_flagged_at_the_second():
    # 18 -> 13 twice (goal -2, task -2, bond -1): 5 is short of the 5.5 one session needs
    # against four sessions of 18, and beyond the 4.3 the mean of two sessions needs.
    first: dict[str, str] = {}
    for item in INSTRUMENT.choice_items:
        first.setdefault(item.subscale.code, item.link_id)
    low = {first["goal"]: "1", first["task"]: "1", first["bond"]: "2"}
    steady = [response(n, "3") for n in range(1, 5)]
    fifth = response(5, "3", **low)
    seen = sessions_from_observations(history(*steady), SYSTEM)
    assert (
        decide(read_response(fifth, INSTRUMENT), seen, RANGES).note
        == "no signal (4 earlier sessions)"
    )
    seen = sessions_from_observations(history(*steady, fifth), SYSTEM)
    decision = decide(read_response(response(6, "3", **low), INSTRUMENT), seen, RANGES)
    [entry] = decision.entries
    assert decision.note == "rupture flag written"
    assert entry["request"]["ifNoneExist"] == f"identifier={SYSTEM}|r6/flag"
    assert entry["resource"]["code"]["text"].startswith(
        "Alliance rupture: total 13 and 13 in sessions 5 and 6 average 13, 5 below"
    )


def test_the_repair_updates_the_episodes_flag_by_its_identifier():
    bundles = [response(n, "3") for n in range(1, 5)] + [response(5, "1")]
    new = read_response(response(6, "3"), INSTRUMENT)
    decision = decide(new, sessions_from_observations(history(*bundles), SYSTEM), RANGES)
    [entry] = decision.entries
    assert entry["request"] == {"method": "PUT", "url": f"Flag?identifier={SYSTEM}|r5/flag"}
    assert entry["resource"]["status"] == "inactive"
    assert entry["resource"]["period"]["end"] > entry["resource"]["period"]["start"]


def test_scores_of_another_system_are_ignored():
    assert sessions_from_observations(history(response(1, "3")), "urn:other") == []


def test_a_flag_status_outside_r4_is_refused():
    new = read_response(response(1, "0"), INSTRUMENT)
    [entry] = decide(new, [], RANGES).entries
    entry["resource"]["status"] = "done"
    with pytest.raises(BundleError, match=r"Flag\.status"):
        transaction([entry])
