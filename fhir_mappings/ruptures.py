"""Decide, session by session, whether a client's alliance scores show a rupture or a repair.

The rule compares each session, and the mean of each two consecutive sessions, with this
client's own running mean and calls a drop a rupture only when it is beyond the instrument's
measurement error for a mean of m scores against a mean of k, SEM * sqrt(1/m + 1/k); repairs
use reliable change (Jacobson & Truax 1991).
docs/ruptures.md gives the reasons and sources. It is a screening aid that points the
therapist at a session worth talking about, never a diagnosis.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from fhir_mappings.errors import MappingError
from fhir_mappings.scale_ranges import TOTAL, Scale, ScaleRanges


class SignalKind(StrEnum):
    """What one session's scores say about the alliance."""

    RUPTURE = "rupture"
    REPAIR = "repair"
    EARLY_CONCERN = "early-concern"


class TrajectoryError(MappingError):
    """A client's sessions cannot be checked; the message names the trajectory and the field."""

    def __init__(self, trajectory_id: str, where: str, field_name: str, problem: str) -> None:
        super().__init__(f"trajectory {trajectory_id!r}, {where}: {field_name!r} {problem}")
        self.trajectory_id = trajectory_id
        self.field = field_name


@dataclass(frozen=True)
class Session:
    """One scored session: numbers only, never the client's words."""

    n: int
    total: float
    subscales: Mapping[str, float]
    floor_items: int
    comment: bool


@dataclass(frozen=True)
class Signal:
    """One session's signal for the therapist, with a reason made of numbers only."""

    n: int
    kind: SignalKind
    reason: str


@dataclass(frozen=True)
class RuleParams:
    """The rule's settings; the defaults are the ones docs/ruptures.md measured."""

    # One-sided z for a drop of one session, or of the mean of two consecutive sessions, below
    # the mean of the k sessions in its baseline. The difference has a standard error of
    # SEM * sqrt(1/m + 1/k) for m low sessions, not Jacobson & Truax's SEM * sqrt(2) for two
    # single scores. A stable client gets about 9 baselines x 4 scores (total and 3
    # subscales) x 2 tests in 12 sessions, so z is set for that whole family: 2.8 keeps
    # simulated stable clients flagged at most once in 12 sessions under 10%
    # (bench.ruptures; docs/ruptures.md has the trade-off table and the seeds).
    z: float = 2.8
    # A repair is judged on Jacobson & Truax's reliable change, z * sqrt(2) * SEM, two-sided
    # 95%: back within it of the pre-rupture mean and up by more than it from the low.
    repair_z: float = 1.96
    # Earlier sessions a baseline needs; before that only early-concern can be signalled.
    baseline_min: int = 3
    # The baseline is the mean of at most this many recent eligible sessions, so a client
    # whose alliance grows over a long therapy is compared with where they are now, not with
    # session 1; 8 flagged fewer stable clients than 4 or 6 in bench.ruptures at no cost in
    # sensitivity.
    baseline_window: int = 8
    # Early concern: a total in the bottom third of the instrument's range.
    early_fraction: float = 1 / 3
    bond_code: str = "bond"

    def __post_init__(self) -> None:
        # Settings come from code or config, not from clients, so a mistake is a bug: fail loud.
        if not (self.z > 0 and self.repair_z > 0):
            raise ValueError("need z > 0 and repair_z > 0")
        if not 1 <= self.baseline_min <= self.baseline_window:
            raise ValueError("need 1 <= baseline_min <= baseline_window")
        if not 0 < self.early_fraction < 1:
            raise ValueError("early_fraction must be between 0 and 1")


@dataclass
class _Episode:
    """An open rupture: what dropped, the baseline it dropped from, the lowest score since."""

    n: int
    baseline: dict[str, float]
    lows: dict[str, float] = field(default_factory=dict)


