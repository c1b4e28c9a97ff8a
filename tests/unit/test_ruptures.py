"""The rupture rule: drops against the client's own baseline, repairs, early concern, bad input."""

import copy
import json
import math
from pathlib import Path

import pytest

from fhir_mappings.errors import InstrumentError, MappingError
from fhir_mappings.instrument import instrument_from_questionnaire, load_bundled
from fhir_mappings.ruptures import RuleParams, Session, SignalKind, TrajectoryError, detect
from fhir_mappings.scale_ranges import ScaleRanges
from fhir_mappings.trajectories import check_document

DATA = Path(__file__).parents[1] / "data" / "ruptures"
TABLE = json.loads((DATA / "trajectories.json").read_text())
COLUMNS = TABLE["columns"]
CASES = TABLE["cases"]
SEVEN_POINT = json.loads((DATA / "seven-point-questionnaire.json").read_text())
DELETE = object()


@pytest.fixture(scope="module")
def bundled():
    return ScaleRanges.from_instrument(load_bundled())


@pytest.fixture(scope="module")
def seven_point():
    return ScaleRanges.from_instrument(instrument_from_questionnaire(SEVEN_POINT))


def document(case, rescale=lambda value, items: value):
    """Build a trajectories document from a table case, rescaling scores if asked."""
    sessions = []
    for row in CASES[case]["sessions"]:
        session = dict(zip(COLUMNS, row, strict=True))
        session["total"] = rescale(session["total"], 6)
        for code in ("goal", "task", "bond"):
            session[code] = rescale(session[code], 2)
        sessions.append(session)
    return {"trajectories": [{"id": "c1", "sessions": sessions}]}


