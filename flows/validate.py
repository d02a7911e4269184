"""validate: prove the target holds the source's data, table by table, then with GX suites.

Tables are compared `spec.validation.workers` at a time, one `validate-table` task each (live
progress artifacts for long tables); Great Expectations suites run on a PostgreSQL target; the
result is saved where the report stage (and `revalidate`) finds it, summarised in a table
artifact, and its metrics are pushed. While CDC runs, differences are *pending* — not failures.
With `strict`, differences or tables that could not be compared raise `ValidationFailed`
carrying the result; by default the flow returns it, so the pipeline still builds its report.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture

from migwatch import metrics
from migwatch.config import MigrationSpec, TableSpec, check_migration_id, load_spec
from migwatch.errors import MigwatchError, ValidationFailed
from migwatch.validation import DIFFERENT, ERROR
from migwatch.validation.expectations import failed_names
from migwatch.validation.model import TableResult, ValidationResult
from migwatch.validation.run import begin, chosen_tables, error_result
from migwatch.validation.schema_check import markdown_lines
from tasks.validate import (
    artifact_key,
    check_schema,
    compare_table,
    push_metrics,
    run_expectations,
    save_result,
)


@flow(name="validate")
def validate(spec_path: str, migration_id: str, strict: bool = False,
             expectations: bool = True, moving_source: bool = True,
             tables: list[str] | None = None) -> dict[str, Any]:
    """Compare every table (or `tables`) source vs target; GX suites; save and publish."""
    check_migration_id(migration_id)
    spec = load_spec(spec_path)
    with metrics.observe_stage(migration_id, "validate"):
        result = begin(spec, migration_id)
        result.tables = _compare_tables(spec, chosen_tables(spec, tables), migration_id,
                                        moving_source)
        data = result.to_dict()
        if tables is None:  # a run limited to some tables says nothing of the whole schema
            data = check_schema(spec, data)
        if expectations:
            data = run_expectations(spec, data)
        path = save_result(data)
    result = ValidationResult.from_dict(data)
    _publish(result)
    _push(spec, migration_id)
    get_run_logger().info("validate %s: %s (%d table(s)); result in %s", migration_id,
                          result.status, len(result.tables), path)
    if strict and result.status in (DIFFERENT, ERROR):
        raise ValidationFailed(data, _failure_message(result))
    return {**data, "result_path": path}


def _compare_tables(spec: MigrationSpec, tables: list[TableSpec], migration_id: str,
                    moving_source: bool) -> list[TableResult]:
    """One task per table, at most `spec.validation.workers` running; overall progress."""
    board = _Progress(migration_id, len(tables))
    running: deque[tuple[TableSpec, PrefectFuture[dict[str, Any]]]] = deque()
    done: list[TableResult] = []

    def collect() -> None:
        table, future = running.popleft()
        future.wait()
        try:
            done.append(TableResult.from_dict(future.result()))
        except Exception as exc:  # retries exhausted, timeout: record it, compare the others
            done.append(error_result(spec, table, exc))
        board.update(done[-1])

    for t in tables:
        if len(running) >= spec.validation.workers:
            collect()
        running.append((t, compare_table.submit(spec, t.source, migration_id, moving_source)))
    while running:
        collect()
    return done


class _Progress:
    """The stage's progress artifact: tables done over tables to compare."""

    def __init__(self, migration_id: str, total: int) -> None:
        self.total = max(total, 1)
        self.count = 0
        self.id = cast(UUID, create_progress_artifact(
            progress=0.0, key=artifact_key("validate", migration_id),
            description=f"0 of {total} table(s) compared"))

    def update(self, table: TableResult) -> None:
        self.count += 1
        update_progress_artifact(self.id, progress=100.0 * self.count / self.total,
                                 description=f"{self.count} of {self.total} table(s) compared; "
                                             f"{table.table}: {table.status}")


