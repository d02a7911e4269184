"""Prefect tasks of the migrate stage that the capture tasks do not cover: the CDC applier kept
running, and the initial snapshot followed to its end.

`ensure_applier` starts the applier where the stage runs: as a run of the `cdc-applier`
deployment when the stage itself is a deployment's run (so a worker hosts it), else as a local
`migwatch apply` process. Either way "running" means its consumer group has active members.
`follow_snapshot` publishes progress as artifacts and the `migwatch_snapshot_progress_ratio`
gauge; the figures themselves come from `migwatch.snapshot`.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from migwatch import metrics, names, processes, snapshot
from migwatch.config import MigrationSpec, load_spec
from migwatch.errors import MigwatchError, TransientError
from tasks.capture import retry_on_transient

#: the flow (and deployments of it) that hosts the applier under a Prefect worker
APPLIER_FLOW = "cdc-applier"
PUSH_JOB = "migwatch-migrate"

_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
}


# ------------------------------------------------------------------------------ the applier
@task(name="ensure-applier", timeout_seconds=600, cache_policy=NO_CACHE, **_RETRIES)
def ensure_applier(spec_path: str, migration_id: str,
                   wait_seconds: float = 120) -> dict[str, Any]:
    """The applier running (consumer group with members): left alone if it already is, else
    started as a `cdc-applier` deployment run or a local process, then awaited.

    Returns how it runs: `mode` subprocess (with `pid`), deployment (with `flow_run_id`) or
    unknown (members in the group that this machine and Prefect do not know of).
    """
    logger = get_run_logger()
    spec = load_spec(spec_path)
    start = time.monotonic()
    members = processes.applier_members(spec, migration_id)
    runs = _applier_runs(migration_id)
    action = "already-running"
    pid = processes.applier_pid(migration_id)
    deployment: str | None = None
    if not members and pid is not None and not runs:
        pid = _joined_or_stopped(spec, migration_id, pid, min(30.0, wait_seconds))
        members = processes.applier_members(spec, migration_id) if pid is not None else 0
    if not members:
        action = "started"
        target = _applier_deployment()
        if runs:
            action = "starting"  # a deployment run for it is already on its way
        elif target is not None:
            deployment = f"{APPLIER_FLOW}/{target[1]}"
            runs = [_start_deployment_run(target[0], spec_path, migration_id)]
            logger.info("applier %s: started flow run %s of deployment %s", migration_id,
                        runs[0], deployment)
        else:
            pid = processes.start_applier(spec_path, migration_id)
            logger.info("applier %s: started local process %d (log %s)", migration_id, pid,
                        processes.run_dir(migration_id) / "applier.log")
        local = pid if not runs else None
        members = processes.wait_applier_running(spec, migration_id, timeout=wait_seconds,
                                                 pid=local)
    mode = "deployment" if runs else "subprocess" if pid is not None else "unknown"
    info = {"action": action, "mode": mode, "pid": pid if mode == "subprocess" else None,
            "flow_run_id": runs[0] if runs else None, "deployment": deployment,
            "consumer_group": names.consumer_group(migration_id), "members": members,
            "seconds": round(time.monotonic() - start, 3)}
    logger.info("applier %s: %s (%s, %d member(s) in %s)", migration_id, action, mode, members,
                info["consumer_group"])
    return info


def _joined_or_stopped(spec: MigrationSpec, migration_id: str, pid: int,
                       grace: float) -> int | None:
    """A local applier that is alive but not in its group is either starting or stuck (seen:
    a consumer that hung in a rebalance and was dropped from the group). Give it `grace`
    seconds to join; else stop it, so a fresh one starts. Returns the pid if it joined."""
    try:
        processes.wait_applier_running(spec, migration_id, timeout=grace, pid=pid)
        return pid
    except TransientError:
        get_run_logger().warning("applier %s: local process %d is not in its consumer group "
                                 "after %.0fs; restarting it", migration_id, pid, grace)
        processes.stop_applier(migration_id)
        return None


def _applier_deployment() -> tuple[UUID, str] | None:
    """The `cdc-applier` deployment to run the applier under — only when this flow run is
    itself a deployment's run. Prefers the deployment's own name, then its work pool."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.runtime import deployment

    current_id = deployment.id
    if not current_id:
        return None
    with get_client(sync_client=True) as client:
        current = client.read_deployment(current_id)
        found = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[APPLIER_FLOW])))
    if not found:
        get_run_logger().info("no %s deployment: the applier runs as a local process",
                              APPLIER_FLOW)
        return None
    best = min(found, key=lambda d: (d.name != current.name,
                                     d.work_pool_name != current.work_pool_name, d.name))
    return best.id, best.name


