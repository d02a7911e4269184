"""The monitor: a sliding window of samples judged into a verdict, a severity and notices.

Pure logic: samples in, evaluations out — no I/O and no clock (every sample carries its time), so
every rule is unit-tested on made-up series. `migwatch/measures.py` takes the samples.

Verdict of the latest window, first rule that holds (Burrow's consumer rules, on the applier's
group, plus thresholds):

    ERROR           the connector or a task is FAILED or missing; the applier has been absent
                    from its group for a whole window; a lag could not be measured for
                    `consecutive_polls` polls in a row; a table is stopped at a source schema
                    change (`Sample.stopped_tables`: its apply waits for the user, at once)
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

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from migwatch.config import LAG_MEASURES, MonitorSpec
from migwatch.lag.formatting import format_value
from migwatch.lag.model import (
    CONSUMER_LAG,
    END_TO_END_LAG,
    EVENT_TIME_LAG,
    Anomaly,
    Evaluation,
    Level,
    MeasureStatus,
    Notice,
    Sample,
    Severity,
    Verdict,
)
from migwatch.lag.rules import effective_threshold, eta_seconds, falling_rate, next_level, slope

#: connector states that mean "no change is being captured and none will be without help"
CONNECTOR_DOWN = ("FAILED", "MISSING")


@dataclass
class _Notifier:
    """Announce each severity once per episode and `resolved` once when the episode ends."""

    announced: Severity = Severity.OK
    measure: str | None = None
    #: the severity the episode that just ended had reached (for its `resolved`)
    peak: Severity = Severity.OK

    def step(self, severity: Severity) -> str | None:
        if severity is Severity.OK:
            if self.announced is not Severity.OK:
                self.peak, self.announced = self.announced, Severity.OK
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
            peak=self._notifier.peak.value.lower() if kind == "resolved" else None,
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
        reasons += [f"table {t.table} stopped: {t.change} — `migwatch resume-table <spec> "
                    f"{t.table} --migration-id {self.migration_id} --accept` or a versioned "
                    "migration" for t in sample.stopped_tables]
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
