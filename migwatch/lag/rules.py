"""The small rules a verdict is built from: slope, ETA, hysteresis, slot-limit thresholds.

Pure functions of numbers and thresholds, each unit-tested on its own; the monitor combines them.
"""

from __future__ import annotations

from collections.abc import Sequence

from migwatch.config import Threshold
from migwatch.lag.model import SLOT_WAL, Level

#: slot retained WAL is a warning from this share of the slot's limit, critical from the next
SLOT_NEAR_LIMIT = 0.8
SLOT_CRITICAL_LIMIT = 0.95


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope (units per second) of (time, value) points; None under 2 points."""
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / den


def falling_rate(points: Sequence[tuple[float, float]]) -> float | None:
    """The rate to estimate an ETA with: the slope since the window's peak when the lag has
    fallen from it for at least two polls, else the slope of the whole window. A window that
    holds both the rise and the fall would otherwise promise hours for a lag falling fast."""
    if not points:
        return None
    peak = max(range(len(points)), key=lambda i: (points[i][1], i))
    since_peak = points[peak:]
    return slope(since_peak) if len(since_peak) >= 3 else slope(points)


def eta_seconds(value: float | None, caught_up: float, rate: float | None) -> float | None:
    """Seconds until `value` falls to `caught_up` at `rate` (units/s); None unless it falls."""
    if value is None:
        return None
    if value <= caught_up:
        return 0.0
    if rate is None or rate >= 0:
        return None
    return (value - caught_up) / -rate


def effective_threshold(measure: str, t: Threshold, limit: float | None) -> Threshold:
    """Slot WAL thresholds tighten near the slot's limit (max_slot_wal_keep_size or the spec's)."""
    if measure != SLOT_WAL or not limit:
        return t
    critical = min(t.critical, SLOT_CRITICAL_LIMIT * limit)
    warn = min(t.warn, SLOT_NEAR_LIMIT * limit)
    caught_up = min(t.caught_up, warn)
    return Threshold(warn=warn, critical=max(critical, warn), caught_up=caught_up,
                     hard_max=None if t.hard_max is None else max(t.hard_max, critical),
                     clear_ratio=t.clear_ratio)


def next_level(previous: Level, value: float | None, t: Threshold) -> Level:
    """Hysteresis: enter warn/critical above X, leave only below X × clear_ratio.

    An unknown value keeps the previous level: not knowing is no reason to clear an alert.
    """
    if value is None:
        return previous
    if value > t.critical:
        return Level.CRITICAL
    if previous is Level.CRITICAL and value > t.critical * t.clear_ratio:
        return Level.CRITICAL
    if value > t.warn:
        return Level.WARN
    if previous in (Level.WARN, Level.CRITICAL) and value > t.warn * t.clear_ratio:
        return Level.WARN
    return Level.OK