def decisions(result):
    return [[s["n"], s["kind"]] for s in result["results"][0]["signals"]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_signals_for_each_kind_of_trajectory(bundled, case):
    result = check_document(document(case), bundled)
    assert decisions(result) == CASES[case]["expected"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_1_to_7_instrument_decides_the_same_on_proportional_scores(seven_point, case):
    # 0-4 items mapped onto 1-7: each item x becomes 1 + 1.5x, so a k-item score s is k + 1.5s.
    result = check_document(document(case, lambda s, k: k + 1.5 * s), seven_point)
    assert decisions(result) == CASES[case]["expected"]


def test_check_document_defaults_to_the_bundled_instrument():
    result = check_document(document("drop then recovery: the V pattern"))
    assert decisions(result) == [[5, "rupture"], [6, "repair"]]


def test_rupture_reason_gives_the_numbers_behind_the_decision(bundled):
    signals = check_document(document("drop then recovery: the V pattern"), bundled)
    rupture = signals["results"][0]["signals"][0]["reason"]
    assert rupture.startswith(
        "total 12 is 7.5 below this client's running mean 19.5 of 4 sessions; "
        "beyond measurement error needs 5.5"
    )
    assert (
        "bond 3 is 4 below this client's running mean 7 of 4 sessions; "
        "beyond measurement error needs 3.2" in rupture
    )
    # Goals fell 2.5 against 3.19 needed: named subscales are only those beyond the threshold.
    assert "goal" not in rupture
    assert rupture.endswith("; 1 item at the lowest option; the client left a comment")


def test_repair_reason_names_the_rupture_it_closes(bundled):
    signals = check_document(document("partial return is not yet a repair"), bundled)
    repair = signals["results"][0]["signals"][1]["reason"]
    assert repair == (
        "total 20 is back within 4.9 of the pre-rupture mean 20, up 6 from its low 14 "
        "(rupture at session 5)"
    )


def test_a_subscale_rupture_does_not_blame_the_total(bundled):
    signals = check_document(document("bond drop while goals and tasks hold the total up"), bundled)
    assert signals["results"][0]["signals"][0]["reason"] == (
        "bond 3 is 4 below this client's running mean 7 of 4 sessions; "
        "beyond measurement error needs 3.2"
    )


def test_a_two_session_drop_is_judged_on_the_mean_of_the_two(bundled):
    # 15 and 15 against a mean of 20: 5 is short of the 5.5 one session needs, but their mean
    # has a smaller error (SEM * sqrt(1/2 + 1/4)), and 5 is beyond the 4.3 that needs.
    [rupture, repair] = check_document(
        document("two sessions a little low: neither alone beyond error, their mean is"), bundled
    )["results"][0]["signals"]
    assert rupture == {
        "n": 6,
        "kind": "rupture",
        "reason": "total 15 and 15 in sessions 5 and 6 average 15, 5 below this client's running "
        "mean 20 of 4 sessions; beyond measurement error for two sessions needs 4.3; "
        "the client left a comment",
    }
    # The repair is judged against the baseline before the first low session, from their low.
    assert repair["reason"] == (
        "total 20 is back within 4.9 of the pre-rupture mean 20, up 5 from its low 15 "
        "(rupture at session 6)"
    )


def test_early_concern_reasons_say_which_test_fired(bundled):
    low = check_document(document("early low totals"), bundled)["results"][0]["signals"]
    assert low[0]["reason"].startswith("total 7 is in the bottom third of 0-24 (8 or less)")
    bond = check_document(document("bond item at the floor early, with a good total"), bundled)
    assert bond["results"][0]["signals"][0]["reason"].startswith(
        "bond 1 means at least one bond item was answered at the lowest option"
    )


def test_rupture_sessions_stay_out_of_the_next_baseline(bundled):
    # Repaired at 6, then a second drop: 14 is 6 below the mean 20 of sessions 1-4, 6 and 7
    # (5.33 needed with k = 6); with the 12 in, the mean would be 18.9 and the drop too small.
    split = {20: (7, 6, 7), 12: (4, 4, 4), 14: (5, 4, 5)}
    rows = [(1, 20), (2, 20), (3, 20), (4, 20), (5, 12), (6, 20), (7, 20), (8, 14)]
    sessions = [
        Session(n, t, dict(zip(("goal", "task", "bond"), split[t], strict=True)), 0, False)
        for n, t in rows
    ]
    kinds = [(s.n, s.kind) for s in detect("c1", sessions, bundled)]
    assert kinds == [(5, SignalKind.RUPTURE), (6, SignalKind.REPAIR), (8, SignalKind.RUPTURE)]


def test_a_stricter_z_needs_a_bigger_drop(bundled):
    sessions = check_document(document("partial return is not yet a repair"), bundled)
    assert decisions(sessions)[0] == [5, "rupture"]
    strict = check_document(
        document("partial return is not yet a repair"), bundled, RuleParams(z=3.5)
    )
    assert decisions(strict) == []


def test_a_drop_is_judged_against_the_error_of_one_score_minus_a_mean_of_k(bundled):
    total = bundled.total
    # One score against the mean of k: SE = SEM * sqrt(1 + 1/k); k = 1 is Jacobson & Truax's.
    assert math.isclose(total.drop_threshold(2.8, 4), 2.8 * total.sem * math.sqrt(1.25))
    assert math.isclose(total.drop_threshold(1.96, 1), total.reliable_change(1.96))
    assert total.drop_threshold(2.8, 8) < total.drop_threshold(2.8, 3)
    # The mean of two low sessions against a mean of k: SE = SEM * sqrt(1/2 + 1/k).
    assert math.isclose(total.drop_threshold(2.8, 4, 2), 2.8 * total.sem * math.sqrt(0.75))
    for k, m in ((0, 1), (4, 0)):
        with pytest.raises(ValueError):
            total.drop_threshold(2.8, k, m)
    # 5.3 below a mean of 3 sessions is not beyond error (5.70 needed); after 8 it is (5.24).
    split = {20: (7, 6, 7), 14.7: (5, 4.7, 5)}
    early = [(n, 20) for n in range(1, 4)] + [(4, 14.7)]
    late = [(n, 20) for n in range(1, 9)] + [(9, 14.7)]
    for rows, expected in ((early, []), (late, [9])):
        sessions = [
            Session(n, t, dict(zip(("goal", "task", "bond"), split[t], strict=True)), 0, False)
            for n, t in rows
        ]
        assert [s.n for s in detect("c1", sessions, bundled)] == expected


def test_ranges_come_from_the_questionnaire(bundled, seven_point):
    assert (bundled.total.low, bundled.total.high) == (0, 24)
    assert {c: (s.low, s.high) for c, s in bundled.subscales.items()} == {
        "goal": (0, 8),
        "task": (0, 8),
        "bond": (0, 8),
    }
    assert (seven_point.total.low, seven_point.total.high) == (6, 42)
    assert bundled.total_is_sum and bundled.items == 6
    # The default SEM is the same share of every range, so thresholds scale with the instrument.
    assert math.isclose(bundled.total.reliable_change(1.96), 4.889, abs_tol=0.001)
    assert math.isclose(
        seven_point.total.reliable_change(1.96) / 36, bundled.total.reliable_change(1.96) / 24
    )


def test_explicit_sem_from_a_manual_replaces_the_default():
    ranges = ScaleRanges.from_instrument(load_bundled(), sem={"total": 1.0, "bond": 0.5})
    assert ranges.total.sem == 1.0
    assert ranges.subscales["bond"].sem == 0.5
    assert (
        ranges.subscales["goal"].sem
        == ScaleRanges.from_instrument(load_bundled()).subscales["goal"].sem
    )


@pytest.mark.parametrize(
    ("sem", "message"),
    [
        ({"alliance": 1.0}, "explicit SEM for unknown scale 'alliance'"),
        ({"total": 0}, "explicit SEM for 'total' must be above 0 and below its range"),
        ({"bond": 9}, "explicit SEM for 'bond' must be above 0 and below its range"),
    ],
)
def test_bad_explicit_sem_is_refused(sem, message):
    with pytest.raises(InstrumentError) as exc:
        ScaleRanges.from_instrument(load_bundled(), sem=sem)
    assert exc.value.message == message


BASE = document("drop then recovery: the V pattern")
S = ("trajectories", 0, "sessions")

DOC = "trajectories document: "
T0 = "trajectories[0]: "
C1 = "trajectory 'c1', "
T1 = C1 + "trajectory: "
S0 = "trajectory 'c1', sessions[0]: "
S3 = "trajectory 'c1', session 3: "
TOTAL = S3 + "'total' must be a number between 0 and 24"
FLOOR = S3 + "'floor_items' must be a whole number from 0 to 6"

BAD_INPUTS = [
    # (path to change, new value or DELETE, the exact message)
    ((), [], DOC + "'trajectories' must be in a JSON object"),
    (("extra",), 1, DOC + "'extra' is not a known field"),
    (("trajectories",), DELETE, DOC + "'trajectories' is missing"),
    (("trajectories",), {"id": "c1"}, DOC + "'trajectories' must be a list"),
    (("trajectories", 0), "c1", T0 + "'trajectory' must be an object with 'id' and 'sessions'"),
    (("trajectories", 0, "id"), DELETE, T0 + "'id' must be a non-empty string"),
    (("trajectories", 0, "id"), " ", T0 + "'id' must be a non-empty string"),
    (("trajectories", 0, "id"), 7, T0 + "'id' must be a non-empty string"),
    (("trajectories", 0, "note"), "x", T1 + "'note' is not a known field"),
    (S, [], T1 + "'sessions' must be a non-empty list"),
    (S, {"n": 1}, T1 + "'sessions' must be a non-empty list"),
    ((*S, 0), 20, S0 + "'session' must be an object"),
    ((*S, 0, "n"), DELETE, S0 + "'n' must be a whole number of 1 or more"),
    ((*S, 0, "n"), True, S0 + "'n' must be a whole number of 1 or more"),
    ((*S, 0, "n"), 0, S0 + "'n' must be a whole number of 1 or more"),
    ((*S, 0, "n"), "1", S0 + "'n' must be a whole number of 1 or more"),
    ((*S, 0, "n"), 1.0, S0 + "'n' must be a whole number of 1 or more"),
    ((*S, 2, "n"), 2, C1 + "session 2: 'n' appears twice"),
    ((*S, 2, "n"), 1, C1 + "session 1: 'n' comes after session 2; give sessions in order"),
    ((*S, 2, "total"), DELETE, S3 + "'total' is missing"),
    ((*S, 2, "total"), "20", TOTAL),
    ((*S, 2, "total"), True, TOTAL),
    ((*S, 2, "total"), None, TOTAL),
    ((*S, 2, "total"), 25, TOTAL),
    ((*S, 2, "total"), -1, TOTAL),
    ((*S, 2, "total"), float("nan"), TOTAL),
    ((*S, 2, "total"), 19, S3 + "'total' must equal goal + task + bond"),
    ((*S, 2, "bond"), 9, S3 + "'bond' must be a number between 0 and 8"),
    ((*S, 2, "goal"), False, S3 + "'goal' must be a number between 0 and 8"),
    ((*S, 2, "task"), DELETE, S3 + "'task' is missing"),
    ((*S, 2, "floor_items"), 7, FLOOR),
    ((*S, 2, "floor_items"), 1.5, FLOOR),
    ((*S, 2, "floor_items"), True, FLOOR),
    ((*S, 2, "comment"), "no", S3 + "'comment' must be true or false"),
    ((*S, 2, "comment"), DELETE, S3 + "'comment' is missing"),
    ((*S, 2, "note"), "x", S3 + "'note' is not a known field"),
]  # fmt: skip


def _changed(path, value):
    doc = copy.deepcopy(BASE)
    if not path:
        return value
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(("path", "value", "message"), BAD_INPUTS, ids=[m for *_, m in BAD_INPUTS])
def test_bad_input_names_the_trajectory_and_the_field(bundled, path, value, message):
    with pytest.raises(MappingError) as exc:
        check_document(_changed(path, value), bundled)
    assert str(exc.value) == message


def test_duplicate_trajectory_ids_are_refused(bundled):
    doc = copy.deepcopy(BASE)
    doc["trajectories"].append(copy.deepcopy(doc["trajectories"][0]))
    with pytest.raises(MappingError) as exc:
        check_document(doc, bundled)
    assert str(exc.value) == "trajectories[1]: 'id' 'c1' appears twice"


def test_detect_checks_sessions_built_in_python_too(bundled):
    with pytest.raises(TrajectoryError) as exc:
        detect("c9", [], bundled)
    assert (str(exc.value), exc.value.trajectory_id) == (
        "trajectory 'c9', sessions: 'sessions' must not be empty",
        "c9",
    )
    with pytest.raises(TrajectoryError) as exc:
        detect("c9", [Session(1, 20, {"goal": 7, "task": 6}, 0, False)], bundled)
    assert (str(exc.value), exc.value.field) == (
        "trajectory 'c9', session 1: 'bond' is missing",
        "bond",
    )
    with pytest.raises(TrajectoryError) as exc:
        detect("c9", [Session(0, 20, {"goal": 7, "task": 6, "bond": 7}, 0, False)], bundled)
    assert str(exc.value) == "trajectory 'c9', sessions[0]: 'n' must be a whole number of 1 or more"


def test_every_trajectory_gets_a_result_in_order(bundled):
    doc = copy.deepcopy(BASE)
    stable = document("stable client, with sessions not surveyed in between")["trajectories"][0]
    doc["trajectories"].insert(0, {**stable, "id": "c0"})
    result = check_document(doc, bundled)
    assert [(r["id"], len(r["signals"])) for r in result["results"]] == [("c0", 0), ("c1", 2)]