def _publish(result: ValidationResult) -> None:
    """A table artifact (one row per table) and a markdown artifact with what differs."""
    key = artifact_key("validate", result.migration_id)
    create_table_artifact(table=summary_rows(result), key=f"{key}-tables",
                          description=f"validation: {result.status}")
    create_markdown_artifact(markdown=markdown(result), key=f"{key}-report",
                             description=f"validation: {result.status}")
    gx_rows = expectation_rows(result)
    if gx_rows:
        create_table_artifact(table=gx_rows, key=f"{key}-expectations",
                              description="Great Expectations suites on the target")


def expectation_rows(result: ValidationResult) -> list[dict[str, Any]]:
    """One row per table whose GX suite ran: counts and the failed expectations, named."""
    rows = []
    for t in result.tables:
        gx = t.expectations or {}
        if not gx.get("applies"):
            continue
        failed = [f["expectation"] + (f"({f['kwargs']['column']})"
                                      if f.get("kwargs", {}).get("column") else "")
                  for f in gx.get("failed", [])]
        rows.append({"table": t.table, "suite": gx.get("suite"), "success": gx.get("success"),
                     "evaluated": gx.get("evaluated"), "passed": gx.get("passed"),
                     "failed": "; ".join(failed) or gx.get("error") or ""})
    return rows


def summary_rows(result: ValidationResult) -> list[dict[str, Any]]:
    rows = []
    for t in result.tables:
        gx = t.expectations or {}
        rows.append({
            "table": t.table, "target": t.target, "status": t.status,
            "source rows": t.source_rows, "target rows": t.target_rows,
            "rows compared": t.rows_compared, "missing": t.missing, "extra": t.extra,
            "changed": t.changed, "pending rows": sum(c.rows for c in t.pending_ranges()),
            "ranges checked": t.ranges_checked, "seconds": t.seconds,
            "expectations": ("n/a" if gx.get("applies") is False else
                             f"{gx['passed']}/{gx['evaluated']} passed" if gx else "not run"),
        })
    return rows


def markdown(result: ValidationResult) -> str:
    lines = [f"## Validation `{result.migration_id}`: {result.status}", ""]
    lines += [f"- {n}" for n in result.notes]
    for t in result.tables:
        if t.status == "equal" and not t.warnings:
            continue
        lines += ["", f"### {t.table} → {t.target}: {t.status}"]
        if t.error:
            lines.append(f"Could not compare: {t.error}")
        lines += [f"- {w}" for w in t.warnings + t.schema_differences]
        if t.sample:
            lines += ["", "| kind | key | columns |", "|---|---|---|"]
            lines += [f"| {d.kind} | {d.key} | {', '.join(d.columns)} |" for d in t.sample]
            if t.sample_truncated:
                lines.append(f"\n… {t.mismatched_rows - len(t.sample)} more differing row(s)")
    failed = failed_names(result)
    if failed:
        lines += ["", "### Failed expectations", *[f"- {f}" for f in failed]]
    if result.schema is not None:
        lines += ["", "### Schema", *markdown_lines(result.schema)]
    return "\n".join(lines)


def _push(spec: MigrationSpec, migration_id: str) -> None:
    try:
        push_metrics(spec, migration_id)
    except MigwatchError as exc:  # metrics are best effort: the result is saved already
        get_run_logger().warning("metrics not pushed: %s", exc)


def _failure_message(result: ValidationResult) -> str:
    parts = []
    for t in result.tables:
        if t.status == ERROR:
            parts.append(f"{t.table}: could not compare ({t.error})")
        elif t.status == DIFFERENT:
            parts.append(f"{t.table}: {t.missing} missing, {t.extra} extra, {t.changed} changed"
                         + (f", schema: {'; '.join(t.schema_differences)}"
                            if t.schema_differences else ""))
    failed = failed_names(result)
    if failed:
        parts.append("failed expectations: " + "; ".join(failed))
    schema = result.schema
    if schema is not None and schema.status in (ERROR, DIFFERENT):
        parts.append("schema: " + (schema.error or "; ".join(
            f"{d.object} {d.kind}" for d in schema.differences[:10])))
    return "validation failed: " + " | ".join(parts)
