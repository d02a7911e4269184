"""The `cdc-applier` flow as a deployment run under a real Prefect runner (its own process, as
under a worker): it applies the snapshot and later changes, serves metrics with a file_sd target,
and a cancellation stops it cleanly — batch committed, target file gone, run Cancelled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling
from psycopg import sql

from migwatch import capture, names, processes, workload
from migwatch.config import MigrationSpec, StackSettings
from migwatch.snapshot import applied_snapshot
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec, pushed

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[2]
TABLES = ["public.customers", "public.orders"]

_SERVE = """
import sys
from prefect import serve
from flows.cdc_apply import cdc_applier
from flows.migrate import migrate

name = sys.argv[1]
serve(cdc_applier.to_deployment(name=name), migrate.to_deployment(name=name), limit=4,
      print_starting_message=False)
"""


@contextmanager
def served_deployments(name: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`cdc-applier/<name>` and `migrate/<name>` served by a Prefect runner in its own process
    (each flow run in a child process, as under a process worker); stopped on exit."""
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        runner = subprocess.Popen([sys.executable, "-c", _SERVE, name], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _deployment_exists(f"cdc-applier/{name}")
                 and _deployment_exists(f"migrate/{name}"), 120, "deployments served",
                 alive=runner, log=log)
        yield runner
    finally:
        runner.send_signal(signal.SIGTERM)  # the runner cancels what it still runs, then exits
        try:
            runner.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(10)


