"""report: the go/no-go verdict of a migration run, with its reasons, figures and charts.

Reads what the earlier stages left in the run's folder (run record, validation result, monitor
samples), re-checks pending mismatches once the applier has passed them, takes one last reading
of every lag and of the tables' sequences on both sides, then writes report.json and a
self-contained report.html, publishes Prefect artifacts, pushes the run's metrics to the
Pushgateway and writes the Grafana dashboard and alert rules. Runs on its own too
(`migwatch report --migration-id ID`), rebuilding a past run's report.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from migwatch import metrics, runs
from migwatch.config import MigrationSpec, check_migration_id, load_spec
from migwatch.errors import MigwatchError
from migwatch.lag import SLOT_WAL, Sample
from migwatch.report import RunError, table_figures
from migwatch.validation.run import result_path
from tasks.monitor import poll_lags, sequences_or_why
from tasks.report import (
    applied_events,
    build_report,
    publish_artifacts,
    publish_dashboard,
    push_metrics,
    write_report,
)
from tasks.validate import revalidate_pending


@flow(name="report")
def report(spec_path: str, migration_id: str,
           revalidate_timeout_seconds: float = 120.0) -> dict[str, Any]:
    """Verdict, report files, artifacts, pushed metrics, dashboard and alert rules."""
    check_migration_id(migration_id)
    spec = load_spec(spec_path)
    log = get_run_logger()
    with metrics.observe_stage(migration_id, "report"):
        record = runs.start(spec_path, migration_id)
        validation = _revalidated(spec, migration_id, revalidate_timeout_seconds)
        last = Sample.from_dict(poll_lags(spec, migration_id))
        monitor = record.stages.get("monitor")
        seqs, seqs_unread = sequences_or_why(spec, "migwatch-report")
        built = build_report(
            spec, migration_id, started_at=record.started_at,
            tables=[t.model_dump() for t in table_figures(
                spec, validation,
                snapshot_rows=_snapshot_rows(record),
                applied_events=applied_events(spec, migration_id),
                table_lag={t.source_table: t.seconds for t in last.tables})],
            caught_up=monitor is not None and monitor.status == "completed",
            gate_reason=_gate_reason(record),
            dlq_events=last.dlq_messages or 0,
            errors=_errors(record),
            slot_retained_wal_bytes=_int(last.value(SLOT_WAL)),
            samples=_samples(migration_id),
            links=_links(spec, record),
            notes=(validation or {}).get("notes") or [],
            sequences=seqs,
            sequences_unread=seqs_unread,
            schema_check=_schema_check(validation),
        )
        paths = write_report(built)
        keys = publish_artifacts(built, paths["html"])
        pushed = _best_effort(log, "metrics push",
                              lambda: push_metrics(built, spec.metrics.pushgateway_url))
        board = _best_effort(log, "dashboard", lambda: publish_dashboard(spec, migration_id))
    verdict = built["verdict"]
    log.info("report of %s: %s; %s", migration_id, "GO" if verdict["go"] else "NO-GO",
             paths["html"])
    return {"migration_id": migration_id, "go": verdict["go"], "reasons": verdict["reasons"],
            "warnings": verdict["warnings"],
            "failed_checks": [c["name"] for c in verdict["checks"] if not c["passed"]],
            "paths": paths, "artifacts": keys,
            "dashboard": board or {}, "pushed": pushed is True}


def _schema_check(validation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The validation result's schema check; "not checked" when the result has none (a run
    on some tables only, or from before the check existed); None without a result."""
    if validation is None:
        return None
    return validation.get("schema") or {"status": "not checked"}


def _revalidated(spec: MigrationSpec, migration_id: str,
                 timeout_seconds: float) -> dict[str, Any] | None:
    """The validation result with its pending ranges re-checked; None when never validated."""
    from migwatch.config import StackSettings

    if not result_path(StackSettings().state_dir, migration_id).exists():
        return None
    return revalidate_pending(spec, migration_id, timeout_seconds=timeout_seconds)


def _snapshot_rows(record: runs.RunRecord) -> dict[str, int]:
    tables = record.stage_result("migrate").get("tables") or {}
    return {name: int(t["rows_loaded"]) for name, t in tables.items()
            if isinstance(t, dict) and t.get("rows_loaded") is not None}


def _gate_reason(record: runs.RunRecord) -> str | None:
    monitor = record.stages.get("monitor")
    if monitor is None:
        return "the monitor stage did not run"
    if monitor.status == "failed":
        return monitor.message or monitor.error_type
    if monitor.status == "running":
        return "the monitor stage did not finish"
    return None


def _errors(record: runs.RunRecord) -> list[dict[str, Any]]:
    """Failed stages as report errors; a failed gate is the verdict's `caught up` check."""
    return [RunError(stage=name, error_type=o.error_type or "Error",
                     message=o.message or "").model_dump()
            for name, o in record.stages.items()
            if o.status == "failed" and not (name == "monitor" and o.error_type == "GateFailed")]


def _samples(migration_id: str) -> dict[str, Any] | None:
    path = runs.run_dir(migration_id) / "samples.json"
    try:
        series: dict[str, Any] = json.loads(path.read_text()).get("series") or {}
    except (OSError, ValueError):
        return None
    return series


def _links(spec: MigrationSpec, record: runs.RunRecord) -> dict[str, str]:
    links = {}
    if flow_run.ui_url:
        links["Prefect flow run"] = str(flow_run.ui_url)
    links["Prometheus: data lag"] = (
        spec.metrics.prometheus_url.rstrip("/") + "/graph?g0.expr="
        + f"migration_data_lag_seconds%7Bmigration_id%3D%22{record.migration_id}%22%7D"
        + "&g0.range_input=1h")
    if spec.metrics.grafana_url:
        links["Grafana"] = spec.metrics.grafana_url.rstrip("/") + "/dashboards"
    return links


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _best_effort(log: Any, what: str, fn: Any) -> Any:
    """Run a publishing step whose failure must not lose the report (already written)."""
    try:
        return fn()
    except MigwatchError as exc:
        log.warning("%s skipped: %s: %s", what, type(exc).__name__, exc)
        return None
