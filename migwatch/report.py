"""The report of one migration run: its figures, the go/no-go verdict and how it was reached.

`decide()` turns the run's findings into a verdict with one reason per blocking problem (not caught
up, lag over critical, tables not proven equal, dead-lettered events, failed stages, slot retention
near its limit) — pure, so every rule is unit-tested. `build_report()` assembles a JSON-ready
`Report`; `render_json`, `render_markdown` and `render_html` present it. The HTML is one file with
inline CSS and SVG charts that opens offline; its Content-Security-Policy forbids any fetch.

Nothing secret enters a report: endpoints only in their redacted form, free text (error messages,
gate reasons, notes) scrubbed of URL passwords, `password=`/`token=` pairs and bearer tokens.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from migwatch import charts
from migwatch.charts import format_value

if TYPE_CHECKING:
    from migwatch.config import MigrationSpec
    from migwatch.connectors.prometheus import PrometheusClient

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
#: a slot retaining this share of its limit is a blocking risk (the source may run out of disk)
SLOT_RISK_FRACTION = 0.8
CHART_WIDTH = 950

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
    series: TimeSeries = Field(default_factory=TimeSeries)
    links: dict[str, str] = Field(default_factory=dict)
    #: what holds for the whole run (how values were compared, when counts were taken)
    notes: list[str] = Field(default_factory=list)

    @field_validator("gate")
    @classmethod
    def _scrub(cls, value: str | None) -> str | None:
        return scrub(value) if value else value

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


# ---------------------------------------------------------------------------------- decision
def _key_text(key: Any) -> str:
    if isinstance(key, Mapping) and "key" in key:
        key = key["key"]
    return json.dumps(key, default=str, separators=(",", ":"), ensure_ascii=False)


def decide(
    *,
    caught_up: bool,
    tables: Sequence[TableFigures],
    lag: Sequence[LagMeasure] = (),
    dlq_events: int = 0,
    errors: Sequence[RunError] = (),
    slot: SlotRetention | None = None,
    gate_reason: str | None = None,
) -> Verdict:
    """Go only when caught up, no lag over critical, every table proven equal, nothing
    dead-lettered, no stage failed and the slot is clear of its limit."""
    checks: list[Check] = []
    reasons: list[str] = []
    warnings: list[str] = []

    def check(name: str, problems: list[str], ok_detail: str) -> None:
        checks.append(
            Check(
                name=name,
                passed=not problems,
                detail="; ".join(problems) if problems else ok_detail,
            )
        )
        reasons.extend(problems)

    behind = [
        m for m in lag if m.last is not None and m.caught_up is not None and m.last > m.caught_up
    ]
    problems = []
    if not caught_up:
        why = scrub(gate_reason) if gate_reason else "the monitor gate did not pass"
        detail = ", ".join(
            f"{m.name} {format_value(m.last or 0, m.unit)} > "
            f"{format_value(m.caught_up or 0, m.unit)}"
            for m in behind
        )
        problems.append(f"not caught up: {why}" + (f" ({detail})" if detail else ""))
    elif behind:
        warnings.extend(
            f"{m.name} is {format_value(m.last or 0, m.unit)} at report time, above "
            f"its caught-up threshold {format_value(m.caught_up or 0, m.unit)}"
            for m in behind
        )
    check("caught up", problems, "every lag measure held under its caught-up threshold")

    problems = [
        f"{m.name} is {format_value(m.last, m.unit)}, over its critical threshold "
        f"{format_value(m.critical, m.unit)}"
        for m in lag
        if m.last is not None and m.critical is not None and m.last > m.critical
    ]
    check("lag under critical", problems, "no lag measure over its critical threshold")

    problems = []
    for t in tables:
        keys = ", ".join(_key_text(k) for k in t.differing_keys[:3])
        more = f" (keys {keys}{', …' if len(t.differing_keys) > 3 else ''})" if keys else ""
        if t.validation == "mismatched":
            problems.append(
                f"{t.target_table}: {t.mismatched_rows} row(s) differ from {t.source_table}{more}"
            )
        elif t.validation == "pending":
            problems.append(
                f"{t.target_table}: {t.mismatched_rows} row(s) still pending revalidation{more}"
            )
        elif t.validation == "not_checked":
            problems.append(f"{t.target_table}: not validated")
    if not tables:
        problems.append("no table in the report")
    check("validation", problems, f"all {len(tables)} table(s) equal on source and target")

    problems = [f"{t.target_table}: fails {', '.join(t.failed_expectations)}"
                for t in tables if t.failed_expectations]
    check("expectations", problems, "no expectation failed on the target")

    problems = (
        [f"{dlq_events} event(s) went to the dead-letter topic and were not applied"]
        if dlq_events > 0
        else []
    )
    check("dead-letter queue", problems, "no event dead-lettered")

    failed = [e for e in errors if not e.recovered]
    problems = [
        f"{e.stage} failed: {e.error_type}" + (f" ({e.message})" if e.message else "")
        for e in failed
    ]
    warnings.extend(
        f"{e.stage}: {e.count} {e.error_type} retried and recovered" for e in errors if e.recovered
    )
    check("errors", problems, "no stage failed")

    problems = []
    detail = "no replication slot measured"
    if slot is not None and slot.retained_wal_bytes is not None:
        kept = format_value(slot.retained_wal_bytes, "bytes")
        detail = f"slot {slot.slot} retains {kept}"
        if slot.limit_bytes and slot.retained_wal_bytes >= SLOT_RISK_FRACTION * slot.limit_bytes:
            problems.append(
                f"slot {slot.slot} retains {kept} of WAL, "
                f"{slot.retained_wal_bytes / slot.limit_bytes:.0%} of its limit "
                f"{format_value(slot.limit_bytes, 'bytes')}: the source risks "
                "running out of disk or invalidating the slot"
            )
        elif slot.warn_bytes and slot.retained_wal_bytes >= slot.warn_bytes:
            warnings.append(
                f"slot {slot.slot} retains {kept} of WAL, over its warn threshold "
                f"{format_value(slot.warn_bytes, 'bytes')}"
            )
    check("slot retention", problems, detail)

    return Verdict(go=not reasons, reasons=reasons, warnings=warnings, checks=checks)


# ---------------------------------------------------------------------------------- assembly
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
    from migwatch import alerts
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
) -> Report:
    """A report with its verdict; lag defaults to the summary of the sampled series."""
    cap = spec.validation.sample_cap if spec is not None else 20
    figures = [cap_keys(TableFigures.model_validate(t), cap) for t in tables]
    errs = [RunError.model_validate(e) for e in errors]
    series = series or TimeSeries()
    measures = list(lag) if lag is not None else lag_summary(series, spec)
    verdict = decide(
        caught_up=caught_up,
        tables=figures,
        lag=measures,
        dlq_events=dlq_events,
        errors=errs,
        slot=slot,
        gate_reason=gate_reason,
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
        series=series,
        links=dict(links or {}),
        notes=[scrub(n) for n in notes],
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def collect_series(
    client: PrometheusClient, migration_id: str, start: float, end: float, max_points: int = 240
) -> TimeSeries:
    """The run's lag, throughput and progress as Prometheus recorded them between start and end."""
    from migwatch import metrics, promql

    step = max(1.0, math.ceil((end - start) / max_points))
    window = f"{int(max(10, 2 * step))}s"
    mid = migration_id
    lag_queries: list[tuple[str, Unit, str]] = [
        (
            "data_lag_seconds",
            "seconds",
            f"max({promql.selector(metrics.MIGRATION_DATA_LAG, migration_id=mid)})",
        ),
        (
            "event_time_lag_seconds",
            "seconds",
            f"max({promql.selector(metrics.EVENT_TIME_LAG, migration_id=mid)})",
        ),
        (
            "end_to_end_lag_seconds",
            "seconds",
            f"max({promql.selector(metrics.END_TO_END_LAG, migration_id=mid)})",
        ),
        (
            "consumer_lag_messages",
            "messages",
            f"sum({promql.selector(metrics.CDC_CONSUMER_LAG, migration_id=mid)})",
        ),
        (
            "slot_wal_bytes",
            "bytes",
            f"max({promql.selector(metrics.SLOT_RETAINED_WAL, migration_id=mid)})",
        ),
    ]
    out = TimeSeries()
    for name, unit, expr in lag_queries:
        for s in client.query_range(expr, start, end, step):
            if s.points:
                out.lag.append(SeriesData(name=name, unit=unit, points=s.points))
    for name, metric in (
        ("change events applied/s", metrics.CDC_EVENTS),
        ("rows written/s", metrics.MIGRATION_ROWS),
    ):
        expr = f"sum(rate({promql.selector(metric, migration_id=mid)}[{window}]))"
        for s in client.query_range(expr, start, end, step):
            if s.points:
                out.throughput.append(SeriesData(name=name, unit="per_second", points=s.points))
    progress = (
        f"max {promql.by(metrics.SNAPSHOT_PROGRESS, 'table_name')} "
        f"({promql.selector(metrics.SNAPSHOT_PROGRESS, migration_id=mid)})"
    )
    for s in client.query_range(progress, start, end, step):
        if s.points:
            out.progress.append(
                SeriesData(name=s.labels.get("table_name", "?"), unit="ratio", points=s.points)
            )
    return out