def _deployment_exists(full_name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(full_name)
        except Exception:
            return False
    return True


def wait_for(check: Callable[[], Any], timeout: float, what: str,
             alive: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"{what}: the runner exited ({alive.returncode}):\n{tail}")
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def flow_run(run_id: Any) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def cancel_and_wait(run_id: Any, timeout: float = 120) -> FlowRun:
    """Cancel a flow run the way the UI does and wait for its final state."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(), force=True)
    return wait_for(lambda: (r := flow_run(run_id)).state is not None and r.state.is_final()
                    and r, timeout, "cancelled run reaches a final state")


def run_logs(run_id: Any) -> list[str]:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [entry.message for entry in logs]


def applier_targets(migration_id: str) -> list[Path]:
    return sorted(StackSettings().file_sd_dir.glob(f"migwatch-applier-{migration_id}-*.json"))


def counts(dsn: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        out = {}
        for t in tables:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(*t.split(".")))).fetchone()
            out[t] = int(row[0]) if row else -1
        return out


def committed_equals_stored(stack: Stack, target: PgDatabase, migration_id: str) -> bool:
    """Every offset stored on the target with the data is the group's committed offset."""
    with target.connect() as conn:
        stored = conn.execute("SELECT topic, partition, next_offset FROM migwatch.applied_offsets "
                              "WHERE migration_id = %s", [migration_id]).fetchall()
    consumer = KafkaConsumer(bootstrap_servers=stack.address("kafka"),
                             group_id=names.consumer_group(migration_id),
                             enable_auto_commit=False)
    try:
        return bool(stored) and all(consumer.committed(TopicPartition(t, p)) == o
                                    for t, p, o in stored)
    finally:
        consumer.close()


def write_spec(spec: MigrationSpec, path: Path) -> str:
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    return str(path)


@pytest.fixture
def capture_env(stack: Stack, source_db: PgDatabase, migration_id: str
                ) -> Iterator[list[MigrationSpec]]:
    """Specs whose connector, slot, topics and applier are removed after the test."""
    specs: list[MigrationSpec] = []
    yield specs
    processes.stop_applier(migration_id)
    for spec in specs:
        wait_for(lambda s=spec: processes.applier_members(s, migration_id) == 0, 60,
                 "applier group empty before teardown")
        capture.teardown(spec, migration_id, delete_topics=True, timeout=90)


def test_a_cancelled_applier_run_finishes_its_batch_and_stops_cleanly(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        capture_env: list[MigrationSpec], tmp_path: Path) -> None:
    workload.init(source_db.dsn, 800)
    spec = make_spec(source_db, target_db, TABLES, stack)
    capture_env.append(spec)
    path = write_spec(spec, tmp_path / "spec.yaml")
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    capture.ensure_connector(spec, migration_id, timeout=120)

    with served_deployments(migration_id, tmp_path / "runner.log"):
        run = run_deployment(f"cdc-applier/{migration_id}", timeout=0, as_subflow=False,
                             parameters={"spec_path": path, "migration_id": migration_id})
        processes.wait_applier_running(spec, migration_id, timeout=150)
        wait_for(lambda: applied_snapshot(spec, migration_id).get("*", None)
                 and applied_snapshot(spec, migration_id)["*"].done, 120, "snapshot applied")
        assert counts(target_db.dsn, TABLES) == counts(source_db.dsn, TABLES)
        assert len(applier_targets(migration_id)) == 1  # announced to Prometheus
        with source_db.connect() as conn:
            conn.execute("INSERT INTO public.customers SELECT g, 'n' || g || '@example.com', "
                         "'New', true, NULL, now() FROM generate_series(100001, 100300) g")
        wait_for(lambda: counts(target_db.dsn, TABLES) == counts(source_db.dsn, TABLES), 90,
                 "streamed changes applied")
        assert flow_run(run.id).state.type == StateType.RUNNING  # type: ignore[union-attr]

        ended = cancel_and_wait(run.id)

    assert ended.state is not None and ended.state.type == StateType.CANCELLED
    # the run's logs reach the API in batches: the last ones may land just after the state
    messages = wait_for(lambda: (m := run_logs(run.id)) and any("stopped" in x for x in m) and m,
                        15, "the stopping applier's logs")
    assert any("stop requested" in m for m in messages)
    assert any("stopped cleanly" in m for m in messages), messages
    assert applier_targets(migration_id) == []  # the target file went with it
    assert committed_equals_stored(stack, target_db, migration_id)  # last batch committed
    # the closing consumer's LeaveGroup is a single best-effort request (a busy coordinator may
    # miss it); the broker then drops the member after its 10 s session timeout at the latest
    wait_for(lambda: processes.applier_members(spec, migration_id) == 0, 20,
             "applier left its consumer group")


def flow_run_process(run_id: Any) -> int | None:
    """The pid of the process that runs `run_id` (the runner starts it with the id in its
    environment)."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    return None


def applier_runs(migration_id: str) -> list[FlowRun]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["cdc-applier"])), limit=50)
    return sorted((r for r in found if r.parameters.get("migration_id") == migration_id),
                  key=lambda r: r.created or 0)


def test_a_killed_applier_run_is_run_again_until_its_restart_budget_is_spent(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        capture_env: list[MigrationSpec], tmp_path: Path, hook: Any) -> None:
    """SIGKILL of the flow run's process (no retry of the flow can see it): the runner marks the
    run Crashed, the automation `guard-applier-restarts` made runs the deployment again with the
    same parameters, and the new run counts and notifies the restart and applies what was
    written meanwhile. With a budget of one restart, the second crash ends it: the next run
    gives up without applying and notifies critical."""
    from tasks.migrate import restart_automation_name

    receiver, block = hook
    workload.init(source_db.dsn, 300)
    spec = make_spec(source_db, target_db, TABLES, stack,
                     notifications={"warning": [block], "critical": [block]},
                     supervision={"max_restarts": 1, "window_seconds": 600})
    capture_env.append(spec)
    path = write_spec(spec, tmp_path / "spec.yaml")
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    capture.ensure_connector(spec, migration_id, timeout=120)

    with served_deployments(migration_id, tmp_path / "runner.log"):
        first = run_deployment(f"cdc-applier/{migration_id}", timeout=0, as_subflow=False,
                               parameters={"spec_path": path, "migration_id": migration_id})
        processes.wait_applier_running(spec, migration_id, timeout=150)
        from prefect.automations import Automation

        automation = Automation.read(name=restart_automation_name(migration_id))
        try:
            pid = wait_for(lambda: flow_run_process(first.id), 30, "the first run's process")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: flow_run(first.id).state_type == StateType.CRASHED, 60,
                     "the killed run marked Crashed")
            with source_db.connect() as conn:
                conn.execute("INSERT INTO public.customers SELECT g, 'k' || g || '@example.com',"
                             " 'Killed', true, NULL, now() FROM generate_series(200001, 200200) g")
            second = wait_for(lambda: len(runs := applier_runs(migration_id)) >= 2 and runs[1],
                              90, "the automation running the deployment again")
            assert second.parameters == {"spec_path": path, "migration_id": migration_id}
            wait_for(lambda: counts(target_db.dsn, TABLES) == counts(source_db.dsn, TABLES),
                     150, "the rows written while no applier ran, applied by the second run")
            assert pushed(stack, migration_id)[("migwatch_restarts_total", "applier")] == 1
            assert [b["subject"].split()[1] for b in receiver.json_bodies()] == ["WARNING"]

            pid = wait_for(lambda: flow_run_process(second.id), 30, "the second run's process")
            os.kill(pid, signal.SIGKILL)
            third = wait_for(lambda: len(runs := applier_runs(migration_id)) >= 3 and runs[2],
                             90, "the automation running it a third time")
            ended = wait_for(lambda: (r := flow_run(third.id)).state is not None
                             and r.state.is_final() and r, 120, "the third run's end")
            assert ended.state_type == StateType.COMPLETED  # gave up: nothing to run again
            figures = pushed(stack, migration_id)
            assert figures[("migwatch_supervisor_gave_up", "applier")] == 1
            subjects = [b["subject"].split()[1] for b in receiver.json_bodies()]
            assert subjects == ["WARNING", "CRITICAL"], subjects
            time.sleep(8)  # the automation must not start a fourth run
            assert len(applier_runs(migration_id)) == 3
        finally:
            automation.delete()
            from prometheus_client.exposition import delete_from_gateway

            delete_from_gateway(stack.address("pushgateway").removeprefix("http://"),
                                job="migwatch-supervisor",
                                grouping_key={"migration_id": migration_id})
