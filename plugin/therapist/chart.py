"""Draw the alliance trend as inline SVG on the server: no script, readable at 400 px wide.

The first piece of the launch view (issue #10, part 3). The chart is decorative for screen
readers (`aria-hidden`): the page shows the same numbers in a table (`trend_rows`), which
is the accessible equivalent.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 380, 200
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 32, 8, 8, 24
# One line per score; dashes as well as colours, so the lines differ without colour vision.
LINES = (
    ("total", "#1f4e79", ""),
    ("goal", "#2e7d32", "6 3"),
    ("task", "#8a4b00", "2 3"),
    ("bond", "#6a1b9a", "8 3 2 3"),
)
MARKERS = {"rupture": "▼", "repair": "▲", "early-concern": "●"}


@dataclass(frozen=True)
class Point:
    """One answered session: its date label, scores by key, and the rule's signal if any."""

    label: str
    scores: Mapping[str, float]
    signal: str | None = None


def trend_svg(points: Sequence[Point], highs: Mapping[str, float]) -> str:
    """Return an SVG of each score as a share of its own maximum, session by session."""
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    step = inner_w / max(len(points) - 1, 1)

    def xy(i: int, key: str, value: float) -> tuple[float, float]:
        share = value / highs[key] if highs.get(key) else 0.0
        return PAD_LEFT + i * step, PAD_TOP + inner_h * (1 - share)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'width="100%" aria-hidden="true" focusable="false">',
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#767676"/>',
    ]
    for share, text in ((1, "100%"), (0.5, "50%"), (0, "0%")):
        y = PAD_TOP + inner_h * (1 - share)
        parts.append(f'<text x="2" y="{y + 4:.1f}" font-size="10">{text}</text>')
    for key, colour, dash in LINES:
        coords = [xy(i, key, p.scores[key]) for i, p in enumerate(points) if key in p.scores]
        if not coords:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        dashing = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dashing}/>'
        )
    for i, p in enumerate(points):
        if p.signal in MARKERS and "total" in p.scores:
            x, y = xy(i, "total", p.scores["total"])
            parts.append(
                f'<text x="{x:.1f}" y="{y - 6:.1f}" font-size="12" text-anchor="middle" '
                f'class="signal-{escape(p.signal)}">{MARKERS[p.signal]}</text>'
            )
    if points:
        for i in {0, len(points) - 1}:
            x = PAD_LEFT + i * step
            anchor = "start" if i == 0 else "end"
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 6}" font-size="10" text-anchor="{anchor}">'
                f"{escape(points[i].label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def trend_rows(points: Sequence[Point]) -> list[dict[str, str]]:
    """Return the chart's numbers as table rows, newest first: the accessible equivalent."""
    rows = []
    for p in reversed(points):
        row = {"session": p.label, "signal": p.signal or ""}
        row |= {key: format(p.scores[key], "g") for key, _, _ in LINES if key in p.scores}
        rows.append(row)
    return rows
