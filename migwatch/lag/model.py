"""What monitoring speaks in: the lag measures' names, samples in, evaluations and notices out.

Plain frozen dataclasses and enums, at the bottom of the lag package, so that the measuring side
(`migwatch/measures.py`), the monitor, the gate, notifications and the report share one vocabulary
without importing one another. `summarize` turns samples into the columns the report charts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from typing import Any

from migwatch.config import LAG_MEASURES

CONSUMER_LAG = "consumer_lag_messages"
EVENT_TIME_LAG = "event_time_lag_seconds"
END_TO_END_LAG = "end_to_end_lag_seconds"
SLOT_WAL = "slot_wal_bytes"


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
class StoppedTable:
    """A table whose apply stopped at a source schema change it does not follow by itself
    (its latest schema-change record says stopped): `change` says what changed, and why."""

    table: str
    change: str


@dataclass(frozen=True)
class Sample:
    """One poll: every lag measure (None = unknown) plus what the window rules need.

    `values` maps each name in LAG_MEASURES to its value; `committed_offsets` is the sum of the
    applier group's committed offsets (it moves when the applier makes progress); `dlq_messages`
    counts events sent to the dead-letter topic so far; `stopped_tables` are the tables the
    applier stopped at a source schema change; `problems` names measures that failed.
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
    stopped_tables: tuple[StoppedTable, ...] = ()
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
            stopped_tables=tuple(StoppedTable(**t) for t in d.get("stopped_tables", ())),
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
    #: for `resolved`: the severity the episode reached ("warning", "critical"), so the
    #: message goes only where the episode was announced
    peak: str | None = None


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
