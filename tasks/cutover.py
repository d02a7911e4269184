"""Prefect tasks of the cutover: thin calls into `migwatch.cutover`, each one step.

Only reads are retried (on a TransientError): a step that changes something — the freeze, a
hook, the sequences, the switch — runs once, and the flow undoes the freeze when one fails.
`wait_for_approval` pauses the flow run for a run-input form in the Prefect UI (or the API).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from prefect.tasks import exponential_backoff
from pydantic import Field

from migwatch import capture, metrics, notifications, processes, sequences
from migwatch.config import Hook, MigrationSpec
from migwatch.cutover import drain, final, freeze, hooks, preconditions
from migwatch.cutover.drain import Drained
from migwatch.cutover.freeze import Frozen
from migwatch.errors import CutoverAborted, MigwatchError
from migwatch.lag.model import Notice, Verdict
from migwatch.report.model import CutoverFigures
from migwatch.report.render import cutover_markdown
from migwatch.runs import run_dir
from migwatch.targets import engine_for
from tasks.capture import retry_on_transient
from tasks.migrate import artifact_key, stop_applier

_READ_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_condition_fn": retry_on_transient,
    "cache_policy": NO_CACHE,
}
PUSH_JOB = "migwatch-cutover"


class Approval(RunInput):
    """The form the paused cutover shows in the Prefect UI. Prefect's open-source server knows
    no users: the approver is whoever the person says they are, and the report says so."""

    approver: str = Field(min_length=1, max_length=100,
                          description="Your name (self-declared: the server has no user "
                                      "identity; the report records it as given)")
    comment: str = Field(default="", max_length=500, description="Why now, ticket, change id")
    confirm: bool = Field(default=False, description="Tick to freeze writes on the source and "
                                                     "switch the application to the target")


def wait_for_approval(timeout_seconds: float) -> Approval | None:
    """Pause this flow run until someone submits the form; None when nobody did in time (the
    run is then set running again, so the refusal is recorded and the run fails with it
    rather than with Prefect's "never resumed")."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.states import Running

    try:
        return pause_flow_run(wait_for_input=Approval, timeout=int(timeout_seconds),
                              key="cutover-approval")
    except FlowPauseTimeout:
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(context.flow_run.id, Running(), force=True)
        return None


@task(name="cutover-preconditions", timeout_seconds=300, **_READ_RETRIES)
def check_preconditions(spec: MigrationSpec, migration_id: str) -> list[str]:
    """Every reason the cutover may not start now ([] when it may)."""
    reasons = preconditions.check(spec, migration_id, run_dir(migration_id))
    for r in reasons:
        get_run_logger().warning("cutover %s refused: %s", migration_id, r)
    return reasons


@task(name="cutover-full-pass", timeout_seconds=3600, **_READ_RETRIES)
def full_pass(spec: MigrationSpec, migration_id: str) -> final.FullPass:
    """Every table compared (pending rows re-checked) while the source still moves."""
    return final.full_pass(spec, migration_id)


@task(name="cutover-validate-foreign-keys", timeout_seconds=3600, **_READ_RETRIES)
def validate_foreign_keys(spec: MigrationSpec) -> tuple[list[str], list[str]]:
    """The target's foreign keys left NOT VALID by the load, validated before the freeze."""
    return engine_for(spec).validate_foreign_keys()


@task(name="cutover-freeze", timeout_seconds=300, cache_policy=NO_CACHE)
def freeze_source(spec: MigrationSpec) -> Frozen:
    """The built-in freeze: new sessions read-only, the application's sessions ended."""
    settings = spec.cutover
    frozen = freeze.freeze(spec, settings.freeze.terminate_sessions,
                           settings.terminate_timeout_seconds)
    get_run_logger().info("source frozen: database %s read-only for new sessions; %d "
                          "application session(s) ended", frozen.database,
                          len(frozen.terminated))
    return frozen


@task(name="cutover-hook", timeout_seconds=900, cache_policy=NO_CACHE)
def run_hook(hook: Hook, step: str, migration_id: str) -> str:
    """One user hook (freeze, its undo, or the switch); a failure is a HookFailed."""
    outcome = hooks.run(hook, step, migration_id)
    get_run_logger().info("hook %s: %s", step, outcome)
    return outcome


@task(name="cutover-drain", timeout_seconds=3600, cache_policy=NO_CACHE)
def drain_to_fence(spec: MigrationSpec, migration_id: str) -> Drained:
    """Write the fence, then wait until every change before it is applied on the target."""
    fence = drain.write_fence(spec, migration_id)
    drained = drain.drain(spec, migration_id, fence, spec.cutover.drain_timeout_seconds)
    get_run_logger().info("drained: %s", drained.describe())
    return drained


@task(name="cutover-applied-counts", timeout_seconds=120, **_READ_RETRIES)
def applied_counts(spec: MigrationSpec, migration_id: str) -> dict[str, int]:
    return final.applied_events(spec, migration_id)


@task(name="cutover-final-check", timeout_seconds=3600, cache_policy=NO_CACHE)
def final_check(spec: MigrationSpec, tables: list[str]) -> list[str]:
    """`tables` compared on the frozen source; what is not equal (empty: all equal)."""
    if not tables:
        return []
    return final.not_equal(final.final_pass(spec, tables))


@task(name="cutover-sequences", timeout_seconds=300, cache_policy=NO_CACHE)
def set_sequences(spec: MigrationSpec) -> list[str]:
    """The target's sequences set from the frozen source's (plus the spec's margin)."""
    values = sequences.cutover_values(spec, spec.cutover.sequence_margin)
    return engine_for(spec).set_sequences(values, application=final.APPLICATION)


@task(name="cutover-undo-freeze", timeout_seconds=600, cache_policy=NO_CACHE)
def undo_freeze(spec: MigrationSpec, migration_id: str, frozen: Frozen | None,
                hooks_done: list[Any]) -> list[str]:
    """Undo the freeze in reverse: each user hook that ran (by its undo), then the built-in
    settings. Every undo is tried even when one fails; a failed one raises at the end."""
    logger = get_run_logger()
    undone: list[str] = []
    failed: list[str] = []
    for hook in reversed(hooks_done):
        if hook.undo is None:
            continue
        try:
            hooks.run(hook.undo, f"undo {hook.name}", migration_id)
            undone.append(f"hook {hook.name}")
        except MigwatchError as exc:
            failed.append(str(exc))
    if frozen is not None:
        try:
            freeze.thaw(spec, frozen)
            undone.append("source read-only setting")
        except MigwatchError as exc:
            failed.append(f"source read-only setting: {exc}")
    if failed:
        logger.error("undo incomplete: %s", "; ".join(failed))
        raise CutoverAborted("undo freeze", "; ".join(failed), undone)
    return undone


@task(name="cutover-teardown", timeout_seconds=600, cache_policy=NO_CACHE)
def teardown_cdc(spec: MigrationSpec, migration_id: str) -> str:
    """The applier stopped, then the connector, slot, publication and consumer group gone."""
    processes.stop_monitor(migration_id)
    stop_applier.fn(spec, migration_id)
    done = capture.teardown(spec, migration_id)
    return (f"connector {'deleted' if done.connector else 'absent'}, slot "
            f"{'dropped' if done.slot else 'absent'}, applier stopped")


@task(name="cutover-publish", timeout_seconds=120, cache_policy=NO_CACHE)
def publish(spec: MigrationSpec, migration_id: str, figures: CutoverFigures) -> None:
    """The cutover's markdown artifact and metrics (downtime, each step's seconds)."""
    create_markdown_artifact(markdown=cutover_markdown(figures, migration_id),
                             key=artifact_key("cutover", migration_id),
                             description=f"cutover {figures.outcome}")
    if figures.downtime_seconds is not None:
        metrics.CUTOVER_DOWNTIME.labels(migration_id).set(figures.downtime_seconds)
    for st in figures.steps:
        if st.seconds is not None:
            metrics.CUTOVER_STEP.labels(migration_id, st.name).set(st.seconds)
    try:
        metrics.push(spec.metrics.pushgateway_url, migration_id, job=PUSH_JOB)
    except MigwatchError as exc:
        get_run_logger().warning("metrics push failed: %s", exc)


_KIND = {"started": ("warning", Verdict.WARNING), "switched": ("resolved", Verdict.OK)}


@task(name="cutover-notify", timeout_seconds=120, cache_policy=NO_CACHE)
def notify(spec: MigrationSpec, migration_id: str, what: str, reasons: list[str]) -> int:
    """`started`, `switched` or anything else (aborted, refused: critical) through the blocks
    the spec names; returns how many channels took it. Never fails the cutover."""
    kind, verdict = _KIND.get(what, ("critical", Verdict.ERROR))
    notice = Notice(kind=kind, migration_id=migration_id, verdict=verdict, measure=None,
                    value=None, threshold=None, eta_seconds=None,
                    reasons=(f"cutover {what}", *reasons), at=time.time(),
                    peak="warning" if kind == "resolved" else None)
    try:
        delivered = notifications.send(notice, spec.notifications)
    except Exception as exc:
        get_run_logger().warning("cutover notice failed: %s", type(exc).__name__)
        return 0
    return sum(1 for d in delivered if d.ok)