def _start_deployment_run(deployment_id: UUID, spec_path: str, migration_id: str) -> str:
    """A run of the applier deployment, not tied to this flow run: the applier outlives the
    stage (until cutover or teardown), so cancelling the pipeline must not cancel it."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = cast(FlowRun, run_deployment(deployment_id, timeout=0, as_subflow=False,
                         parameters={"spec_path": spec_path, "migration_id": migration_id},
                         flow_run_name=f"applier-{migration_id}",
                         tags=["migwatch", f"migration:{migration_id}"]))
    return str(run.id)


def _applier_runs(migration_id: str) -> list[str]:
    """Ids of `cdc-applier` runs for this migration that are scheduled, pending or running —
    by their parameters: a run the restart automation started has no migration tag."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[APPLIER_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]))),
            limit=200)
    return [str(r.id) for r in found if r.parameters.get("migration_id") == migration_id]


# ------------------------------------------------------------- restarts under Prefect
#: the automation that runs a crashed or failed `cdc-applier` deployment run again
def restart_automation_name(deployment_name: str) -> str:
    return f"migwatch: run {APPLIER_FLOW}/{deployment_name} again when it crashes or fails"


def ensure_restart_automation(deployment_id: UUID, deployment_name: str) -> str:
    """Create, unless it exists, the automation that runs this `cdc-applier` deployment again
    (same parameters, after 5 s) when one of its runs goes Crashed or Failed — a worker's flow
    run killed outright is not retried by the flow's own retries. Returns its name."""
    from datetime import timedelta

    from prefect.automations import (
        Automation,
        EventTrigger,
        Posture,
        ResourceSpecification,
        RunDeployment,
    )

    name = restart_automation_name(deployment_name)
    try:
        Automation.read(name=name)  # type: ignore[unused-coroutine]
        return name
    except ValueError:
        pass

    def same(parameter: str) -> dict[str, str]:
        return {"__prefect_kind": "jinja",
                "template": f"{{{{ flow_run.parameters['{parameter}'] }}}}"}

    Automation(
        name=name,
        description="migwatch: the CDC applier keeps running until cutover or teardown; its "
                    "runs count the restarts and stop after the spec's restart budget",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed", "prefect.flow-run.Failed"},
            match_related=ResourceSpecification({
                "prefect.resource.role": "deployment",
                "prefect.resource.id": f"prefect.deployment.{deployment_id}"}),
            posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id,
                               parameters={"spec_path": same("spec_path"),
                                           "migration_id": same("migration_id")},
                               job_variables=None, schedule_after=timedelta(seconds=5))],
    ).create()
    return name


