"""Assembling a report from the stages' plain results: table figures, lag, slot, verdict.

Separate from the verdict so that `decide()` stays a pure rule set, and from rendering so that the
report stage and `migwatch report` (rebuilding a past run) share one way of building a `Report`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from migwatch import alerts
from migwatch.report.model import (
    LagMeasure,
    Report,
    RunError,
    SchemaChangeRecord,
    SchemaCheckFigures,
    SequenceFigures,
    SlotRetention,
    TableFigures,
    TimeSeries,
    ValidationState,
    scrub,
)
from migwatch.report.verdict import decide
from migwatch.schema_changes import SchemaChange, stopped_tables

if TYPE_CHECKING:
    from migwatch.config import MigrationSpec


def lag_summary(series: TimeSeries, spec: MigrationSpec | None = None) -> list[LagMeasure]:
    """Last and peak value of each sampled lag measure, with the spec's thresholds."""
    out = []
    for s in series.lag:
        values = [v for _, v in sorted(s.points) if math.isfinite(v)]
        th = _threshold(s.name, spec)
        out.append(
            LagMeasure(
                name=s.name,
                unit=s.unit,
                last=values[-1] if values else None,
                peak=max(values) if values else None,
                caught_up=th.caught_up if th else None,
                warn=th.warn if th else None,
                critical=th.critical if th else None,
            )
        )
    return out


def _threshold(name: str, spec: MigrationSpec | None) -> Any:
    from migwatch.config import MonitorSpec

    monitor = spec.monitor if spec is not None else MonitorSpec()
    if name == "data_lag_seconds":
        return alerts.data_lag_threshold(monitor)
    return monitor.thresholds.get(name)


def slot_retention(
    slot: str, retained_wal_bytes: int | None, spec: MigrationSpec | None = None
) -> SlotRetention:
    """The slot's figures with its warn threshold and limit (the spec's WAL limit if set, else its
    critical threshold)."""
    from migwatch.config import MonitorSpec

    monitor = spec.monitor if spec is not None else MonitorSpec()
    th = monitor.thresholds["slot_wal_bytes"]
    limit = monitor.slot_wal_limit_bytes or int(th.critical)
    return SlotRetention(
        slot=slot, retained_wal_bytes=retained_wal_bytes, warn_bytes=int(th.warn), limit_bytes=limit
    )


def cap_keys(table: TableFigures, cap: int) -> TableFigures:
    if len(table.differing_keys) <= cap:
        return table
    return table.model_copy(
        update={"differing_keys": table.differing_keys[:cap], "differing_keys_truncated": True}
    )


_VALIDATION_STATES: dict[str, ValidationState] = {
    "equal": "equal", "pending": "pending", "different": "mismatched", "error": "not_checked",
}


#: a row count the comparison measures itself, at one LSN; GX's count is taken at another moment
#: than the source's, so on a moving source it only warns (the comparison decides)
_VOLATILE_EXPECTATIONS = {"expect_table_row_count_to_equal"}


def _failed_expectations(outcome: Mapping[str, Any]) -> list[str]:
    out = []
    for f in outcome.get("failed") or []:
        if f.get("expectation") in _VOLATILE_EXPECTATIONS:
            continue
        kw = f.get("kwargs") or {}
        what = kw.get("column") or kw.get("column_list") or kw.get("column_set") or ""
        if isinstance(what, list):
            what = ", ".join(map(str, what))
        out.append(f"{f.get('expectation')}({what})" if what else str(f.get("expectation")))
    if outcome.get("error"):
        out.append(f"expectations could not run: {scrub(str(outcome['error']), 200)}")
    return out


