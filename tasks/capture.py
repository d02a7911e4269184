"""Prefect tasks for change data capture: pre-flight, source and target preparation, the Debezium
connector, its status and teardown. Each builds its clients inside the core call and returns
plain data; only a TransientError (a server unreachable, a connector not ready in time) is
retried — a failed pre-flight or a FAILED connector fails the task at once.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, cast
from uuid import UUID

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from migwatch import capture
from migwatch import preflight as checks
from migwatch.config import MigrationSpec
from migwatch.errors import is_transient


def retry_on_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """`retry_condition_fn`: retry only when the task failed with a TransientError."""
    try:
        state.result()
    except BaseException as exc:
        return is_transient(exc)
    return False


_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
}


@task(name="capture-preflight", timeout_seconds=180, **_RETRIES)
def preflight(spec: MigrationSpec, migration_id: str) -> list[str]:
    """Every pre-flight check; a PreflightError names each failure (not retried)."""
    passed = checks.preflight(spec, migration_id)
    get_run_logger().info("pre-flight passed for %s: %s", migration_id, "; ".join(passed))
    return passed


@task(name="capture-prepare-source", timeout_seconds=120, **_RETRIES)
def prepare_source(spec: MigrationSpec, migration_id: str) -> str:
    """The heartbeat table on the source, with this migration's row."""
    table = capture.prepare_source(spec, migration_id)
    get_run_logger().info("heartbeat table %s ready on the source", table)
    return table


@task(name="capture-ensure-fresh-target", timeout_seconds=600, **_RETRIES)
def ensure_fresh_target(spec: MigrationSpec, migration_id: str,
                        reset: bool = False) -> dict[str, Any]:
    """A fresh start refuses target tables holding rows (TargetNotEmpty, not retried) unless
    `reset` empties them; stale positions are cleared. A resume is left alone."""
    result = capture.ensure_fresh_target(spec, migration_id, reset=reset)
    logger = get_run_logger()
    if not result.fresh:
        logger.info("migration %s resumes (its connector or slot exists): target left as it is",
                    migration_id)
        if result.reset_ignored:
            logger.warning("reset_target ignored: %s is resuming, its snapshot is not taken "
                           "again; tear it down first to start over", migration_id)
    else:
        logger.info("migration %s starts afresh: target tables emptied: %s; stale position "
                    "rows removed: %d", migration_id, list(result.emptied) or "none",
                    result.positions)
    return asdict(result)


@task(name="capture-prepare-target-schema", timeout_seconds=600, **_RETRIES)
def prepare_target_schema(spec: MigrationSpec) -> dict[str, Any]:
    """Missing target tables created from the source's definitions (no-op for MongoDB)."""
    result = capture.prepare_target_schema(spec)
    get_run_logger().info("target tables created: %s; already present: %s",
                          list(result.created) or "none", list(result.present) or "none")
    return asdict(result)


@task(name="capture-finish-target-schema", timeout_seconds=3600, **_RETRIES)
def finish_target_schema(spec: MigrationSpec, migration_id: str | None = None,
                         ) -> dict[str, Any]:
    """Once the load is applied: indexes, constraints and triggers from the source's dump,
    then ANALYZE (MongoDB: the unique keys as unique indexes) — a progress artifact counts the
    objects built; each one's time is logged."""
    from tasks.migrate import artifact_key

    board: dict[str, UUID] = {}

    def progress(done: int, total: int, what: str) -> None:
        text = f"{done} of {total} object(s) built; last: {what}"
        if "id" not in board:
            board["id"] = cast(UUID, create_progress_artifact(
                progress=100.0 * done / max(total, 1), description=text,
                key=artifact_key("migrate", migration_id or "adhoc", "schema")))
        else:
            update_progress_artifact(board["id"], progress=100.0 * done / max(total, 1),
                                     description=text)

    result = capture.finish_target_schema(spec, progress)
    logger = get_run_logger()
    logger.info("target schema finished: %d object(s) built, %d table(s) analyzed",
                len(result["built"]), len(result["analyzed"]))
    for what, seconds in sorted(result.get("seconds", {}).items(), key=lambda kv: -kv[1]):
        logger.info("built %s in %.2f s", what, seconds)
    for what in result["left_out"]:
        logger.warning("not restored on the target: %s", what)
    for what in result.get("roles_missing", []):
        logger.warning("%s", what)
    return result


@task(name="capture-ensure-connector", timeout_seconds=900, **_RETRIES)
def ensure_connector(spec: MigrationSpec, migration_id: str,
                     timeout: float | None = None) -> dict[str, Any]:
    """The Debezium connector created/updated (or left alone) and RUNNING."""
    result = capture.ensure_connector(spec, migration_id, timeout=timeout)
    get_run_logger().info("connector %s %s; %s with tasks %s after %.1fs", result.name,
                          result.action, result.state, list(result.tasks), result.seconds)
    return asdict(result)


@task(name="capture-connector-status", timeout_seconds=60, **_RETRIES)
def connector_status(spec: MigrationSpec, migration_id: str) -> dict[str, Any]:
    """Connector and task states with the first FAILED trace — the monitor's ERROR input."""
    status = capture.connector_status(spec, migration_id)
    get_run_logger().info("connector %s is %s, tasks %s", status.name, status.state,
                          [t.state for t in status.tasks])
    return {**asdict(status), "running": status.running, "failed": status.failed}


@task(name="capture-teardown", timeout_seconds=600, **_RETRIES)
def teardown(spec: MigrationSpec, migration_id: str, delete_topics: bool = False) -> dict[str, Any]:
    """Connector, replication slot, publication, consumer group (and topics) removed, and the
    applier's stored positions cleared from the target."""
    result = capture.teardown(spec, migration_id, delete_topics=delete_topics)
    get_run_logger().info(
        "teardown of %s: connector %s, slot %s, publication %s, consumer group %s, %d topic(s), "
        "%d position row(s)", migration_id, *("removed" if x else "absent" for x in (
            result.connector, result.slot, result.publication, result.consumer_group)),
        len(result.topics), result.positions)
    return asdict(result)


@task(name="capture-table-changes", timeout_seconds=60, **_RETRIES)
def table_changes(spec: MigrationSpec, migration_id: str) -> dict[str, list[str]]:
    """Tables the spec adds to a running migration, and tables it no longer has (read before
    the connector's new configuration changes the publication)."""
    found = capture.table_changes(spec, migration_id)
    log = get_run_logger()
    if found.added:
        log.info("tables added to migration %s: %s — loaded by an incremental snapshot while "
                 "the others keep streaming", migration_id, ", ".join(found.added))
    if found.removed:
        log.warning("tables no longer in the spec of migration %s: %s — no longer captured; "
                    "their target tables are left as they are", migration_id,
                    ", ".join(found.removed))
    return {"added": list(found.added), "removed": list(found.removed)}


@task(name="capture-load-added-tables", timeout_seconds=120, **_RETRIES)
def load_added_tables(spec: MigrationSpec, migration_id: str, tables: list[str]) -> str:
    """Ask Debezium for an incremental snapshot of tables added to a running migration (their
    stale position rows, from an earlier time in the spec, go first)."""
    from migwatch.targets import engine_for

    with engine_for(spec).session("migwatch-migrate") as session:
        session.clear_table_positions(migration_id, tables)
    signal = capture.request_snapshot(spec, migration_id, tables)
    get_run_logger().info("incremental snapshot of %s requested (signal %s)",
                          ", ".join(tables), signal)
    return signal
