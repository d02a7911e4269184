"""Prefect tasks of the report stage: build the report, write it (JSON + HTML), publish Prefect
artifacts, push the run's metrics to the Pushgateway, and write the dashboard and alert rules.

Each task calls one core function and returns plain data. Only a TransientError (Prometheus or
the Pushgateway unreachable) is retried; a report is still built when Prometheus is down — its
charts are then empty and the log says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from migwatch import metrics
from migwatch import report as core
from migwatch.config import MigrationSpec
from migwatch.errors import MigwatchError
from migwatch.runs import run_dir
from migwatch.schema_changes import SchemaChange
from tasks.capture import retry_on_transient

_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": NO_CACHE,  # a report reads the moving state of the run: never reuse one
}


@task(name="report-applied-events", timeout_seconds=60, **_RETRIES)
def applied_events(spec: MigrationSpec, migration_id: str) -> dict[str, int]:
    """Events the applier applied per source table (snapshot reads included), from the position
    rows it writes on the target with each batch; '*' is every table, heartbeats included."""
    from migwatch.measures import applied_positions

    return {name: p.events for name, p in applied_positions(spec, migration_id).items()}


@task(name="report-build", timeout_seconds=300, cache_policy=NO_CACHE)
def build_report(
    spec: MigrationSpec,
    migration_id: str,
    started_at: datetime,
    tables: Sequence[Mapping[str, Any]],
    caught_up: bool,
    finished_at: datetime | None = None,
    gate_reason: str | None = None,
    dlq_events: int = 0,
    errors: Sequence[Mapping[str, Any]] = (),
    slot_retained_wal_bytes: int | None = None,
    series: Mapping[str, Any] | None = None,
    links: Mapping[str, str] | None = None,
    samples: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    sequences: Sequence[Mapping[str, Any]] = (),
    sequences_unread: str | None = None,
    schema_check: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's report with its verdict, as plain data. Without `series`, the lag, throughput
    and progress series are read from Prometheus for [started_at, finished_at]; what Prometheus
    lacks comes from the monitor's `samples` columns. `sequences`: the `monitor-sequences`
    task's rows (or `sequences_unread`: why there are none); `schema_check`: the validation
    result's."""
    log = get_run_logger()
    finished_at = finished_at or datetime.now(UTC)
    if series is not None:
        sampled = core.TimeSeries.model_validate(series)
    else:
        sampled = _series_from_prometheus(spec, migration_id, started_at, finished_at, log)
        if samples:
            sampled = core.merge_series(sampled, core.series_from_samples(samples))
    history, unread = _schema_changes(spec, migration_id, log)
    slot = None
    if slot_retained_wal_bytes is not None:
        from migwatch import names

        slot = core.slot_retention(names.slot_name(migration_id), slot_retained_wal_bytes, spec)
    report = core.build_report(
        migration_id=migration_id,
        started_at=started_at,
        finished_at=finished_at,
        tables=tables,
        caught_up=caught_up,
        spec=spec,
        gate_reason=gate_reason,
        dlq_events=dlq_events,
        errors=errors,
        slot=slot,
        series=sampled,
        links=links,
        notes=notes,
        schema_changes=history,
        schema_changes_unread=unread,
        sequences=sequences,
        sequences_unread=sequences_unread,
        schema_check=schema_check,
    )
    v = report.verdict
    log.info("verdict %s for %s%s", v.label, migration_id, "".join(f"\n  - {r}" for r in v.reasons))
    return report.model_dump(mode="json")


def _schema_changes(spec: MigrationSpec, migration_id: str,
                    log: Any) -> tuple[list[SchemaChange], str | None]:
    """The target's schema-change history, or why it could not be read (the verdict then
    cannot rule out a stopped table)."""
    from migwatch.targets import engine_for

    try:
        with engine_for(spec).session("migwatch-report") as session:
            return session.schema_changes(migration_id), None
    except MigwatchError as exc:
        log.warning("schema-change history not read: %s", exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return [], f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _series_from_prometheus(
    spec: MigrationSpec, migration_id: str, start: datetime, end: datetime, log: Any
) -> core.TimeSeries:
    from migwatch.connectors.prometheus import PrometheusClient

    try:
        with PrometheusClient(spec.metrics.prometheus_url) as client:
            return core.collect_series(client, migration_id, start.timestamp(), end.timestamp())
    except MigwatchError as exc:
        log.warning("report charts left empty: %s", exc)
        return core.TimeSeries()


@task(name="report-write", timeout_seconds=60, cache_policy=NO_CACHE)
def write_report(report: Mapping[str, Any], out_dir: str | None = None) -> dict[str, str]:
    """Write report.json and report.html (self-contained) under the run's folder."""
    rep = core.Report.model_validate(report)
    folder = Path(out_dir) if out_dir else run_dir(rep.migration_id)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "html": folder / "report.html"}
    for kind, path in paths.items():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(core.render_json(rep) if kind == "json" else core.render_html(rep))
        tmp.replace(path)
    get_run_logger().info("report written to %s", paths["html"])
    return {k: str(p) for k, p in paths.items()}


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-") or "table"