def series_from_samples(columns: Mapping[str, Sequence[Any]]) -> TimeSeries:
    """The report's series from the monitor's sampled columns (`migwatch.lag.summarize`): used
    when Prometheus has nothing for the run (it was down, or never scraped the processes)."""
    at = list(columns.get("at") or [])
    out = TimeSeries()
    for name, unit in MEASURE_UNITS.items():
        for t, v in zip(at, columns.get(name) or [], strict=False):
            if v is not None and math.isfinite(float(v)):
                out.record("lag", name, unit, float(t), float(v))
    for t, v in zip(at, columns.get("throughput_msgs_per_second") or [], strict=False):
        if v is not None:
            out.record("throughput", "change events applied/s", "per_second", float(t), float(v))
    return out


def merge_series(primary: TimeSeries, fallback: TimeSeries) -> TimeSeries:
    """`primary`'s series, with any group it lacks taken from `fallback`."""
    return TimeSeries(
        lag=primary.lag or fallback.lag,
        throughput=primary.throughput or fallback.throughput,
        progress=primary.progress or fallback.progress,
    )


# ---------------------------------------------------------------------------------- rendering
def render_json(report: Report) -> str:
    return report.model_dump_json(indent=2)


def load_json(text: str | bytes) -> Report:
    """A report written by `render_json` (used to rebuild a past run's HTML)."""
    return Report.model_validate_json(text)


