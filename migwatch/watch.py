"""The monitor loop shared by the flow and the CLI: poll → evaluate → export → notify → gate.

While it runs it serves metrics (announced to Prometheus through a file_sd target file) and keeps
the heartbeat row moving on the source. The flow passes its Prefect tasks as `poll_fn` and
`notify_fn`; the CLI passes the core functions. Every sample and evaluation is kept as plain data
for the report stage (`save_samples`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migwatch import names
from migwatch.config import MigrationSpec, StackSettings
from migwatch.errors import GateFailed
from migwatch.lag import (
    Evaluation,
    Gate,
    GateStatus,
    Monitor,
    Notice,
    Sample,
    summarize,
    update_peaks,
)
from migwatch.measures import HeartbeatWriter, MetricsExporter, poll
from migwatch.metrics import serving as metrics_serving

log = logging.getLogger("migwatch.watch")

#: samples a watch that keeps running holds (the newest; older ones are in Prometheus)
KEEP_SAMPLES = 1000

PollFn = Callable[[MigrationSpec, str, float | None], Sample]
NotifyFn = Callable[[Notice], Any]
OnPoll = Callable[["Poll"], None]


@dataclass(frozen=True)
class Poll:
    """What one turn of the loop saw, for live displays."""

    number: int
    sample: Sample
    evaluation: Evaluation
    gate: GateStatus
    peaks: dict[str, float]


@dataclass
class WatchResult:
    """How the watch ended; `reason` says why the gate failed."""

    migration_id: str
    passed: bool
    reason: str | None
    polls: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    metrics_port: int | None = None

    def to_dict(self) -> dict[str, Any]:
        last = self.evaluations[-1] if self.evaluations else None
        return {
            "migration_id": self.migration_id, "passed": self.passed, "reason": self.reason,
            "polls": self.polls, "seconds": round(self.seconds, 3),
            "verdict": last.verdict.value if last else None,
            "eta_shown": any(e.eta_seconds not in (None, 0.0) for e in self.evaluations),
            "notices": [n.kind for e in self.evaluations for n in e.notices],
            "series": summarize(self.samples),
            "verdicts": [e.verdict.value for e in self.evaluations],
            "eta_seconds": [e.eta_seconds for e in self.evaluations],
        }


def watch(spec: MigrationSpec, migration_id: str, *, poll_fn: PollFn | None = None,
          notify_fn: NotifyFn | None = None, on_poll: OnPoll | None = None,
          serve_metrics: bool = True, heartbeat: bool = True,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.time,
          stop: threading.Event | None = None) -> WatchResult:
    """Poll every `spec.monitor.poll_interval_seconds` until the gate passes or fails.

    With `stop`, keep watching past the gate — exporting every lag, for `migwatch check` —
    until `stop` is set; the result then says whether the gate had passed by then.
    Returns a WatchResult either way; the caller decides whether a failed gate raises.
    """
    poll_fn = poll_fn or (lambda s, m, since: poll(s, m, heartbeat_since=since))
    monitor = Monitor(spec.monitor, migration_id)
    started = clock()
    gate = Gate(spec.monitor, started_at=started)
    exporter = MetricsExporter(migration_id, names.slot_name(migration_id))
    result = WatchResult(migration_id, passed=False, reason=None, polls=0, seconds=0.0)
    served = contextlib.ExitStack()
    writer = None
    peaks: dict[str, float] = {}
    try:
        if serve_metrics:  # reuses the process's server when a pipeline already serves one
            server = served.enter_context(metrics_serving(
                StackSettings().file_sd_dir, "migwatch-monitor", migration_id,
                spec.metrics.port))
            result.metrics_port = server.port
        interval = spec.monitor.poll_interval_seconds
        if heartbeat:
            # at least two beats per poll, so the end-to-end lag is finer than the poll interval
            writer = HeartbeatWriter(spec, migration_id, interval=min(1.0, interval / 2)).start()
        final: GateStatus | None = None  # the gate's decision, once made
        while stop is None or not stop.is_set():
            turn_start = clock()
            sample = poll_fn(spec, migration_id, writer.since if writer else None)
            ev = monitor.evaluate(sample)
            result.samples.append(sample)
            result.evaluations.append(ev)
            result.polls += 1
            exporter.export(sample, ev)
            for notice in ev.notices:
                if notify_fn is not None:
                    _notify_safely(notify_fn, notice)
            update_peaks(peaks, ev)
            if final is None:
                try:
                    status = gate.observe(ev)
                except GateFailed as exc:
                    result.reason = exc.reason
                    status = final = GateStatus(
                        "failed", gate.consecutive, spec.monitor.consecutive_polls,
                        ev.at - started, spec.monitor.timeout_seconds)
                if status.state == "passed":
                    result.passed = True
                    final = status
            else:
                status = final
            if on_poll:
                on_poll(Poll(result.polls, sample, ev, status, dict(peaks)))
            if final is not None and stop is None:
                break
            if stop is not None:
                del result.samples[:-KEEP_SAMPLES], result.evaluations[:-KEEP_SAMPLES]
                stop.wait(max(0.0, interval - (clock() - turn_start)))
            else:
                sleep(max(0.0, interval - (clock() - turn_start)))
    finally:
        if writer is not None:
            writer.stop()
        served.close()
        result.seconds = clock() - started
    return result


def _notify_safely(notify_fn: NotifyFn, notice: Notice) -> None:
    """A notification channel must never break the gate."""
    try:
        notify_fn(notice)
    except Exception as exc:  # delivery failures are counted where they happen
        log.warning("notification %s failed: %s", notice.kind, type(exc).__name__)


def samples_path(migration_id: str, settings: StackSettings | None = None) -> Path:
    s = settings or StackSettings()
    return s.state_dir / "runs" / migration_id / "samples.json"


def save_samples(result: WatchResult, settings: StackSettings | None = None) -> Path:
    """Lag and throughput over time as JSON, where the report stage finds it."""
    path = samples_path(result.migration_id, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **result.to_dict(),
        "samples": [s.to_dict() for s in result.samples],
        "evaluations": [_compact(e) for e in result.evaluations],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.rename(path)
    return path


def _compact(ev: Evaluation) -> dict[str, Any]:
    return {
        "at": ev.at, "verdict": ev.verdict.value, "severity": ev.severity.value,
        "caught_up": ev.caught_up, "eta_seconds": ev.eta_seconds, "throughput": ev.throughput,
        "reasons": list(ev.reasons), "anomalies": [a.kind for a in ev.anomalies],
        "notices": [n.kind for n in ev.notices],
        "levels": {k: m.level.value for k, m in ev.measures.items()},
    }