def artifact_keys(report: Mapping[str, Any]) -> dict[str, Any]:
    """The artifact keys of a report (lowercase, digits, dashes, as Prefect requires)."""
    rep = core.Report.model_validate(report)
    base = f"report-{rep.migration_id}"
    return {
        "summary": base,
        "tables": f"{base}-tables",
        "per_table": [
            f"{base}-{i}-{_slug(t.target_table)}"[:100] for i, t in enumerate(rep.tables, 1)
        ],
        "html": f"{base}-html",
    }


@task(name="report-artifacts", timeout_seconds=60, cache_policy=NO_CACHE)
def publish_artifacts(report: Mapping[str, Any], html_path: str | None = None) -> dict[str, Any]:
    """Markdown summary (verdict first), a table of all tables, a table per table, and a link to
    the HTML report."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    rep = core.Report.model_validate(report)
    keys = artifact_keys(report)
    link = Path(html_path).resolve().as_uri() if html_path else None
    create_markdown_artifact(
        markdown=core.render_markdown(rep, link),
        key=keys["summary"],
        description=f"{rep.verdict.label}: migration {rep.migration_id}",
    )
    rows = core.table_rows(rep)
    create_table_artifact(
        table=rows, key=keys["tables"], description=f"Per-table figures of {rep.migration_id}"
    )
    for key, row in zip(keys["per_table"], rows, strict=True):
        create_table_artifact(
            table=[{"figure": k, "value": "" if v is None else str(v)} for k, v in row.items()],
            key=key,
            description=f"{row['target table']} in migration {rep.migration_id}",
        )
    if link:
        create_link_artifact(
            link=link,
            link_text=f"HTML report of {rep.migration_id}",
            key=keys["html"],
            description="Self-contained report with charts (opens offline)",
        )
    return keys


@task(name="report-push-metrics", timeout_seconds=60, **_RETRIES)
def push_metrics(report: Mapping[str, Any], pushgateway_url: str) -> bool:
    """Record the verdict and push this migration's metrics under its grouping key, so the
    batch stages stay visible to Prometheus after the process exits. True once pushed (a
    failure raises: the flow decides whether it may go on without)."""
    rep = core.Report.model_validate(report)
    metrics.VERDICT.labels(rep.migration_id).set(1 if rep.verdict.go else 0)
    metrics.push(pushgateway_url, rep.migration_id)
    get_run_logger().info("metrics of %s pushed to %s", rep.migration_id, pushgateway_url)
    return True


@task(name="report-dashboard", timeout_seconds=120, **_RETRIES)
def publish_dashboard(spec: MigrationSpec, migration_id: str,
                      install_rules: bool = True) -> dict[str, str]:
    """The Grafana dashboard, its provisioning file and this migration's alert rules in the run's
    folder; the rules loaded into the local stack's Prometheus; the dashboard pushed to Grafana
    when the spec names one (its token from the spec's secret reference)."""
    from migwatch import alerts, dashboard
    from migwatch.connectors.grafana import grafana_token, push_dashboard

    log = get_run_logger()
    paths = dashboard.write_bundle(run_dir(migration_id) / "grafana", spec, migration_id)
    out = {kind: str(path) for kind, path in paths.items()}
    if install_rules:
        installed = alerts.install_rules(paths["rules"].read_text(), paths["rules"].name)
        out["rules_installed"] = str(installed)
    if spec.metrics.grafana_url:
        pushed = push_dashboard(spec.metrics.grafana_url, grafana_token(spec),
                                dashboard.dashboard_json(spec))
        out["grafana"] = spec.metrics.grafana_url.rstrip("/") + pushed.url
    log.info("dashboard and alert rules of %s in %s", migration_id, paths["dashboard"].parent)
    return out
