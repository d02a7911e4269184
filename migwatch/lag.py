"""Lag verdicts over a sliding window, thresholds with hysteresis, anomalies, ETA and the gate.

Pure logic: samples in, evaluations out — no I/O and no clock (every sample carries its time), so
every rule is unit-tested on made-up series. `migwatch/measures.py` takes the samples.

Verdict of the latest window, first rule that holds (Burrow's consumer rules, on the applier's
group, plus thresholds):

    ERROR           the connector or a task is FAILED or missing; the applier has been absent
                    from its group for a whole window; a lag could not be measured for
                    `consecutive_polls` polls in a row
    STALLED         no applier in the group, or lag > 0 throughout a full window while the
                    committed offsets did not move
    FALLING_BEHIND  a full window in which lag never reached zero and grew: end > start, slope > 0,
                    and it rose between more successive polls than it fell; and it is above
                    caught_up now (heartbeats in flight make a caught-up lag wobble above zero)
    WARNING         some measure is above its warn (or critical) threshold, or the connector is
                    not RUNNING, or the error rate is above its threshold
    OK              otherwise

Severity is what notifications speak of: CRITICAL when a measure is above its critical threshold
or the verdict is STALLED/ERROR, WARNING for WARNING/FALLING_BEHIND, else OK. Notices fire on
changes only: a severity is announced once per episode (the first time it is reached), and
`resolved` once when the episode ends (severity back to OK).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum, StrEnum
from typing import Any

from migwatch.config import LAG_MEASURES, MonitorSpec, Threshold
from migwatch.errors import GateFailed

CONSUMER_LAG = "consumer_lag_messages"
EVENT_TIME_LAG = "event_time_lag_seconds"
END_TO_END_LAG = "end_to_end_lag_seconds"
SLOT_WAL = "slot_wal_bytes"

#: slot retained WAL is a warning from this share of the slot's limit, critical from the next
SLOT_NEAR_LIMIT = 0.8
SLOT_CRITICAL_LIMIT = 0.95

#: connector states that mean "no change is being captured and none will be without help"
CONNECTOR_DOWN = ("FAILED", "MISSING")


class Verdict(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    FALLING_BEHIND = "FALLING_BEHIND"
    STALLED = "STALLED"
    ERROR = "ERROR"


class Severity(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return {"OK": 0, "WARNING": 1, "CRITICAL": 2}[self.value]


class Level(StrEnum):
    """Where one measure stands against its warn/critical thresholds."""

    OK = "ok"
    WARN = "warn"
    CRITICAL = "critical"


# ------------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class PartitionLag:
    """Consumer lag of one topic partition; `committed` is None when the group never committed."""

    topic: str
    partition: int
    end_offset: int
    committed: int | None
    lag: int


@dataclass(frozen=True)
class TableLag:
    """Event-time lag of one table (DESIGN.md's per-table rule); None when not yet known."""

    source_table: str
    target_table: str
    seconds: float | None
    pending_messages: int


@dataclass(frozen=True)
class Sample:
    """One poll: every lag measure (None = unknown) plus what the window rules need.

    `values` maps each name in LAG_MEASURES to its value; `committed_offsets` is the sum of the
    applier group's committed offsets (it moves when the applier makes progress); `dlq_messages`
    counts events sent to the dead-letter topic so far; `problems` names measures that failed.
    """

    at: float
    values: Mapping[str, float | None]
    committed_offsets: int | None = None
    dlq_messages: int | None = None
    applied_events: int | None = None
    applier_alive: bool | None = None
    connector_state: str | None = None
    slot_limit_bytes: int | None = None
    partitions: tuple[PartitionLag, ...] = ()
    tables: tuple[TableLag, ...] = ()
    problems: tuple[str, ...] = ()

    def value(self, measure: str) -> float | None:
        v = self.values.get(measure)
        return None if v is None else float(v)

    @property
    def data_lag_seconds(self) -> float | None:
        """The larger of event-time and end-to-end lag (`migration_data_lag_seconds`)."""
        known = [v for v in (self.value(EVENT_TIME_LAG), self.value(END_TO_END_LAG))
                 if v is not None]
        return max(known) if known else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = dict(self.values)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sample:
        return cls(
            at=float(d["at"]), values=dict(d["values"]),
            committed_offsets=d.get("committed_offsets"), dlq_messages=d.get("dlq_messages"),
            applied_events=d.get("applied_events"),
            applier_alive=d.get("applier_alive"), connector_state=d.get("connector_state"),
            slot_limit_bytes=d.get("slot_limit_bytes"),
            partitions=tuple(PartitionLag(**p) for p in d.get("partitions", ())),
            tables=tuple(TableLag(**t) for t in d.get("tables", ())),
            problems=tuple(d.get("problems", ())),
        )


# ------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MeasureStatus:
    """One measure after evaluation: level with hysteresis, the threshold it is compared with."""

    name: str
    value: float | None
    level: Level
    threshold: float  # critical when level is critical, else warn
    caught_up_threshold: float
    caught_up: bool
    slope: float | None  # units per second over the window
    eta_seconds: float | None


@dataclass(frozen=True)
class Anomaly:
    kind: str  # throughput_drop | error_rate | lag_slope
    measure: str
    value: float
    reference: float  # the baseline or threshold `value` was compared with
    message: str


@dataclass(frozen=True)
class Notice:
    """A state change to announce: `warning`, `critical` or `resolved` — each once per episode."""

    kind: str
    migration_id: str
    verdict: Verdict
    measure: str | None
    value: float | None
    threshold: float | None
    eta_seconds: float | None
    reasons: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class Evaluation:
    at: float
    verdict: Verdict
    severity: Severity
    reasons: tuple[str, ...]
    measures: Mapping[str, MeasureStatus]
    anomalies: tuple[Anomaly, ...]
    throughput: float | None  # committed messages per second, latest interval
    eta_seconds: float | None
    caught_up: bool  # every measure under caught_up and the verdict OK
    notices: tuple[Notice, ...] = ()
    window: int = 0

    def worst(self) -> MeasureStatus | None:
        """The measure that best explains the state: the one furthest over its highest level;
        with none over a threshold, consumer lag for STALLED/FALLING_BEHIND (offset rules)."""
        def key(m: MeasureStatus) -> tuple[int, float]:
            rank = {Level.OK: 0, Level.WARN: 1, Level.CRITICAL: 2}[m.level]
            over = (m.value or 0.0) / m.threshold if m.threshold else 0.0
            return rank, over
        known = [m for m in self.measures.values() if m.value is not None]
        if not known:
            return None
        if all(m.level is Level.OK for m in known) and CONSUMER_LAG in self.measures and \
                self.verdict in (Verdict.STALLED, Verdict.FALLING_BEHIND):
            return self.measures[CONSUMER_LAG]
        return max(known, key=key)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measures"] = {k: asdict(v) for k, v in self.measures.items()}
        return _plain(d)


def _plain(value: Any) -> Any:
    """Enums to their values, recursively: JSON- and artifact-friendly."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------- pieces
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


# ------------------------------------------------------------------------------- formatting
def format_value(measure: str, value: float | None) -> str:
    """A value with its unit: `12.3 s`, `1,234 msgs`, `64.0 MiB`; `?` when unknown."""
    if value is None:
        return "?"
    if measure.endswith("_seconds"):
        return format_duration(value)
    if measure.endswith("_bytes"):
        return format_bytes(value)
    return f"{value:,.0f} msgs"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"  # pragma: no cover


# ------------------------------------------------------------------------------- the monitor
@dataclass
class _Notifier:
    """Announce each severity once per episode and `resolved` once when the episode ends."""

    announced: Severity = Severity.OK
    measure: str | None = None

    def step(self, severity: Severity) -> str | None:
        if severity is Severity.OK:
            if self.announced is not Severity.OK:
                self.announced = Severity.OK
                return "resolved"
            return None
        if severity.rank > self.announced.rank:
            self.announced = severity
            return severity.value.lower()
        return None


@dataclass
class Monitor:
    """Keeps the sliding window and per-measure levels; `evaluate` one sample per poll."""

    spec: MonitorSpec
    migration_id: str
    window: deque[Sample] = field(init=False)
    levels: dict[str, Level] = field(init=False)
    _notifier: _Notifier = field(init=False, default_factory=_Notifier)

    def __post_init__(self) -> None:
        self.window = deque(maxlen=self.spec.window_size)
        self.levels = {m: Level.OK for m in LAG_MEASURES}

    @property
    def full(self) -> bool:
        return len(self.window) >= self.spec.window_size

    def evaluate(self, sample: Sample) -> Evaluation:
        if self.window and sample.at <= self.window[-1].at:
            raise ValueError("samples must arrive in time order")
        self.window.append(sample)
        measures = self._measures(sample)
        anomalies = self._anomalies(sample, measures)
        verdict, reasons = self._verdict(sample, measures, anomalies)
        severity = _severity(verdict, measures)
        caught_up = verdict is Verdict.OK and all(m.caught_up for m in measures.values())
        # nothing is applied while stalled: no rate, so no time to catch up
        eta = None if verdict in (Verdict.STALLED, Verdict.ERROR) else _overall_eta(measures)
        ev = Evaluation(
            at=sample.at, verdict=verdict, severity=severity, reasons=tuple(reasons),
            measures=measures, anomalies=tuple(anomalies), throughput=self._throughput(),
            eta_seconds=eta, caught_up=caught_up, window=len(self.window),
        )
        kind = self._notifier.step(severity)
        if kind is None:
            return ev
        return replace(ev, notices=(self._notice(kind, ev),))

    def _notice(self, kind: str, ev: Evaluation) -> Notice:
        """The message for a state change; `resolved` speaks of the measure last announced."""
        worst = ev.worst()
        last = self._notifier.measure
        if kind == "resolved" and last is not None and last in ev.measures:
            worst = ev.measures[last]
        threshold = None
        if worst is not None:
            threshold = worst.threshold
            if kind == "resolved":
                t = self.spec.thresholds[worst.name]
                threshold = t.warn * t.clear_ratio
        self._notifier.measure = worst.name if worst else None
        return Notice(
            kind=kind, migration_id=self.migration_id, verdict=ev.verdict,
            measure=worst.name if worst else None, value=worst.value if worst else None,
            threshold=threshold, eta_seconds=ev.eta_seconds, reasons=ev.reasons, at=ev.at,
        )

    # -- measures --------------------------------------------------------------------------
    def _measures(self, sample: Sample) -> dict[str, MeasureStatus]:
        out: dict[str, MeasureStatus] = {}
        for name in LAG_MEASURES:
            t = effective_threshold(name, self.spec.thresholds[name],
                                    sample.slot_limit_bytes)
            value = sample.value(name)
            level = next_level(self.levels[name], value, t)
            self.levels[name] = level
            points = self._points(name)
            out[name] = MeasureStatus(
                name=name, value=value, level=level,
                threshold=t.critical if level is Level.CRITICAL else t.warn,
                caught_up_threshold=t.caught_up,
                caught_up=value is not None and value <= t.caught_up,
                slope=slope(points),
                eta_seconds=eta_seconds(value, t.caught_up, falling_rate(points)),
            )
        return out

    def _points(self, measure: str) -> list[tuple[float, float]]:
        return [(s.at, v) for s in self.window if (v := s.value(measure)) is not None]

    def _throughput(self) -> float | None:
        rates = self._rates()
        return rates[-1] if rates else None

    def _rates(self) -> list[float]:
        """Committed messages per second between successive samples of the window."""
        pts = [(s.at, s.committed_offsets) for s in self.window if s.committed_offsets is not None]
        return [max(0.0, (b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(pts, pts[1:], strict=False)]

    # -- anomalies -------------------------------------------------------------------------
    def _anomalies(self, sample: Sample, measures: Mapping[str, MeasureStatus]) -> list[Anomaly]:
        found: list[Anomaly] = []
        lag = measures[CONSUMER_LAG]
        rates = self._rates()
        if len(rates) >= 3 and lag.value is not None and not lag.caught_up:
            baseline = sum(rates[:-1]) / len(rates[:-1])
            floor = baseline * (1 - self.spec.throughput_drop_fraction)
            if baseline > 0 and rates[-1] < floor:
                found.append(Anomaly(
                    "throughput_drop", CONSUMER_LAG, rates[-1], baseline,
                    f"apply throughput {rates[-1]:,.1f} msg/s is below its baseline "
                    f"{baseline:,.1f} msg/s by more than "
                    f"{self.spec.throughput_drop_fraction:.0%} while {lag.value:,.0f} "
                    "messages wait"))
        errors, processed = self._errors_and_processed()
        if errors > 0 and processed > 0:
            rate = errors / processed
            if rate > self.spec.error_rate_threshold:
                found.append(Anomaly(
                    "error_rate", CONSUMER_LAG, rate, self.spec.error_rate_threshold,
                    f"error rate {rate:.1%} ({errors} of {processed} events to the DLQ) "
                    f"is above {self.spec.error_rate_threshold:.1%}"))
        if self.full:
            for name in (CONSUMER_LAG, EVENT_TIME_LAG, END_TO_END_LAG):
                m = measures[name]
                if m.slope is not None and m.slope > 0 and m.value is not None and not m.caught_up:
                    unit = "msg/s" if name == CONSUMER_LAG else "s/s"
                    found.append(Anomaly(
                        "lag_slope", name, m.slope, 0.0,
                        f"{name} rose at {m.slope:,.2f} {unit} across the window "
                        f"(now {format_value(name, m.value)})"))
        return found

    def _errors_and_processed(self) -> tuple[int, int]:
        """Events dead-lettered and events handled (applied + dead-lettered) over the window;
        committed offsets stand in for `handled` when the applier's counts are unknown."""
        first, last = self.window[0], self.window[-1]
        if first.dlq_messages is None or last.dlq_messages is None:
            return 0, 0
        errors = last.dlq_messages - first.dlq_messages
        if first.applied_events is not None and last.applied_events is not None:
            return errors, last.applied_events - first.applied_events + errors
        if first.committed_offsets is not None and last.committed_offsets is not None:
            return errors, max(last.committed_offsets - first.committed_offsets, errors)
        return 0, 0

    # -- verdict ---------------------------------------------------------------------------
    def _verdict(self, sample: Sample, measures: Mapping[str, MeasureStatus],
                 anomalies: Sequence[Anomaly]) -> tuple[Verdict, list[str]]:
        reasons: list[str] = []
        lag = measures[CONSUMER_LAG].value
        committed = [s.committed_offsets for s in self.window]

        # ERROR
        state = (sample.connector_state or "").upper()
        if state in CONNECTOR_DOWN:
            reasons.append(f"connector is {state}")
        n = self.spec.consecutive_polls
        recent = list(self.window)[-n:]
        if sample.problems and len(recent) >= n and all(s.problems for s in recent):
            reasons.append("cannot measure for " + f"{n} polls: " + "; ".join(sample.problems))
        if self.full and all(s.applier_alive is False for s in self.window):
            span = self.window[-1].at - self.window[0].at
            reasons.append(f"applier down: no active member in its consumer group for "
                           f"{span:.0f} s")
        if reasons:
            return Verdict.ERROR, reasons

        # STALLED
        if sample.applier_alive is False:
            return Verdict.STALLED, [
                "no applier in the consumer group" + (f"; {lag:,.0f} messages wait"
                                                      if lag else "")]
        if (self.full and lag is not None and lag > 0
                and all((s.value(CONSUMER_LAG) or 0) > 0 for s in self.window)
                and None not in committed and len(set(committed)) == 1):
            span = self.window[-1].at - self.window[0].at
            return Verdict.STALLED, [
                f"{lag:,.0f} messages wait and committed offsets did not move for {span:.0f} s"]

        # FALLING_BEHIND
        lags = [s.value(CONSUMER_LAG) for s in self.window]
        rate = measures[CONSUMER_LAG].slope
        if (self.full and None not in lags and all(v > 0 for v in lags)  # type: ignore[operator]
                and lags[-1] > lags[0] and rate is not None and rate > 0  # type: ignore[operator]
                and _mostly_rising(lags)  # type: ignore[arg-type]
                and not measures[CONSUMER_LAG].caught_up):
            reasons.append(f"consumer lag grew from {lags[0]:,.0f} to {lags[-1]:,.0f} messages "
                           f"across the window ({rate:,.1f} msg/s)")
            return Verdict.FALLING_BEHIND, reasons

        # WARNING
        for m in measures.values():
            if m.level is not Level.OK:
                reasons.append(f"{m.name} {format_value(m.name, m.value)} above {m.level.value} "
                               f"{format_value(m.name, m.threshold)}")
        if state and state not in ("RUNNING", *CONNECTOR_DOWN):
            reasons.append(f"connector is {state}")
        reasons += [a.message for a in anomalies if a.kind == "error_rate"]
        if sample.problems:
            reasons.append("cannot measure: " + "; ".join(sample.problems))
        return (Verdict.WARNING if reasons else Verdict.OK), reasons


def _mostly_rising(values: Sequence[float]) -> bool:
    """Lag rose between more successive polls than it fell (Burrow: it grows between polls).

    One jump at the start of a window (an applier that just joined and met the backlog) then a
    steady fall is catching up, though the end is above the start and the fitted slope positive.
    """
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    return sum(d > 0 for d in steps) > sum(d < 0 for d in steps)


def _severity(verdict: Verdict, measures: Mapping[str, MeasureStatus]) -> Severity:
    if verdict in (Verdict.STALLED, Verdict.ERROR) or any(
            m.level is Level.CRITICAL for m in measures.values()):
        return Severity.CRITICAL
    if verdict is not Verdict.OK:
        return Severity.WARNING
    return Severity.OK


#: lags in seconds that fall by themselves once the waiting messages are applied
_BACKLOG_FOLLOWERS = (EVENT_TIME_LAG, END_TO_END_LAG)


def _overall_eta(measures: Mapping[str, MeasureStatus]) -> float | None:
    """Seconds until every measure is caught up: the slowest measure's ETA, None if one that is
    not caught up is not falling.

    While messages wait and their number falls, the backlog's ETA stands for the time lags: they
    are the age of what the target last received, which rises while old messages are worked off
    and drops to the pipeline's latency once the backlog is applied. With no backlog falling, a
    time lag needs its own falling slope (the connector itself may be behind).
    """
    backlog = measures.get(CONSUMER_LAG)
    draining = backlog is not None and not backlog.caught_up and backlog.eta_seconds is not None
    etas: list[float | None] = []
    for m in measures.values():
        if m.caught_up:
            etas.append(0.0)
        elif not (draining and m.name in _BACKLOG_FOLLOWERS):
            etas.append(m.eta_seconds)
    if any(e is None for e in etas):
        return None
    return max((e for e in etas if e is not None), default=0.0)


# ------------------------------------------------------------------------------- the gate
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


def summarize(samples: Iterable[Sample]) -> dict[str, Any]:
    """Lag and throughput over time as plain columns — what the report stage charts."""
    rows = list(samples)
    out: dict[str, Any] = {"at": [s.at for s in rows]}
    for m in LAG_MEASURES:
        out[m] = [s.value(m) for s in rows]
    out["data_lag_seconds"] = [s.data_lag_seconds for s in rows]
    out["committed_offsets"] = [s.committed_offsets for s in rows]
    tp: list[float | None] = [None]
    for a, b in zip(rows, rows[1:], strict=False):
        if a.committed_offsets is None or b.committed_offsets is None or b.at <= a.at:
            tp.append(None)
        else:
            tp.append(max(0.0, (b.committed_offsets - a.committed_offsets) / (b.at - a.at)))
    out["throughput_msgs_per_second"] = tp[: len(rows)]
    return out


def status_rows(ev: Evaluation) -> list[dict[str, str]]:
    """One row per measure — measure, value, threshold, state, ETA — for tables and artifacts."""
    rows = []
    for m in ev.measures.values():
        if m.level is Level.OK:
            # under warn but not yet under caught_up: behind, within bounds
            state = "caught up" if m.caught_up else ("unknown" if m.value is None else "behind")
            threshold = f"caught_up {format_value(m.name, m.caught_up_threshold)}"
        else:
            state = m.level.value
            threshold = f"{m.level.value} {format_value(m.name, m.threshold)}"
        eta = "-" if m.caught_up else ("?" if m.eta_seconds is None
                                       else format_duration(m.eta_seconds))
        rows.append({"measure": m.name, "value": format_value(m.name, m.value),
                     "threshold": threshold, "state": state, "eta": eta})
    return rows


def one_line(ev: Evaluation, gate: GateStatus | None = None) -> str:
    """The evaluation in one line: verdict, each lag, ETA, gate progress."""
    parts = [f"{ev.verdict.value}"]
    parts += [f"{m.name.removesuffix('_seconds').removesuffix('_bytes')} "
              f"{format_value(m.name, m.value)}" for m in ev.measures.values()]
    parts.append("ETA " + ("now" if ev.caught_up else format_duration(ev.eta_seconds)))
    if gate is not None:
        parts.append(f"gate {gate.state} {gate.consecutive}/{gate.needed}")
    return " · ".join(parts)