def detect(
    trajectory_id: str,
    sessions: Sequence[Session],
    ranges: ScaleRanges,
    params: RuleParams | None = None,
) -> tuple[Signal, ...]:
    """Return the signals for one client's scored sessions, given in session order."""
    params = params or RuleParams()
    validate(trajectory_id, sessions, ranges)
    scales = {TOTAL: ranges.total, **ranges.subscales}
    pool: list[Session] = []  # earlier sessions the baseline may use
    # The session just before this one when it was judged against a baseline and passed, with
    # that baseline: the first half of a possible two-session drop.
    previous: tuple[Session, list[Session]] | None = None
    episode: _Episode | None = None
    signals: list[Signal] = []
    for s in sessions:
        if len(pool) < params.baseline_min:
            reason = _early_concern(s, ranges, params)
            if reason:
                signals.append(Signal(s.n, SignalKind.EARLY_CONCERN, _with_context(reason, s)))
            pool.append(s)
            continue
        if episode is None:
            window = pool[-params.baseline_window :]
            low, against = [s], window
            drops = _drops(low, against, scales, params.z)
            if not drops and previous is not None:
                # A drop that lasts two sessions shows in their mean, whose error is smaller
                # than one session's: judged against the baseline before the first of them.
                low, against = [previous[0], s], previous[1]
                drops = _drops(low, against, scales, params.z)
                if drops:
                    pool.remove(previous[0])
            previous = None
            if drops:
                # Rupture sessions stay out of the baseline, so one bad session does not
                # lower the bar the repair is judged against.
                baseline = _means(against, scales)
                episode = _Episode(s.n, {c: baseline[c] for c, _ in drops})
                episode.lows = {c: min(_score(x, c) for x in low) for c, _ in drops}
                reason = "; ".join(text for _, text in drops)
                signals.append(Signal(s.n, SignalKind.RUPTURE, _with_context(reason, s)))
            else:
                pool.append(s)
                previous = (s, window)
            continue
        reason = _repair(s, episode, scales, params.repair_z)
        if reason:
            signals.append(Signal(s.n, SignalKind.REPAIR, _with_context(reason, s)))
            episode = None
            pool.append(s)
        else:
            # Still open: one flag per episode, and the low sessions stay out of the baseline.
            for code in episode.lows:
                episode.lows[code] = min(episode.lows[code], _score(s, code))
    return tuple(signals)


def validate(trajectory_id: str, sessions: Sequence[Session], ranges: ScaleRanges) -> None:
    """Raise TrajectoryError unless every session is in order and inside the instrument's ranges."""
    if not sessions:
        raise TrajectoryError(trajectory_id, "sessions", "sessions", "must not be empty")
    previous: int | None = None
    for index, s in enumerate(sessions):
        if isinstance(s.n, bool) or not isinstance(s.n, int) or s.n < 1:
            raise TrajectoryError(
                trajectory_id, f"sessions[{index}]", "n", "must be a whole number of 1 or more"
            )
        where = f"session {s.n}"
        if previous is not None and s.n == previous:
            raise TrajectoryError(trajectory_id, where, "n", "appears twice")
        if previous is not None and s.n < previous:
            raise TrajectoryError(
                trajectory_id, where, "n", f"comes after session {previous}; give sessions in order"
            )
        previous = s.n
        _check_score(trajectory_id, where, ranges.total, s.total)
        missing = set(ranges.subscales) - set(s.subscales)
        extra = set(s.subscales) - set(ranges.subscales)
        if missing:
            raise TrajectoryError(trajectory_id, where, sorted(missing)[0], "is missing")
        if extra:
            raise TrajectoryError(
                trajectory_id, where, sorted(extra)[0], "is not a subscale of this instrument"
            )
        for code, scale in ranges.subscales.items():
            _check_score(trajectory_id, where, scale, s.subscales[code])
        if ranges.total_is_sum and not math.isclose(s.total, sum(s.subscales.values())):
            names = " + ".join(ranges.subscales)
            raise TrajectoryError(trajectory_id, where, "total", f"must equal {names}")
        if (
            isinstance(s.floor_items, bool)
            or not isinstance(s.floor_items, int)
            or not 0 <= s.floor_items <= ranges.items
        ):
            raise TrajectoryError(
                trajectory_id,
                where,
                "floor_items",
                f"must be a whole number from 0 to {ranges.items}",
            )
        if not isinstance(s.comment, bool):
            raise TrajectoryError(trajectory_id, where, "comment", "must be true or false")