def _n(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit:
        return format_value(float(value), unit)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def table_rows(report: Report) -> list[dict[str, Any]]:
    """One plain row per table (the Prefect table artifact and the markdown summary use it)."""
    return [
        {
            "source table": t.source_table,
            "target table": t.target_table,
            "rows on source": t.rows_source,
            "rows on target": t.rows_target,
            "rows counted": t.counted_at,
            "rows loaded by snapshot": t.rows_snapshot,
            "changes applied": t.changes_applied,
            "event-time lag (s)": None
            if t.event_time_lag_seconds is None
            else round(t.event_time_lag_seconds, 3),
            "validation": t.validation,
            "mismatched rows": t.mismatched_rows,
            "differing keys (sample)": ", ".join(_key_text(k) for k in t.differing_keys),
            "failed expectations": "; ".join(t.failed_expectations),
        }
        for t in report.tables
    ]


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, html_path: str | None = None) -> str:
    """The summary for a Prefect markdown artifact: the verdict first, then the figures."""
    v = report.verdict
    icon = "✅" if v.go else "⛔"
    lines = [f"# {icon} {v.label} — migration `{report.migration_id}`", ""]
    if v.reasons:
        lines += ["**Why no-go:**", *[f"- {_md(r)}" for r in v.reasons], ""]
    if v.warnings:
        lines += ["**Warnings:**", *[f"- {_md(w)}" for w in v.warnings], ""]
    if report.notes:
        lines += [*[f"_{_md(n)}_  " for n in report.notes], ""]
    if report.source:
        lines.append(f"{_md(report.source)} → {_md(report.target)}  ")
    lines += [
        f"{report.started_at:%Y-%m-%d %H:%M:%S} → {report.finished_at:%H:%M:%S} UTC "
        f"({format_value(report.duration_seconds, 'seconds')}); caught up: "
        f"{'yes' if report.caught_up else 'no'}; DLQ events: {report.dlq_events}; "
        f"failed stages: {sum(1 for e in report.errors if not e.recovered)}",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_md(c.name)} | {'pass' if c.passed else 'FAIL'} | {_md(c.detail)} |" for c in v.checks
    ]
    lines += [
        "",
        "| table | rows source | rows target | counted | snapshot rows | changes | lag | "
        "validation |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for t in report.tables:
        state = t.validation + (f" ({t.mismatched_rows})" if t.mismatched_rows else "")
        lines.append(
            f"| {_md(t.target_table)} | {_n(t.rows_source)} | {_n(t.rows_target)} | "
            f"{_md(t.counted_at)} | "
            f"{_n(t.rows_snapshot)} | {_n(t.changes_applied)} | "
            f"{_n(t.event_time_lag_seconds, 'seconds')} | {state} |"
        )
    if report.lag:
        lines += [
            "",
            "| lag measure | last | peak | caught-up | warn | critical |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {m.name} | {_n(m.last, m.unit)} | {_n(m.peak, m.unit)} | "
            f"{_n(m.caught_up, m.unit)} | {_n(m.warn, m.unit)} | "
            f"{_n(m.critical, m.unit)} |"
            for m in report.lag
        ]
    links = dict(report.links)
    if html_path:
        links.setdefault("HTML report", html_path)
    if links:
        lines += ["", *[f"- [{_md(k)}]({v})" for k, v in links.items()]]
    return "\n".join(lines) + "\n"


_CSS = """
:root{--go:#1a7f37;--nogo:#c62828;--ink:#1f2328;--muted:#59636e;--line:#d0d7de}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
margin:0 auto;max-width:1000px;padding:24px}
h1{font-size:22px;margin:0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line)}
.verdict{border-radius:8px;padding:16px 20px;color:#fff}
.verdict.go{background:var(--go)}.verdict.nogo{background:var(--nogo)}
.verdict ul{margin:8px 0 0;padding-left:20px}.meta{color:var(--muted);margin:10px 0}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{border-radius:10px;padding:1px 8px;font-size:12px;color:#fff}
.badge.equal,.badge.pass{background:var(--go)}.badge.mismatched,.badge.fail{background:var(--nogo)}
.badge.pending{background:#b26a00}.badge.not_checked{background:#6e7781}
.warn{color:#8a5a00}.note{color:var(--muted);font-size:13px}code{font-size:12px}
figure.chart{margin:12px 0}svg{max-width:100%;height:auto;font-size:11px}
svg .frame{fill:#fff;stroke:var(--line)}svg .grid line{stroke:#eef1f4}
svg .grid text,svg .x-axis text{fill:var(--muted)}svg .chart-title{font-size:13px;font-weight:600}
svg .line{stroke-width:2}svg .threshold{stroke-dasharray:6 4;stroke-width:1.5}
svg .empty{fill:var(--muted);font-size:13px}
figcaption{font-size:12px;color:var(--muted)}
figcaption .key{margin-right:14px}figcaption i{display:inline-block;width:10px;height:10px;
margin-right:4px;border-radius:2px}.off-scale{font-style:italic}
"""


def _lag_rules(report: Report, unit: str) -> list[charts.Rule]:
    m = next((m for m in report.lag if m.name == "data_lag_seconds"), None) or next(
        (m for m in report.lag if m.unit == unit), None
    )
    if m is None or m.unit != unit:
        return []
    rules = []
    if m.warn is not None:
        rules.append(charts.Rule(m.warn, f"warn {format_value(m.warn, unit)}", "#b26a00"))
    if m.critical is not None:
        rules.append(
            charts.Rule(m.critical, f"critical {format_value(m.critical, unit)}", "#c62828")
        )
    return rules


def _charts(report: Report) -> list[str]:
    s = report.series
    span = (report.started_at.timestamp(), report.finished_at.timestamp())
    out = []
    for unit, chart_id, title in (
        ("seconds", "lag-seconds", "Lag over time (seconds)"),
        ("messages", "lag-messages", "Consumer lag (messages)"),
        ("bytes", "slot-wal", "WAL retained by the replication slot"),
    ):
        lines = [charts.Line(x.name, x.points) for x in s.lag if x.unit == unit]
        if lines or unit == "seconds":
            out.append(
                charts.line_chart(
                    chart_id, title, lines, unit, _lag_rules(report, unit), width=CHART_WIDTH,
                    x_range=span,
                )
            )
    out.append(
        charts.line_chart(
            "throughput",
            "Throughput (events per second)",
            [charts.Line(x.name, x.points) for x in s.throughput],
            "per_second",
            width=CHART_WIDTH,
            x_range=span,
        )
    )
    out.append(
        charts.line_chart(
            "progress",
            "Snapshot progress per table",
            [charts.Line(x.name, x.points) for x in s.progress],
            "ratio",
            y_max=1.0,
            width=CHART_WIDTH,
            x_range=span,
        )
    )
    return out


def render_html(report: Report) -> str:
    """One self-contained HTML page: verdict, checks, per-table figures, charts, errors."""
    v = report.verdict
    e = escape
    css_class = "go" if v.go else "nogo"
    reasons = "".join(f"<li>{e(r)}</li>" for r in v.reasons)
    head = (
        f'<section class="verdict {css_class}" id="verdict" data-go="{str(v.go).lower()}">'
        f"<h1>{v.label} — migration {e(report.migration_id)}</h1>"
        + (
            f"<ul>{reasons}</ul>"
            if reasons
            else "<p>Every check passed: the target is caught up and holds the source's data.</p>"
        )
        + "</section>"
    )
    endpoints = f"{e(report.source)} → {e(report.target)}<br>" if report.source else ""
    meta = (
        f'<p class="meta">{endpoints}'
        f"{report.started_at:%Y-%m-%d %H:%M:%S} → {report.finished_at:%Y-%m-%d %H:%M:%S} "
        f"UTC ({e(format_value(report.duration_seconds, 'seconds'))}) · caught up: "
        f"{'yes' if report.caught_up else 'no'} · DLQ events: {report.dlq_events}</p>"
    )
    warnings = "".join(f'<p class="warn">⚠ {e(w)}</p>' for w in v.warnings)
    warnings += "".join(f'<p class="note">{e(n)}</p>' for n in report.notes)
    checks = (
        '<h2>Checks</h2><table id="checks"><tr><th>check</th><th>result</th>'
        "<th>detail</th></tr>"
        + "".join(
            f'<tr><td>{e(c.name)}</td><td><span class="badge '
            f'{"pass" if c.passed else "fail"}">{"pass" if c.passed else "fail"}</span>'
            f"</td><td>{e(c.detail)}</td></tr>"
            for c in v.checks
        )
        + "</table>"
    )
    rows = []
    for t in report.tables:
        keys = ""
        if t.differing_keys:
            items = "".join(f"<li><code>{e(_key_text(k))}</code></li>" for k in t.differing_keys)
            more = " (sample capped)" if t.differing_keys_truncated else ""
            keys = (
                f"<details><summary>{len(t.differing_keys)} key(s){more}</summary>"
                f"<ul>{items}</ul></details>"
            )
        rows.append(
            f'<tr data-table="{e(t.target_table)}"><td>{e(t.source_table)}<br>'
            f"→ {e(t.target_table)}</td><td class=n>{_n(t.rows_source)}</td>"
            f"<td class=n>{_n(t.rows_target)}</td><td>{e(t.counted_at)}</td>"
            f"<td class=n>{_n(t.rows_snapshot)}</td>"
            f"<td class=n>{_n(t.changes_applied)}</td>"
            f"<td class=n>{e(_n(t.event_time_lag_seconds, 'seconds'))}</td>"
            f'<td><span class="badge {t.validation}">{t.validation.replace("_", " ")}</span>'
            f"{f' {t.mismatched_rows} row(s)' if t.mismatched_rows else ''}{keys}"
            + "".join(f'<br><small class="warn">fails {e(x)}</small>'
                      for x in t.failed_expectations)
            + f"{f'<br><small>{e(t.note)}</small>' if t.note else ''}</td></tr>"
        )
    tables = (
        '<h2>Tables</h2><table id="tables"><tr><th>table</th><th>rows on source</th>'
        "<th>rows on target</th><th>counted</th><th>loaded by snapshot</th><th>changes applied</th>"
        "<th>event-time lag</th><th>validation</th></tr>" + "".join(rows) + "</table>"
    )
    lag = ""
    if report.lag:
        lag = (
            '<h2>Lag</h2><table id="lag"><tr><th>measure</th><th>last</th><th>peak</th>'
            "<th>caught-up</th><th>warn</th><th>critical</th></tr>"
            + "".join(
                f"<tr><td>{e(m.name)}</td>"
                + "".join(
                    f"<td class=n>{e(_n(x, m.unit))}</td>"
                    for x in (m.last, m.peak, m.caught_up, m.warn, m.critical)
                )
                + "</tr>"
                for m in report.lag
            )
            + "</table>"
        )
    graphs = "<h2>Over time</h2>" + "".join(_charts(report))
    slot = ""
    if report.slot is not None:
        sl = report.slot
        slot = (
            f"<h2>Replication slot</h2><p>{e(sl.slot)}: retains "
            f"{e(_n(sl.retained_wal_bytes, 'bytes'))} of WAL (warn "
            f"{e(_n(sl.warn_bytes, 'bytes'))}, limit {e(_n(sl.limit_bytes, 'bytes'))})</p>"
        )
    errors = ""
    if report.errors:
        errors = (
            '<h2>Errors</h2><table id="errors"><tr><th>stage</th><th>type</th>'
            "<th>count</th><th>recovered</th><th>message</th></tr>"
            + "".join(
                f"<tr><td>{e(x.stage)}</td><td>{e(x.error_type)}</td>"
                f"<td class=n>{x.count}</td><td>{'yes' if x.recovered else 'no'}</td>"
                f"<td>{e(x.message)}</td></tr>"
                for x in report.errors
            )
            + "</table>"
        )
    links = ""
    if report.links:
        links = (
            "<h2>Links</h2><ul>"
            + "".join(
                f'<li><a href="{e(url)}">{e(name)}</a></li>' for name, url in report.links.items()
            )
            + "</ul>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{v.label} — migwatch report {e(report.migration_id)}</title>"
        f"<style>{_CSS}</style></head><body>{head}{meta}{warnings}{checks}{tables}{lag}"
        f'{graphs}{slot}{errors}{links}<footer class="meta">migwatch report, schema '
        f"{report.schema_version}, generated {generated}</footer></body></html>\n"
    )
