"""Lag verdicts over a sliding window, thresholds with hysteresis, anomalies, ETA and the gate.

Pure logic: samples in, evaluations out — no I/O and no clock (every sample carries its time), so
every rule is unit-tested on made-up series. `migwatch/measures.py` takes the samples.

    Monitor(spec, migration_id).evaluate(sample)   one poll → Evaluation (verdict, notices)
    Gate(spec, started_at).observe(evaluation)     passed, waiting, or GateFailed
    status_rows / one_line / format_value          evaluations as people read them

Modules: `model` (measure names, samples, evaluations, notices), `rules` (slope, ETA, hysteresis,
slot-limit thresholds), `monitor` (the window and its verdict rules, documented there), `gate`
(caught-up gate and progress), `formatting` (values with units, rows, one line).
"""

from __future__ import annotations

from migwatch.lag.formatting import format_duration, format_value, status_rows
from migwatch.lag.gate import Gate, GateStatus, one_line, progress_percent, update_peaks
from migwatch.lag.model import (
    CONSUMER_LAG,
    END_TO_END_LAG,
    EVENT_TIME_LAG,
    SLOT_WAL,
    Evaluation,
    Level,
    Notice,
    PartitionLag,
    Sample,
    Severity,
    StoppedTable,
    TableLag,
    Verdict,
    summarize,
)
from migwatch.lag.monitor import Monitor
from migwatch.lag.rules import effective_threshold, eta_seconds, next_level, slope

__all__ = [
    "CONSUMER_LAG",
    "END_TO_END_LAG",
    "EVENT_TIME_LAG",
    "SLOT_WAL",
    "Evaluation",
    "Gate",
    "GateStatus",
    "Level",
    "Monitor",
    "Notice",
    "PartitionLag",
    "Sample",
    "Severity",
    "StoppedTable",
    "TableLag",
    "Verdict",
    "effective_threshold",
    "eta_seconds",
    "format_duration",
    "format_value",
    "next_level",
    "one_line",
    "progress_percent",
    "slope",
    "status_rows",
    "summarize",
    "update_peaks",
]