def _check_score(trajectory_id: str, where: str, scale: Scale, value: object) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and scale.low <= value <= scale.high
    )
    if not ok:
        raise TrajectoryError(
            trajectory_id,
            where,
            scale.code,
            f"must be a number between {_num(scale.low)} and {_num(scale.high)}",
        )


def _score(s: Session, code: str) -> float:
    return s.total if code == TOTAL else s.subscales[code]


def _means(pool: Sequence[Session], scales: Mapping[str, Scale]) -> dict[str, float]:
    return {code: sum(_score(s, code) for s in pool) / len(pool) for code in scales}


def _drops(
    low: Sequence[Session], against: Sequence[Session], scales: Mapping[str, Scale], z: float
) -> list[tuple[str, str]]:
    baseline, k = _means(against, scales), len(against)
    found = []
    for code, scale in scales.items():
        # A subscale counts on its own: a bond drop matters even when goals and tasks
        # hold the total up (Bordin's three parts can rupture separately).
        values = [_score(s, code) for s in low]
        value, mean = sum(values) / len(values), baseline[code]
        needed = scale.drop_threshold(z, k, len(low))
        if mean - value > needed:
            if len(low) == 1:
                what, error = f"{code} {_num(value)} is", "measurement error"
            else:
                scores = " and ".join(_num(v) for v in values)
                numbers = " and ".join(str(s.n) for s in low)
                what = f"{code} {scores} in sessions {numbers} average {_num(value)},"
                error = "measurement error for two sessions"
            found.append(
                (
                    code,
                    f"{what} {_num(mean - value)} below this client's running mean "
                    f"{_num(mean)} of {k} sessions; beyond {error} needs {_num(needed)}",
                )
            )
    return found


def _repair(s: Session, episode: _Episode, scales: Mapping[str, Scale], z: float) -> str | None:
    parts = []
    for code, mean in episode.baseline.items():
        value, low, needed = _score(s, code), episode.lows[code], scales[code].reliable_change(z)
        # A V, not a wobble: back within reliable change of the pre-rupture mean, and a
        # reliable rise from the episode's low, so noise around a lasting drop is not a repair.
        if not (mean - value < needed and value - low > needed):
            return None
        parts.append(
            f"{code} {_num(value)} is back within {_num(needed)} of the pre-rupture mean "
            f"{_num(mean)}, up {_num(value - low)} from its low {_num(low)}"
        )
    return "; ".join(parts) + f" (rupture at session {episode.n})"


def _early_concern(s: Session, ranges: ScaleRanges, params: RuleParams) -> str | None:
    total = ranges.total
    cutoff = total.low + total.span * params.early_fraction
    # A third of a range can land one float step short of a whole score; that score is in.
    if s.total <= cutoff + 1e-9:
        return (
            f"total {_num(s.total)} is in the {_share(params.early_fraction)} of {_num(total.low)}-"
            f"{_num(total.high)} ({_num(cutoff)} or less), before a baseline exists"
        )
    bond = ranges.subscales.get(params.bond_code)
    if bond is not None and s.subscales[params.bond_code] < bond.floor_below:
        return (
            f"{params.bond_code} {_num(s.subscales[params.bond_code])} means at least one "
            f"{params.bond_code} item was answered at the lowest option, before a baseline exists"
        )
    return None


def _with_context(reason: str, s: Session) -> str:
    # Counts and a yes/no only: the comment's text never enters a signal.
    if s.floor_items:
        reason += f"; {s.floor_items} item{'s' if s.floor_items != 1 else ''} at the lowest option"
    if s.comment:
        reason += "; the client left a comment"
    return reason


def _share(fraction: float) -> str:
    return "bottom third" if math.isclose(fraction, 1 / 3) else f"bottom {fraction:.0%}"


def _num(x: float) -> str:
    return format(round(x, 1), "g")
