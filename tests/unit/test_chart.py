"""plugin.therapist.chart: the trend drawn as inline SVG, with a table of the same numbers."""

import xml.etree.ElementTree as ET

from plugin.therapist.chart import Point, trend_rows, trend_svg

HIGHS = {"total": 24, "goal": 8, "task": 8, "bond": 8}
POINTS = [
    Point("5 Jan", {"total": 18, "goal": 6, "task": 6, "bond": 6}),
    Point("12 Jan", {"total": 6, "goal": 2, "task": 2, "bond": 2}, "rupture"),
    Point("19 Jan", {"total": 18, "goal": 6, "task": 6, "bond": 6}, "repair"),
]
SVG = "{http://www.w3.org/2000/svg}"


def test_the_chart_is_well_formed_svg_with_one_line_per_score_and_the_signals():
    root = ET.fromstring(trend_svg(POINTS, HIGHS))  # noqa: S314 (our own output)
    assert root.get("aria-hidden") == "true"
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 4
    total = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    # Same score, same height; the drop is lower on the page (a larger y).
    assert total[0][1] == total[2][1] < total[1][1]
    marks = [t.text for t in root.findall(f"{SVG}text") if t.get("class")]
    assert marks == ["▼", "▲"]
    assert "<script" not in trend_svg(POINTS, HIGHS)


def test_labels_are_escaped():
    svg = trend_svg([Point("<b>", {"total": 1})], HIGHS)
    assert "&lt;b&gt;" in svg and "<b>" not in svg


def test_the_table_holds_the_same_numbers_newest_first():
    rows = trend_rows(POINTS)
    assert [r["session"] for r in rows] == ["19 Jan", "12 Jan", "5 Jan"]
    assert rows[1] == {
        "session": "12 Jan",
        "signal": "rupture",
        "total": "6",
        "goal": "2",
        "task": "2",
        "bond": "2",
    }
