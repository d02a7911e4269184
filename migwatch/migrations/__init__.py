"""Versioned migrations on the target: SQL scripts for PostgreSQL, Python modules for MongoDB.

    run_status(spec)                      applied / pending / failed / changed / missing
    run_up(spec, target_version, dry_run) apply pending scripts, in version order, under a lock
    run_down(spec, target_version, ...)   revert (MongoDB `down`; SQL only with an undo script)
    run_repair(spec, dry_run)             accept edited scripts' checksums, clear failed rows

The spec's `migrations` section names the folder (relative to the spec file), the kind
(default: from the target) and how long to wait for another run's lock. Every step is timed into
`sql_migration_duration_seconds` / `mongodb_migration_duration_seconds`, failures are counted by
error class, and logger `migwatch.migrations` writes one line when a step starts and one when it
ends. `Runner(spec, on_step=...)` also reports each step's start and outcome as it happens.
"""

from __future__ import annotations

from migwatch.migrations._backend import Backend, LockAttempt, LockInfo
from migwatch.migrations._model import (
    HistoryRow,
    Migration,
    RepairPlan,
    State,
    StatusRow,
    Step,
    Version,
    checksum,
    discover,
    plan_down,
    plan_repair,
    plan_up,
    status,
)
from migwatch.migrations._runner import (
    DEFAULT_LOCK_TTL_SECONDS,
    RepairResult,
    Runner,
    RunResult,
    StatusReport,
    StepEvent,
    StepOutcome,
    open_backend,
    resolve_kind,
    run_down,
    run_repair,
    run_status,
    run_up,
)

__all__ = [
    "DEFAULT_LOCK_TTL_SECONDS", "Backend", "HistoryRow", "LockAttempt", "LockInfo", "Migration",
    "RepairPlan", "RepairResult", "RunResult", "Runner", "State", "StatusReport", "StatusRow",
    "Step", "StepEvent", "StepOutcome", "Version", "checksum", "discover", "open_backend",
    "plan_down", "plan_repair", "plan_up", "resolve_kind", "run_down", "run_repair", "run_status",
    "run_up", "status",
]
