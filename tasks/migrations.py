"""Prefect tasks for versioned target migrations: each opens its own connections through the core
and returns plain data. Only a TransientError (server unreachable, lock still held) is retried;
a failed script, an edited applied script or a missing undo script fails the task at once.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from migwatch import migrations
from migwatch.config import MigrationSpec
from tasks.capture import retry_on_transient

__all__ = ["migrations_down", "migrations_repair", "migrations_status", "migrations_up",
           "retry_on_transient"]

_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
}


@task(name="migrations-status", timeout_seconds=120, **_RETRIES)
def migrations_status(spec: MigrationSpec) -> dict[str, Any]:
    """Applied / pending / failed / changed per version of the spec's migrations folder."""
    report = migrations.run_status(spec)
    counts: dict[str, int] = {}
    for row in report.rows:
        counts[row.state.value] = counts.get(row.state.value, 0) + 1
    get_run_logger().info("migrations on %s: %s", report.target,
                          ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")
    return report.to_dict()


@task(name="migrations-up", timeout_seconds=3600, **_RETRIES)
def migrations_up(spec: MigrationSpec, target_version: str | None = None,
                  dry_run: bool = False) -> dict[str, Any]:
    """Apply pending migrations (up to `target_version`); a retry resumes where it stopped."""
    result = migrations.run_up(spec, target_version=target_version, dry_run=dry_run,
                               on_step=_log_step)
    _log(result)
    return result.to_dict()


@task(name="migrations-down", timeout_seconds=3600, **_RETRIES)
def migrations_down(spec: MigrationSpec, target_version: str | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
    """Revert the newest applied migration, or every one above `target_version`."""
    result = migrations.run_down(spec, target_version=target_version, dry_run=dry_run,
                                 on_step=_log_step)
    _log(result)
    return result.to_dict()


@task(name="migrations-repair", timeout_seconds=300, **_RETRIES)
def migrations_repair(spec: MigrationSpec, dry_run: bool = False) -> dict[str, Any]:
    """Accept edited scripts' checksums and clear failed rows — a deliberate, logged act."""
    result = migrations.run_repair(spec, dry_run=dry_run)
    get_run_logger().info("%srepair: checksums accepted %s, failed rows cleared %s",
                          "dry run: " if dry_run else "",
                          result.plan.to_dict()["checksums_accepted"] or "none",
                          result.plan.to_dict()["failed_cleared"] or "none")
    return result.to_dict()


def _log_step(event: migrations.StepEvent) -> None:
    """One line per step in the task's log (the Prefect UI), as it happens."""
    logger = get_run_logger()
    step = event.step
    if event.outcome is None:
        logger.info("[%d/%d] %s %s (%s)", event.index, event.total, step.direction,
                    step.version, step.migration.description)
        return
    o = event.outcome
    detail = f"{o.error_type}" if o.status == "failed" else f"{o.duration_ms} ms"
    if o.documents:
        detail += ", documents " + ", ".join(f"{c}={n}" for c, n in sorted(o.documents.items()))
    logger.info("[%d/%d] %s %s %s (%s, %s)", event.index, event.total, step.direction,
                step.version, o.status, detail,
                "in a transaction" if o.in_transaction else "no transaction")


def _log(result: migrations.RunResult) -> None:
    logger = get_run_logger()
    if result.dry_run:
        logger.info("dry run: %s would run %s", result.direction,
                    [s.version for s in result.planned] or "nothing")
        return
    if result.lock_taken_over_from:
        logger.warning("took over a stale migrations lock from %s", result.lock_taken_over_from)
    logger.info("%s: %d migration(s) %s after waiting %.1fs for the lock", result.direction,
                len(result.outcomes), result.versions_done or "", result.lock_wait_seconds)
