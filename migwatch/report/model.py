"""The report as data: the pydantic models a run's report is made of, and `scrub`.

Every other part of the report package reads or builds these models, so they sit at the bottom
with nothing above them imported. Nothing secret enters a report: the models' free-text fields
(error messages, gate reasons, notes) pass through `scrub`, which masks URL passwords,
`password=`/`token=` pairs and bearer tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1
ValidationState = Literal["equal", "pending", "mismatched", "not_checked"]
Unit = Literal["seconds", "messages", "bytes", "ratio", "per_second"]

#: lag measures as the report names them (the spec's names, plus the gate's data lag) → unit
MEASURE_UNITS: dict[str, Unit] = {
    "data_lag_seconds": "seconds",
    "event_time_lag_seconds": "seconds",
    "end_to_end_lag_seconds": "seconds",
    "consumer_lag_messages": "messages",
    "slot_wal_bytes": "bytes",
}

_SCRUBS = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I), r"\1***@"),
    (
        re.compile(
            r"\b(password|passwd|pwd|token|secret|api[_-]?key)(\s*[=:]\s*)"
            r"(\"[^\"]*\"|'[^']*'|[^\s,;&]+)",
            re.I,
        ),
        r"\1\2***",
    ),
    (re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.I), r"\1 ***"),
)


def scrub(text: str, limit: int = 500) -> str:
    """Free text safe for a report: credentials masked, one paragraph at most `limit` long."""
    for pattern, repl in _SCRUBS:
        text = pattern.sub(repl, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TableFigures(_Model):
    """One table's figures: counts on both sides, what the snapshot and CDC wrote, its lag and
    validation state (with a capped sample of differing keys)."""

    source_table: str
    target_table: str
    rows_source: int | None = None
    rows_target: int | None = None
    rows_snapshot: int | None = None
    changes_applied: int | None = None
    event_time_lag_seconds: float | None = None
    validation: ValidationState = "not_checked"
    mismatched_rows: int = 0
    differing_keys: list[Any] = Field(default_factory=list)
    differing_keys_truncated: bool = False
    #: Great Expectations expectations the target table failed, e.g. `..._not_be_null(email)`
    failed_expectations: list[str] = Field(default_factory=list)
    note: str | None = None
    #: source WAL position both counts stand for (revalidation counted the source there and the
    #: target once its applier had passed it); None: counted at two moments while comparing
    counts_lsn: str | None = None

    @property
    def counted_at(self) -> str:
        """Says when the two counts were taken, so unequal counts of an equal table read right."""
        if self.counts_lsn:
            return f"at LSN {self.counts_lsn}"
        return "while comparing" if self.rows_source == self.rows_target else \
            "at two moments while comparing (source moving)"

    @field_validator("note")
    @classmethod
    def _scrub(cls, value: str | None) -> str | None:
        return scrub(value) if value else value


class LagMeasure(_Model):
    """One lag measure over the run: its last and peak values against its thresholds."""

    name: str
    unit: Unit
    last: float | None = None
    peak: float | None = None
    caught_up: float | None = None
    warn: float | None = None
    critical: float | None = None


class SlotRetention(_Model):
    """WAL the replication slot keeps on the source, and the limits it is judged against."""

    slot: str
    retained_wal_bytes: int | None = None
    warn_bytes: int | None = None
    limit_bytes: int | None = None


class RunError(_Model):
    """An error of the run; `recovered` errors (retried successfully) only warn."""

    stage: str
    error_type: str
    message: str = ""
    count: int = 1
    recovered: bool = False

    @field_validator("message")
    @classmethod
    def _scrub(cls, value: str) -> str:
        return scrub(value, limit=300)


class SchemaChangeRecord(_Model):
    """One source schema change the applier saw (or a stop resolved) on one table, and what
    migwatch did: `outcome` is followed, stopped, continued or accepted
    (`migwatch.schema_changes`)."""

    at: datetime
    table: str
    outcome: str
    change: str
    note: str | None = None

    @field_validator("note")
    @classmethod
    def _scrub(cls, value: str | None) -> str | None:
        return scrub(value) if value else value


class SchemaDifferenceFigures(_Model):
    """One object whose definition differs on the target (`missing`, `extra`, `differs`);
    `declared_by`: the migration that declares it deliberate."""

    object: str
    kind: str
    source: str = ""
    target: str = ""
    declared_by: str = ""


class SchemaCheckFigures(_Model):
    """The validate stage's schema check (`migwatch.validation.schema_check`): `status` is
    equal, different, error, not applicable — or `not checked` when validation ran without
    it."""

    status: str
    objects: int = 0
    differences: list[SchemaDifferenceFigures] = Field(default_factory=list)
    declared: list[SchemaDifferenceFigures] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    method: str = ""
    seconds: float = 0.0
    error: str | None = None

    @field_validator("error")
    @classmethod
    def _scrub(cls, value: str | None) -> str | None:
        return scrub(value) if value else value


SequenceStateName = Literal["ok", "behind", "missing", "not_readable", "not_applicable"]


class SequenceFigures(_Model):
    """One sequence the tables use, with its last value on each side (None: never called, or
    not readable on the sides `not_readable_on` names). Logical decoding does not carry
    sequence values — the cutover sets the target's — so `behind` only warns
    (`migwatch.sequences`)."""

    sequence: str
    used_by: list[str] = Field(default_factory=list)
    source_value: int | None = None
    target_value: int | None = None
    state: SequenceStateName
    behind_by: int | None = None
    not_readable_on: list[str] = Field(default_factory=list)


CutoverStepOutcome = Literal["done", "failed", "skipped", "undone"]
CutoverOutcome = Literal["switched", "aborted", "refused", "rejected", "running"]


class CutoverStep(_Model):
    """One step of the cutover on its timeline: when it started and ended, and how."""

    name: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: CutoverStepOutcome = "done"
    detail: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.ended_at is None else \
            (self.ended_at - self.started_at).total_seconds()

    @field_validator("detail")
    @classmethod
    def _scrub(cls, value: str) -> str:
        return scrub(value, 800)


class CutoverFigures(_Model):
    """The cutover (`migwatch.cutover`): its outcome, who approved it and how, its timeline,
    and the write-downtime — from the freeze to the end of the switch."""

    started_at: datetime
    finished_at: datetime | None = None
    outcome: CutoverOutcome = "running"
    #: who approved, as they declared it (Prefect's open-source server has no user identity)
    approver: str | None = None
    approval: str = ""  # how: "prefect run input", "--yes", "prompt"
    comment: str = ""
    downtime_seconds: float | None = None
    steps: list[CutoverStep] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    #: sessions of the application ended by the freeze (no undo for those)
    sessions_terminated: int = 0
    #: what was undone when it aborted
    undone: list[str] = Field(default_factory=list)
    #: the built-in freeze while it holds: the source database and each setting it changed as
    #: it was before (role '' is the database) — what `migwatch cutover --undo-freeze` puts
    #: back when a cutover process died frozen
    frozen_database: str | None = None
    frozen_before: dict[str, str | None] | None = None
    notes: list[str] = Field(default_factory=list)

    @field_validator("reasons", "notes")
    @classmethod
    def _scrub_all(cls, value: list[str]) -> list[str]:
        return [scrub(v, 800) for v in value]


class SeriesData(_Model):
    name: str
    unit: Unit
    points: list[tuple[float, float]] = Field(default_factory=list)


class TimeSeries(_Model):
    """Samples taken during the run: lag per measure, throughput, snapshot progress per table."""

    lag: list[SeriesData] = Field(default_factory=list)
    throughput: list[SeriesData] = Field(default_factory=list)
    progress: list[SeriesData] = Field(default_factory=list)

    def record(
        self,
        group: Literal["lag", "throughput", "progress"],
        name: str,
        unit: Unit,
        t: float,
        value: float,
    ) -> None:
        """Append one sample (the monitor loop calls this on each poll)."""
        series: list[SeriesData] = getattr(self, group)
        for s in series:
            if s.name == name:
                s.points.append((t, value))
                return
        series.append(SeriesData(name=name, unit=unit, points=[(t, value)]))


class Check(_Model):
    name: str
    passed: bool
    detail: str


class Verdict(_Model):
    """Go when nothing blocks; `reasons` are the blocking problems, `warnings` the others."""

    go: bool
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"


class Report(_Model):
    schema_version: int = SCHEMA_VERSION
    migration_id: str
    source: str = ""  # redacted endpoint
    target: str = ""
    started_at: datetime
    finished_at: datetime
    verdict: Verdict
    caught_up: bool
    gate: str | None = None
    tables: list[TableFigures] = Field(default_factory=list)
    lag: list[LagMeasure] = Field(default_factory=list)
    dlq_events: int = 0
    errors: list[RunError] = Field(default_factory=list)
    slot: SlotRetention | None = None
    #: every source schema change seen during the run, oldest first
    schema_changes: list[SchemaChangeRecord] = Field(default_factory=list)
    #: the target's definitions against the source's (None: no validation result)
    schema_check: SchemaCheckFigures | None = None
    #: the sequences the tables use, with their values on both sides at report time
    sequences: list[SequenceFigures] = Field(default_factory=list)
    #: why the sequences could not be read (then `sequences` is empty)
    sequences_unread: str | None = None
    series: TimeSeries = Field(default_factory=TimeSeries)
    links: dict[str, str] = Field(default_factory=dict)
    #: what holds for the whole run (how values were compared, when counts were taken)
    notes: list[str] = Field(default_factory=list)
    #: the cutover, once one ran for this migration
    cutover: CutoverFigures | None = None

    @field_validator("gate", "sequences_unread")
    @classmethod
    def _scrub(cls, value: str | None) -> str | None:
        return scrub(value) if value else value

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def _key_text(key: Any) -> str:
    if isinstance(key, Mapping) and "key" in key:
        key = key["key"]
    return json.dumps(key, default=str, separators=(",", ":"), ensure_ascii=False)
