"""The gate: caught up for `consecutive_polls` polls in a row, or a GateFailed a person can act on.

Apart from the monitor because the gate judges a run's evaluations over its whole length (timeout,
hard maximum, progress from the peak), while the monitor judges one window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from migwatch.config import MonitorSpec
from migwatch.errors import GateFailed
from migwatch.lag.formatting import format_duration, format_value
from migwatch.lag.model import Evaluation, Verdict


@dataclass(frozen=True)
class GateStatus:
    state: str  # waiting | passed
    consecutive: int
    needed: int
    elapsed_seconds: float
    timeout_seconds: float


class Gate:
    """Passes after `consecutive_polls` caught-up polls in a row; fails on timeout or hard max.

    `observe` raises GateFailed with one line a person can act on; once passed it stays passed.
    """

    def __init__(self, spec: MonitorSpec, started_at: float) -> None:
        self.spec = spec
        self.started_at = started_at
        self.consecutive = 0
        self.passed = False

    def observe(self, ev: Evaluation) -> GateStatus:
        elapsed = ev.at - self.started_at
        if not self.passed:
            for m in ev.measures.values():
                hard = self.spec.thresholds[m.name].hard_max
                if hard is not None and m.value is not None and m.value > hard:
                    raise GateFailed(
                        f"{m.name} {format_value(m.name, m.value)} crossed its hard maximum "
                        f"{format_value(m.name, hard)} (verdict {ev.verdict.value})")
            self.consecutive = self.consecutive + 1 if ev.caught_up else 0
            if self.consecutive >= self.spec.consecutive_polls:
                self.passed = True
            elif elapsed >= self.spec.timeout_seconds:
                raise GateFailed(f"not caught up after {format_duration(elapsed)} "
                                 f"(timeout {format_duration(self.spec.timeout_seconds)}): "
                                 + _why_not(ev))
        return GateStatus(state="passed" if self.passed else "waiting",
                          consecutive=self.consecutive, needed=self.spec.consecutive_polls,
                          elapsed_seconds=elapsed, timeout_seconds=self.spec.timeout_seconds)


def _why_not(ev: Evaluation) -> str:
    """The verdict with its first reason, then the measures not caught up (at most three)."""
    head = f"verdict {ev.verdict.value}"
    if ev.verdict is not Verdict.OK and ev.reasons:
        head += f" ({ev.reasons[0]})"
    over = [f"{m.name} {format_value(m.name, m.value)} > caught_up "
            f"{format_value(m.name, m.caught_up_threshold)}" if m.value is not None
            else f"{m.name} not measured"
            for m in ev.measures.values() if not m.caught_up]
    return "; ".join([head, *over[:3]])


def progress_percent(ev: Evaluation, peaks: Mapping[str, float]) -> float:
    """How far the slowest measure came down from its peak towards caught_up, 0–100."""
    worst = 1.0
    for m in ev.measures.values():
        if m.caught_up:
            continue
        if m.value is None:
            return 0.0
        peak = max(peaks.get(m.name, m.value), m.value)
        span = peak - m.caught_up_threshold
        done = 0.0 if span <= 0 else 1 - (m.value - m.caught_up_threshold) / span
        worst = min(worst, max(0.0, done))
    return round(100 * worst, 1)


def update_peaks(peaks: dict[str, float], ev: Evaluation) -> dict[str, float]:
    for m in ev.measures.values():
        if m.value is not None and not math.isnan(m.value):
            peaks[m.name] = max(peaks.get(m.name, m.value), m.value)
    return peaks


def one_line(ev: Evaluation, gate: GateStatus | None = None) -> str:
    """The evaluation in one line: verdict, each lag, ETA, gate progress."""
    parts = [f"{ev.verdict.value}"]
    parts += [f"{m.name.removesuffix('_seconds').removesuffix('_bytes')} "
              f"{format_value(m.name, m.value)}" for m in ev.measures.values()]
    parts.append("ETA " + ("now" if ev.caught_up else format_duration(ev.eta_seconds)))
    if gate is not None:
        parts.append(f"gate {gate.state} {gate.consecutive}/{gate.needed}")
    return " · ".join(parts)