@task(name="guard-applier-restarts", timeout_seconds=120, cache_policy=NO_CACHE, **_RETRIES)
def guard_applier_restarts(spec: MigrationSpec, migration_id: str) -> dict[str, Any]:
    """At the start of a `cdc-applier` deployment run: make sure the restart automation exists,
    and when this run is one it started, count it (`migwatch_restarts_total`), notify it once —
    or, when more runs of this migration crashed or failed within the spec's
    `supervision.window_seconds` than `supervision.max_restarts` allows, give up: notify
    critical and return `gave_up` so the run ends without applying (and is not run again)."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import deployment, flow_run

    from migwatch import supervision

    logger = get_run_logger()
    out: dict[str, Any] = {"restart": False, "gave_up": False, "restarts": 0, "recent_failures": 0}
    if not deployment.id:
        return out
    ensure_restart_automation(UUID(deployment.id), deployment.name)
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(UUID(flow_run.id))
        runs = [r for r in client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[APPLIER_FLOW])), limit=200)
            if r.parameters.get("migration_id") == migration_id]
    if not _started_by_automation(current):
        return out
    window = dt.timedelta(seconds=spec.supervision.window_seconds)
    now = dt.datetime.now(dt.UTC)
    failed = [r for r in runs if r.state_type in (StateType.CRASHED, StateType.FAILED)
              and r.end_time is not None and now - r.end_time <= window]
    restarts = sum(1 for r in runs if _started_by_automation(r))
    out.update(restart=True, restarts=restarts, recent_failures=len(failed))
    settings = spec.supervision
    if len(failed) > settings.max_restarts:
        out["gave_up"] = True
        metrics.SUPERVISOR_GAVE_UP.labels(migration_id, supervision.APPLIER).set(1)
        metrics.RESTARTS.labels(migration_id, supervision.APPLIER).inc(restarts - 1)
        supervision.push(spec, migration_id)
        supervision.notify(spec, migration_id, "critical",
                           f"the applier's flow run crashed or failed {len(failed)} times "
                           f"within {settings.window_seconds:.0f}s; it is not run again — see "
                           f"the {APPLIER_FLOW} runs of {migration_id}")
        logger.error("applier %s: %d crashed or failed runs within %.0fs; restart budget "
                     "spent, giving up", migration_id, len(failed), settings.window_seconds)
        return out
    metrics.RESTARTS.labels(migration_id, supervision.APPLIER).inc(restarts)
    supervision.push(spec, migration_id)
    supervision.notify(spec, migration_id, "warning",
                       f"the applier's flow run crashed or failed and was run again by the "
                       f"automation (restart {len(failed)} within "
                       f"{settings.window_seconds:.0f}s)")
    logger.warning("applier %s: run again after a crashed or failed run (restart %d within "
                   "%.0fs)", migration_id, len(failed), settings.window_seconds)
    return out


def _started_by_automation(run: Any) -> bool:
    by = getattr(run, "created_by", None)
    return (by is not None and str(getattr(by, "type", "")).upper() == "AUTOMATION") or \
        str(run.idempotency_key or "").startswith("automation ")


@task(name="stop-applier", timeout_seconds=300, cache_policy=NO_CACHE)
def stop_applier(spec: MigrationSpec, migration_id: str,
                 wait_seconds: float = 120) -> dict[str, Any]:
    """Stop the applier wherever `ensure_applier` started it — its `cdc-applier` runs are
    cancelled (each finishes its batch and commits first), a local process gets SIGTERM — and
    wait until its consumer group is empty, as `capture.teardown` needs."""
    runs = _applier_runs(migration_id)
    _cancel_runs(runs)
    local = processes.stop_applier(migration_id)
    deadline = time.monotonic() + wait_seconds
    while (members := processes.applier_members(spec, migration_id)) and \
            time.monotonic() < deadline:
        time.sleep(1)
    if members:
        raise TransientError(f"applier group {names.consumer_group(migration_id)} still has "
                             f"{members} member(s) after {wait_seconds:.0f}s")
    get_run_logger().info("applier %s stopped: %d flow run(s) cancelled, local process %s",
                          migration_id, len(runs), "stopped" if local else "not running")
    return {"flow_runs_cancelled": runs, "local_process_stopped": local}


def _cancel_runs(run_ids: list[str]) -> None:
    """Cancel the way the UI does: a run not started yet is Cancelled outright, one that runs
    goes Cancelling and its worker stops it (SIGTERM after announcing the cancellation)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            run = client.read_flow_run(UUID(run_id))
            started = run.state is not None and (run.state.is_running() or run.state.is_pending())
            client.set_flow_run_state(run.id, Cancelling() if started else Cancelled())


# ------------------------------------------------------------------------------ the COPY load
@task(name="load-by-copy", cache_policy=NO_CACHE, **_RETRIES)
def load_by_copy(spec: MigrationSpec, migration_id: str) -> dict[str, Any]:
    """The initial load by COPY from the slot's exported snapshot (`migwatch.load`), before
    Debezium streams from that slot. A progress artifact (rows, MiB, rows/s, ETA) moves about
    once a second, a table artifact lists each table when done. A retry (or a run started
    again) resumes it: loaded tables stay, the others are copied again."""
    from migwatch.load import run as copy_load
    from migwatch.load.estimate import estimate
    from migwatch.load.progress import LoadView, save_view

    logger = get_run_logger()
    key = artifact_key("load", migration_id)
    progress_id = cast(UUID, create_progress_artifact(
        progress=0.0, key=key, description="initial load by COPY: starting"))
    shown: list[float] = [0.0]
    logged = [0.0]

    def on_progress(view: LoadView) -> None:
        pct = round(100 * view.ratio, 1)
        if pct < shown[0]:
            pct = shown[0]  # the estimate is an estimate: the bar never moves back
        shown[0] = pct
        update_progress_artifact(progress_id, progress=pct,
                                 description=f"initial load by COPY: {view.describe()}")
        save_view(migration_id, view)  # for a terminal watching the run
        if time.monotonic() - logged[0] >= 15:
            logger.info("load %s: %s", migration_id, view.describe())
            logged[0] = time.monotonic()

    def on_table(t: copy_load.TableLoad) -> None:
        logger.info("load %s: %s copied, %d rows in %.1fs", migration_id, t.table, t.rows,
                    t.seconds)

    if not copy_load.streaming(spec, migration_id):
        guess = estimate(spec)
        logger.info("%s", guess.describe())
        for warning in guess.warnings():
            logger.warning("load %s: %s", migration_id, warning)
    result = copy_load.load(spec, migration_id, on_table=on_table, on_progress=on_progress)
    update_progress_artifact(progress_id, progress=100.0,
                             description=f"initial load by COPY: {result.rows:,} rows in "
                                         f"{result.seconds:.1f}s"
                                         + (" (resumed)" if result.resumed else ""))
    create_table_artifact(table=[{"table": t.table, "rows": t.rows, "seconds": t.seconds,
                                  "rows/s": round(t.rows / t.seconds) if t.seconds else None,
                                  "loaded by an earlier run": t.earlier}
                                 for t in result.tables],
                          key=artifact_key("load", migration_id, "tables"),
                          description="initial load by COPY, per table")
    _push(spec, migration_id)
    return copy_load.describe(result)


