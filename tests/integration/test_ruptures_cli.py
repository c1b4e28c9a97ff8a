"""`alliance-check ruptures check`: the rupture rule over a file, with errors naming the field."""

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data" / "ruptures"


def test_check_prints_each_trajectorys_signals(runner):
    result = runner.invoke(args=["ruptures", "check", "--file", str(DATA / "check-input.json")])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)["results"]
    assert [r["id"] for r in results] == ["steady", "drop", "two low"]
    assert results[0]["signals"] == []
    [signal] = results[1]["signals"]
    assert (signal["n"], signal["kind"]) == (5, "rupture")
    assert "total 10 is 10 below this client's running mean 20" in signal["reason"]
    assert signal["reason"].endswith("the client left a comment")
    # Neither 15 alone is beyond error against 20; the two together are, flagged at the second.
    [signal] = results[2]["signals"]
    assert (signal["n"], signal["kind"]) == (7, "rupture")
    assert signal["reason"].startswith("total 15 and 15 in sessions 6 and 7 average 15, 5 below")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON at line 1, column 2"),
        ('{"trajectories": {}}', "'trajectories' must be a list"),
        (
            '{"trajectories": [{"id": "c7", "sessions": [{"n": 1, "total": 99, "goal": 7,'
            ' "task": 6, "bond": 7, "floor_items": 0, "comment": false}]}]}',
            "trajectory 'c7', session 1: 'total' must be a number between 0 and 24",
        ),
    ],
)
def test_bad_input_is_an_error_naming_the_field(runner, tmp_path, content, message):
    path = tmp_path / "trajectories.json"
    path.write_text(content)
    result = runner.invoke(args=["ruptures", "check", "--file", str(path)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_missing_file_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(args=["ruptures", "check", "--file", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "nope.json" in result.output
