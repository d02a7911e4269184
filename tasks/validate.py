"""Prefect tasks of the validate stage: compare one table, run the Great Expectations suites,
save the result for the report stage, re-check pending rows, push the stage's metrics.

Each builds its connections inside the core call and returns plain data (a `TableResult` or
`ValidationResult` as a dict). Only a TransientError (a server unreachable) is retried; a table
that cannot be compared for another reason comes back with status `error`, it does not fail
the task. A long table reports its progress in a Prefect progress artifact.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from migwatch import metrics
from migwatch.config import MigrationSpec
from migwatch.validation import expectations, run
from migwatch.validation.model import TableResult, ValidationResult
from tasks.capture import retry_on_transient

_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": NO_CACHE,  # every call must really compare: the data moves
}


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:100]


class _Progress:
    """A table's progress artifact: created on the first report, updated at most once a second
    (callbacks come from the comparison's threads)."""

    def __init__(self, migration_id: str, table: str) -> None:
        self.key = artifact_key("validate", migration_id, table)
        self.table = table
        self.id: UUID | None = None
        self.last = 0.0
        self.lock = threading.Lock()

    def update(self, table: str, done: int, expected: int) -> None:
        now = time.monotonic()
        with self.lock:
            if self.id is not None and now - self.last < 1.0:
                return
            self.last = now
            self._set(100.0 * done / max(expected, 1), f"{table}: {done:,} of ~{expected:,} rows")

    def finish(self, result: TableResult) -> None:
        with self.lock:
            self._set(100.0, f"{self.table}: {result.status}, {result.rows_compared:,} rows in "
                             f"{result.seconds:.1f} s")

    def _set(self, pct: float, text: str) -> None:
        pct = min(100.0, pct)
        if self.id is None:
            self.id = cast(UUID, create_progress_artifact(progress=pct, key=self.key,
                                                          description=text))
        else:
            update_progress_artifact(self.id, progress=pct, description=text)


# No Prefect timeout: these tasks run in worker threads, where Prefect's timeout cannot interrupt
# a query; the database bounds each query instead (validation.statement_timeout_seconds).
@task(name="validate-table", **_RETRIES)
def compare_table(spec: MigrationSpec, table: str, migration_id: str,
                  moving_source: bool = True) -> dict[str, Any]:
    """Compare one table (counts, range checksums, located rows) → `TableResult` dict."""
    [t] = run.chosen_tables(spec, [table])
    progress = _Progress(migration_id, t.source)
    result = run.validate_table(spec, t, run.options_from(spec, moving_source), migration_id,
                                progress=progress.update, raise_transient=True)
    progress.finish(result)
    log = get_run_logger()
    log.info("%s: %s; %d rows compared, %d missing, %d extra, %d changed, %d ranges, %.1f s",
             t.source, result.status, result.rows_compared, result.missing, result.extra,
             result.changed, result.ranges_checked, result.seconds)
    for w in result.warnings:
        log.warning("%s: %s", t.source, w)
    if result.error:
        log.error("%s: could not compare: %s", t.source, result.error)
    return result.to_dict()


@task(name="validate-schema", timeout_seconds=900, **_RETRIES)
def check_schema(spec: MigrationSpec, result: dict[str, Any]) -> dict[str, Any]:
    """The schema check (foreign keys validated first when every table is equal); the result
    with it. Each difference is logged, naming the object."""
    res = ValidationResult.from_dict(result)
    res.schema = run.check_schema(spec, res)
    log = get_run_logger()
    check = res.schema
    log.info("schema check: %s; %d object(s) compared, %d differ, %d declared, %.1f s",
             check.status, check.objects, len(check.differences), len(check.declared),
             check.seconds)
    for d in check.differences:
        log.warning("schema: %s %s", d.object, d.kind)
    for w in check.warnings:
        log.info("schema: %s", w)
    if check.error:
        log.error("schema check could not run: %s", check.error)
    return res.to_dict()


@task(name="validate-expectations", timeout_seconds=3600, **_RETRIES)
def run_expectations(spec: MigrationSpec, result: dict[str, Any]) -> dict[str, Any]:
    """Great Expectations suites on the target (PostgreSQL); the result with their outcomes."""
    res = ValidationResult.from_dict(result)
    expectations.run_expectations(spec, res)
    blocking = expectations.failed_names(res, moving_counts=False)
    moving = [n for n in expectations.failed_names(res) if n not in blocking]
    log = get_run_logger()
    if blocking:
        log.warning("failed expectations: %s", "; ".join(blocking))
    if moving:
        log.info("row counts differ from the source's while it is written to (the comparison's "
                 "pending ranges decide, not these): %s", "; ".join(moving))
    return res.to_dict()


@task(name="validate-save", timeout_seconds=60, cache_policy=NO_CACHE)
def save_result(result: dict[str, Any]) -> str:
    """Write the result where the report stage reads it; returns the path."""
    return str(run.save_result(ValidationResult.from_dict(result)))


@task(name="validate-revalidate", timeout_seconds=6 * 3600, **_RETRIES)
def revalidate_pending(spec: MigrationSpec, migration_id: str, timeout_seconds: float = 0.0,
                       max_attempts: int = 3) -> dict[str, Any]:
    """Re-check the saved result's pending rows while the source keeps moving (rows still
    changing for up to `timeout_seconds`), re-count every table, save and return the result."""
    res = run.load_result(migration_id)
    run.revalidate(spec, migration_id, res, max_attempts=max_attempts,
                   timeout_seconds=timeout_seconds)
    run.save_result(res)
    log = get_run_logger()
    pending = sum(c.rows for t in res.tables for c in t.pending_ranges())
    log.info("revalidation: %s, %d row(s) still pending", res.status, pending)
    for note in res.notes:
        log.info("revalidation: %s", note)
    return res.to_dict()


@task(name="validate-push-metrics", timeout_seconds=60, **_RETRIES)
def push_metrics(spec: MigrationSpec, migration_id: str) -> None:
    """Push this migration's metrics (rows compared, mismatches, ranges, duration)."""
    metrics.push(spec.metrics.pushgateway_url, migration_id, job="migwatch-validate")
