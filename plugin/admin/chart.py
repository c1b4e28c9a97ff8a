"""Geometry for the overview's weekly bar chart, drawn as inline SVG by the template."""

from dataclasses import dataclass

from plugin.admin.stats import Stats

SERIES = (
    ("sessions", "Sessions"),
    ("sent", "Invitations sent"),
    ("answered", "Answered"),
    ("expired", "Expired"),
    ("opted_out", "Opted out"),
)
WIDTH, HEIGHT = 600, 220
LEFT, BOTTOM, TOP = 32, 24, 8


@dataclass(frozen=True)
class Bar:
    """One bar: its box in the SVG's coordinates, its series and its value."""

    x: float
    y: float
    width: float
    height: float
    series: str
    value: int


def weekly_chart(stats: Stats) -> dict:
    """Return the bars, axis ticks and week labels of a grouped bar chart of the weeks."""
    peak = max([1] + [getattr(w, s) for w in stats.weeks for s, _ in SERIES])
    plot_height = HEIGHT - BOTTOM - TOP
    group = (WIDTH - LEFT) / len(stats.weeks)
    bar = (group - 4) / len(SERIES)
    bars, labels = [], []
    for i, week in enumerate(stats.weeks):
        x0 = LEFT + i * group + 2
        for j, (series, _) in enumerate(SERIES):
            value = getattr(week, series)
            height = plot_height * value / peak
            bars.append(Bar(x0 + j * bar, TOP + plot_height - height, bar, height, series, value))
        labels.append((x0 + group / 2 - 2, f"{week.start:%d %b}"))
    ticks = sorted({0, peak // 2, peak})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "baseline": TOP + plot_height,
        "bars": bars,
        "labels": labels,
        "ticks": [(TOP + plot_height - plot_height * t / peak, t) for t in ticks],
        "series": SERIES,
    }