def table_figures(
    spec: MigrationSpec,
    validation: Mapping[str, Any] | None = None,
    snapshot_rows: Mapping[str, int] | None = None,
    applied_events: Mapping[str, int] | None = None,
    table_lag: Mapping[str, float | None] | None = None,
) -> list[TableFigures]:
    """One `TableFigures` per table of the spec, from the stages' plain results: the validation
    result (counts, state, differing keys), rows the snapshot loaded, events the applier applied
    (snapshot reads included — changes are the rest) and the last event-time lag; all keyed by
    the source table. A table a stage knows nothing about keeps None / `not_checked`."""
    by_table = {t.get("table"): t for t in (validation or {}).get("tables", [])}
    out = []
    for spec_table in spec.tables:
        src = spec_table.source
        v = by_table.get(src) or {}
        loaded = (snapshot_rows or {}).get(src)
        events = (applied_events or {}).get(src)
        changes = None if events is None else max(0, events - (loaded or 0))
        state = _VALIDATION_STATES.get(str(v.get("status")), "not_checked")
        gx = v.get("expectations") or {}
        keys = [d.get("key") for d in v.get("sample", [])]
        note = v.get("error") or ("; ".join(v.get("warnings") or []) or None)
        out.append(TableFigures(
            source_table=src,
            target_table=spec_table.target_name,
            rows_source=v.get("source_rows") if v else None,
            rows_target=v.get("target_rows") if v else None,
            rows_snapshot=loaded,
            changes_applied=changes,
            event_time_lag_seconds=(table_lag or {}).get(src),
            validation=state,
            mismatched_rows=int(v.get("missing", 0)) + int(v.get("extra", 0))
            + int(v.get("changed", 0)),
            differing_keys=keys,
            differing_keys_truncated=bool(v.get("sample_truncated")),
            failed_expectations=_failed_expectations(gx),
            note=note,
            counts_lsn=v.get("counts_lsn") or None,
        ))
    return out


def _change_text(record: SchemaChange) -> str:
    return "; ".join(c.describe() for c in record.changes) or "no column differs"


def schema_change_record(record: SchemaChange) -> SchemaChangeRecord:
    """One record of the target's schema-change history as the report shows it."""
    return SchemaChangeRecord(
        at=datetime.fromtimestamp(record.at, UTC),
        table=record.table,
        outcome=record.outcome,
        change=_change_text(record),
        note=record.note,
    )


def build_report(
    *,
    migration_id: str,
    started_at: datetime,
    finished_at: datetime,
    tables: Iterable[TableFigures | Mapping[str, Any]],
    caught_up: bool,
    spec: MigrationSpec | None = None,
    gate_reason: str | None = None,
    lag: Sequence[LagMeasure] | None = None,
    dlq_events: int = 0,
    errors: Iterable[RunError | Mapping[str, Any]] = (),
    slot: SlotRetention | None = None,
    series: TimeSeries | None = None,
    links: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    schema_changes: Sequence[SchemaChange] = (),
    schema_changes_unread: str | None = None,
    sequences: Iterable[SequenceFigures | Mapping[str, Any]] = (),
    sequences_unread: str | None = None,
    schema_check: SchemaCheckFigures | Mapping[str, Any] | None = None,
) -> Report:
    """A report with its verdict; lag defaults to the summary of the sampled series.

    `schema_changes` is the target's schema-change history (oldest first), or
    `schema_changes_unread` why it could not be read: a table still stopped, or not knowing,
    is no-go. `sequences` are the tables' sequences (`migwatch.sequences` plain form), or
    `sequences_unread` why they could not be read: either only warns. `schema_check`: the
    validation result's (`{"status": "not checked"}` when it has none)."""
    cap = spec.validation.sample_cap if spec is not None else 20
    figures = [cap_keys(TableFigures.model_validate(t), cap) for t in tables]
    errs = [RunError.model_validate(e) for e in errors]
    series = series or TimeSeries()
    measures = list(lag) if lag is not None else lag_summary(series, spec)
    seqs = [SequenceFigures.model_validate(x) for x in sequences]
    schema = None if schema_check is None else SchemaCheckFigures.model_validate(schema_check)
    verdict = decide(
        caught_up=caught_up,
        tables=figures,
        lag=measures,
        dlq_events=dlq_events,
        errors=errs,
        slot=slot,
        gate_reason=gate_reason,
        stopped_tables={
            table: _change_text(r) + (f" ({r.note})" if r.note else "")
            for table, r in stopped_tables(schema_changes).items()
        },
        schema_changes_unread=schema_changes_unread,
        migration_id=migration_id,
        sequences=seqs,
        sequences_unread=sequences_unread,
        schema_check=schema,
    )
    return Report(
        migration_id=migration_id,
        source=spec.source.redacted() if spec is not None else "",
        target=spec.target.redacted() if spec is not None else "",
        started_at=_utc(started_at),
        finished_at=_utc(finished_at),
        verdict=verdict,
        caught_up=caught_up,
        gate=gate_reason,
        tables=figures,
        lag=measures,
        dlq_events=dlq_events,
        errors=errs,
        slot=slot,
        schema_changes=[schema_change_record(r) for r in schema_changes],
        sequences=seqs,
        sequences_unread=sequences_unread,
        schema_check=schema,
        series=series,
        links=dict(links or {}),
        notes=[scrub(n) for n in notes],
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