# ------------------------------------------------------------------------------ the snapshot
@task(name="follow-snapshot", cache_policy=NO_CACHE)
def follow_snapshot(spec: MigrationSpec, migration_id: str, since: float | None = None,
                    incremental: list[str] | None = None) -> dict[str, Any]:
    """Follow the initial snapshot table by table until it is complete (bounded by
    `spec.snapshot.timeout_seconds`); per-table rows loaded and seconds, rows/s, ETA.
    `since` (epoch seconds): when this run began loading; None when it resumed one.
    `incremental`: tables added to a running migration, loaded by an incremental snapshot."""
    board = _SnapshotBoard(spec, migration_id)
    progress = snapshot.follow(spec, migration_id, since=since, on_poll=board.update,
                               incremental=incremental or ())
    board.finish(progress)
    return progress.to_dict()


@task(name="migrate-push-metrics", timeout_seconds=60, cache_policy=NO_CACHE)
def push_metrics(spec: MigrationSpec, migration_id: str) -> bool:
    """Push this migration's metrics (stage duration, snapshot progress); a Pushgateway that is
    away is logged, never a reason to fail the stage."""
    return _push(spec, migration_id)


def _push(spec: MigrationSpec, migration_id: str) -> bool:
    try:
        metrics.push(spec.metrics.pushgateway_url, migration_id, job=PUSH_JOB)
    except MigwatchError as exc:
        get_run_logger().warning("metrics push failed: %s", exc)
        return False
    return True


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes). Names that differ only in
    case (`public.Foo`, `public.foo`) get a short digest each, so their keys differ too."""
    text = "-".join(parts)
    key = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if text != text.lower():
        key = f"{key[:90]}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return key[:100]


def _row(t: snapshot.TableProgress) -> dict[str, Any]:
    return {"table": t.table, "rows loaded": t.rows, "source estimate": t.estimate,
            "done": t.done, "seconds": t.seconds,
            "rows/s": None if not t.seconds else round(t.rows / t.seconds, 1),
            "progress %": round(100 * t.ratio, 1)}


class _SnapshotBoard:
    """The follow's artifacts: one progress artifact for the whole snapshot, updated each poll;
    a table artifact per table when it completes and one summary when all have; a log line when
    a table completes (or every 15 s); metrics pushed as tables complete."""

    def __init__(self, spec: MigrationSpec, migration_id: str) -> None:
        self.spec = spec
        self.migration_id = migration_id
        self.key = artifact_key("snapshot", migration_id)
        self.progress_id: UUID | None = None
        self.shown: tuple[float, str] | None = None
        self.published: set[str] = set()
        self.logged_at = 0.0

    def update(self, p: snapshot.SnapshotProgress) -> None:
        pct, text = round(100 * p.ratio, 1), p.describe()
        if self.progress_id is None:
            self.progress_id = cast(UUID, create_progress_artifact(
                progress=pct, key=self.key, description=f"initial snapshot: {text}"))
        elif (pct, text) != self.shown:
            update_progress_artifact(self.progress_id, progress=pct,
                                     description=f"initial snapshot: {text}")
        self.shown = (pct, text)
        fresh = [t for t in p.tables if t.done and t.table not in self.published]
        for t in fresh:
            create_table_artifact(table=[_row(t)],
                                  key=artifact_key("snapshot", self.migration_id, t.table),
                                  description=f"snapshot of {t.table}: {t.rows:,} rows")
            self.published.add(t.table)
        now = time.monotonic()
        if fresh or now - self.logged_at >= 15:
            get_run_logger().info("snapshot %s: %s", self.migration_id, text)
            self.logged_at = now
        if fresh and not p.done:
            _push(self.spec, self.migration_id)

    def finish(self, p: snapshot.SnapshotProgress) -> None:
        create_table_artifact(table=[_row(t) for t in p.tables],
                              key=artifact_key("snapshot", self.migration_id, "tables"),
                              description=("initial snapshot already complete" if p.already_done
                                           else f"initial snapshot: {p.describe()}"))
        _push(self.spec, self.migration_id)

