"""Score ranges and measurement error of an instrument's total and subscales."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fhir_mappings.errors import InstrumentError
from fhir_mappings.model import Instrument, Item

# Measurement error of one item, as a fraction of that item's range: 0.18 of a 0-4 item is
# 0.72 points. Summed over independent item errors this gives the bundled total an SEM of
# 1.76 (reliable change 4.9 of 24) and each two-item subscale 1.02 (reliable change 2.8 of 8).
# That total SEM equals an SD of 4.4 with reliability 0.84, the low end of what published
# alliance scales report; erring low on reliability makes the rule slower to flag noise.
DEFAULT_ITEM_SEM_FRACTION = 0.18

TOTAL = "total"


@dataclass(frozen=True)
class Scale:
    """One score the rule watches: its possible range and its standard error of measurement."""

    code: str
    low: float
    high: float
    sem: float
    # Below this sum at least one of the scale's items must sit at its lowest answer.
    floor_below: float

    @property
    def span(self) -> float:
        """Return the width of the range, high minus low."""
        return self.high - self.low

    def reliable_change(self, z: float) -> float:
        """Return the smallest difference between two scores that is beyond measurement error."""
        # Jacobson & Truax (1991): S_diff = sqrt(2) * SEM, a change is reliable past z * S_diff.
        return z * math.sqrt(2) * self.sem

    def drop_threshold(self, z: float, k: int, m: int = 1) -> float:
        """Return how far the mean of m new scores must fall below the mean of k earlier ones.

        The two means carry measurement error SEM / sqrt(m) and SEM / sqrt(k), so their
        difference has a standard error of SEM * sqrt(1/m + 1/k); sqrt(2) is the case k = m = 1.
        """
        if k < 1 or m < 1:
            raise ValueError("a baseline and a drop need at least one score each")
        return z * self.sem * math.sqrt(1 / m + 1 / k)


@dataclass(frozen=True)
class ScaleRanges:
    """The total and the subscales of one instrument, as the rupture rule needs them."""

    total: Scale
    subscales: Mapping[str, Scale] = field(default_factory=dict)
    items: int = 0
    # True when every scored item is required and belongs to a subscale, so the total must
    # equal the sum of the subscales; inputs that break it are rejected as inconsistent.
    total_is_sum: bool = False

    def __post_init__(self) -> None:
        # Frozen in spirit as well as in name: nobody can add a subscale after the fact.
        object.__setattr__(self, "subscales", MappingProxyType(dict(self.subscales)))

    @classmethod
    def from_instrument(
        cls,
        instrument: Instrument,
        item_sem_fraction: float = DEFAULT_ITEM_SEM_FRACTION,
        sem: Mapping[str, float] | None = None,
    ) -> "ScaleRanges":
        """Build ranges from the Questionnaire's ordinals and subscale codes.

        `sem` gives an explicit SEM per scale code ("total" or a subscale code), for a licensed
        instrument whose manual publishes them; other scales use `item_sem_fraction`.
        """
        if not 0 < item_sem_fraction < 1:
            raise InstrumentError("item_sem_fraction must be between 0 and 1")
        explicit = dict(sem or {})
        items = instrument.choice_items
        if any(len(i.options) < 2 for i in items):
            raise InstrumentError("every scored item needs at least two options")
        groups: dict[str, list[Item]] = {}
        for item in items:
            if item.subscale is not None:
                groups.setdefault(item.subscale.code, []).append(item)
        unknown = set(explicit) - {TOTAL, *groups}
        if unknown:
            raise InstrumentError(f"explicit SEM for unknown scale {sorted(unknown)[0]!r}")
        subscales = {
            code: _scale(code, members, item_sem_fraction, explicit.get(code))
            for code, members in groups.items()
        }
        return cls(
            total=_scale(TOTAL, list(items), item_sem_fraction, explicit.get(TOTAL)),
            subscales=subscales,
            items=len(items),
            total_is_sum=all(i.required and i.subscale is not None for i in items),
        )


def _scale(code: str, items: list[Item], fraction: float, explicit: float | None) -> Scale:
    ordinals = [sorted(float(o.ordinal) for o in item.options) for item in items]
    low = sum(o[0] for o in ordinals)
    high = sum(o[-1] for o in ordinals)
    if explicit is not None:
        if not 0 < explicit < high - low:
            raise InstrumentError(f"explicit SEM for {code!r} must be above 0 and below its range")
        sem = explicit
    else:
        # Independent item errors add in quadrature: k items have sqrt(k) times one item's SEM.
        sem = math.sqrt(sum((fraction * (o[-1] - o[0])) ** 2 for o in ordinals))
    return Scale(code, low, high, sem, floor_below=sum(o[1] for o in ordinals))
