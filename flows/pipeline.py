"""migration-pipeline: one migration run, four stages — migrate → validate →
monitor-until-caught-up → report.

Each stage is its own flow (a subflow here, runnable alone); the run record in the run's folder
says how each ended, so the report stage always runs — a failed migrate, a failed gate or a
validation that finds differences still produce the report, with a no-go verdict and its reasons,
before this flow fails. Started again with the same `migration_id`, a crashed run resumes: the
connector, the applier and the snapshot are found where they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from flows.migrate import migrate
from flows.monitor import monitor_until_caught_up
from flows.report import report
from flows.validate import validate
from migwatch import metrics, runs
from migwatch.config import StackSettings, check_migration_id, load_spec
from migwatch.errors import GateFailed, NoGo, RunFailed, ValidationFailed


@flow(name="migration-pipeline")
def migration_pipeline(spec_path: str, migration_id: str,
                       reset_target: bool = False) -> dict[str, Any]:
    """Migrate, validate, wait until caught up, report; fail unless the verdict is go.

    `reset_target`: a fresh start empties target tables that hold rows instead of refusing
    them (see flows/migrate.py)."""
    check_migration_id(migration_id)
    spec = load_spec(spec_path)  # a bad spec fails here, naming the field, before anything runs
    run = runs.start(spec_path, migration_id)
    # Prometheus scrapes this run's gauges (snapshot progress, stages) while it lasts
    with metrics.serving(StackSettings().file_sd_dir, "migwatch-pipeline", migration_id,
                         spec.metrics.port):
        migrated = _stage(run, "migrate", migrate, spec_path, migration_id, reset_target)
        if migrated is None:
            _skip(run, "validate", "monitor")
        else:
            _stage(run, "validate", validate, spec_path, migration_id)
            _stage(run, "monitor", monitor_until_caught_up, spec_path, migration_id)
        verdict = _stage(run, "report", report, spec_path, migration_id)

    outcome = _go_or_fail(run, verdict)
    if isinstance(outcome, Exception):
        # the run ends Failed with this error (a caller gets it raised) and no traceback in
        # the log: every stage's reason is in the message and in the report already
        return Failed(message=str(outcome), data=outcome)  # type: ignore[return-value]
    return outcome


def _stage(run: runs.RunRecord, name: str, stage: Callable[..., Any], *args: Any) -> Any:
    """Run one stage's flow, record how it ended, and return its result (None if it failed)."""
    run.begin(name)
    run.save()
    state: State[Any] = stage(*args, return_state=True)
    try:
        result = state.result()
    except Exception as exc:  # the stage failed: recorded, and the report says why
        run.end(name, error=exc)
        run.save()
        get_run_logger().warning("stage %s failed: %s: %s", name, type(exc).__name__, exc)
        return None
    run.end(name, result=result if isinstance(result, dict) else {"value": result})
    run.save()
    return result


def _skip(run: runs.RunRecord, *names: str) -> None:
    for name in names:
        run.stages.pop(name, None)
    run.save()


def _go_or_fail(run: runs.RunRecord,
                verdict: dict[str, Any] | None) -> dict[str, Any] | Exception:
    """The report's summary on go; otherwise the error that says best why not."""
    if verdict is not None and verdict.get("go"):
        return verdict
    reasons = list((verdict or {}).get("reasons") or ["the report stage failed"])
    migrate = run.stages.get("migrate")
    monitor = run.stages.get("monitor")
    if migrate is not None and migrate.status == "failed":
        return RunFailed([f"migrate failed: {migrate.error_type}: {migrate.message}",
                          *reasons])
    if monitor is not None and monitor.status == "failed" and monitor.error_type == "GateFailed":
        return GateFailed(monitor.message or "the caught-up gate did not pass")
    if "validation" in (verdict or {}).get("failed_checks", ()):
        return ValidationFailed(verdict, "no-go: " + "; ".join(reasons))
    return NoGo(reasons)
