"""The migrate stage end to end under a real Prefect API, on the real stack: target schema and
versioned migrations, connector, applier, the followed snapshot with its artifacts and gauge;
a second run that changes nothing; a MongoDB target; an empty table the snapshot ends on; and,
run as a deployment, the applier started as a `cdc-applier` deployment run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from psycopg import sql
from pymongo import MongoClient

from flows.migrate import migrate
from migwatch import capture, metrics, processes, snapshot, workload
from migwatch.config import MigrationSpec
from migwatch.errors import TransientError
from migwatch.stack import Stack
from tasks.migrate import artifact_key, ensure_applier, stop_applier
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.flows.test_cdc_apply_flow import (
    counts,
    flow_run,
    run_logs,
    served_deployments,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[2]
SHOP = list(workload.SHOP_TABLES)
EMPTY = "public.zz_empty"  # sorts after every other table: the last one Debezium snapshots


@pytest.fixture
def cleanup(stack: Stack, source_db: PgDatabase, migration_id: str
            ) -> Iterator[list[MigrationSpec]]:
    """Whatever the test started — applier, connector, slot, topics, pushed metrics — removed
    afterwards, also when it failed."""
    specs: list[MigrationSpec] = []
    yield specs
    processes.stop_applier(migration_id)
    for spec in specs:
        wait_for(lambda s=spec: processes.applier_members(s, migration_id) == 0, 60,
                 "applier group empty before teardown")
        capture.teardown(spec, migration_id, delete_topics=True, timeout=90)
        requests.delete(f"{spec.metrics.pushgateway_url}/metrics/job/migwatch-migrate/"
                        f"migration_id/{migration_id}", timeout=10)


def artifacts(key: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))


def mongo_counts(stack: Stack, database: str, tables: list[str]) -> dict[str, int]:
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    try:
        return {t: client[database][t.split(".")[1]].count_documents({}) for t in tables}
    finally:
        client.close()


def test_migrate_to_postgres_then_again_changes_nothing(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    workload.init(source_db.dsn, 3000)
    with source_db.connect() as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(
            sql.Identifier(*EMPTY.split("."))))
    tables = [*SHOP, EMPTY]
    spec = make_spec(source_db, target_db, tables, stack,
                     migrations={"folder": str(REPO / "deployments/migrations/postgres")},
                     snapshot={"timeout_seconds": 300, "poll_interval_seconds": 1})
    cleanup.append(spec)
    path = write_spec(spec, tmp_path / "spec.yaml")

    out = migrate(path, migration_id)

    source = counts(source_db.dsn, tables)
    assert source[EMPTY] == 0 and source["public.orders"] == 900
    assert counts(target_db.dsn, tables) == source  # an independent count on both sides
    assert {t: f["rows_loaded"] for t, f in out["tables"].items()} == source
    assert out["tables"][EMPTY]["seconds"] == 0.0  # the empty, last table did not hold it up
    assert all(f["seconds"] is not None for f in out["tables"].values())
    assert out["snapshot"]["done"] and not out["snapshot"]["already_done"]
    assert list(out["schema"]["created"][:5]) == SHOP  # created first, then migrated
    assert [o["version"] for o in out["migrations"]["outcomes"]] == ["1", "1.1", "2"]
    with target_db.connect() as conn:
        assert conn.execute("SELECT to_regclass('public.orders_customer_id_idx') IS NOT NULL, "
                            "to_regclass('public.customer_order_totals') IS NOT NULL"
                            ).fetchone() == (True, True)
    assert out["connector"]["action"] == "created" and out["connector"]["state"] == "RUNNING"
    applier = out["applier"]
    assert (applier["action"], applier["mode"]) == ("started", "subprocess")
    assert applier["pid"] == processes.applier_pid(migration_id) and applier["members"] >= 1

    [progress] = artifacts(artifact_key("snapshot", migration_id))
    assert progress.type == "progress" and progress.data == 100.0
    for table in tables:
        [per_table] = artifacts(artifact_key("snapshot", migration_id, table))
        assert per_table.type == "table" and table in str(per_table.data)
    assert metrics.REGISTRY.get_sample_value(
        "migwatch_snapshot_progress_ratio",
        {"migration_id": migration_id, "table_name": "public.order_items"}) == 1.0
    pushed = requests.get(f"{spec.metrics.pushgateway_url}/metrics", timeout=10).text
    assert any("migwatch_snapshot_progress_ratio{" in line and migration_id in line
               and 'job="migwatch-migrate"' in line for line in pushed.splitlines())

    again = migrate(path, migration_id)

    assert again["connector"]["action"] == "unchanged"
    assert (again["applier"]["action"], again["applier"]["pid"]) == ("already-running",
                                                                      applier["pid"])
    assert again["snapshot"]["already_done"] and again["migrations"]["outcomes"] == []
    assert not again["schema"]["created"]
    assert {t: f["rows_loaded"] for t, f in again["tables"].items()} == source


def test_migrate_to_mongodb(stack: Stack, source_db: PgDatabase, mongo_db: str,
                            migration_id: str, cleanup: list[MigrationSpec],
                            tmp_path: Path) -> None:
    workload.init(source_db.dsn, 1500)
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), SHOP, stack,
                     migrations={"folder": str(REPO / "deployments/migrations/mongodb")},
                     snapshot={"timeout_seconds": 300, "poll_interval_seconds": 1})
    cleanup.append(spec)

    out = migrate(write_spec(spec, tmp_path / "spec.yaml"), migration_id)

    source = counts(source_db.dsn, SHOP)
    assert mongo_counts(stack, mongo_db, SHOP) == source
    assert {t: f["rows_loaded"] for t, f in out["tables"].items()} == source
    assert not out["schema"]["created"] and not out["schema"]["present"]  # collections need no DDL
    assert [o["status"] for o in out["migrations"]["outcomes"]] == ["success"] * 3
    assert out["snapshot"]["done"] and out["applier"]["mode"] == "subprocess"


def test_a_snapshot_whose_last_record_is_dead_lettered_still_completes(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    tables = ["public.customers", "public.orders"]
    workload.init(source_db.dsn, 600)
    # the heartbeat table comes last in the snapshot; a target copy that refuses its rows
    # dead-letters the snapshot's very last record, the one carrying its end mark
    with target_db.connect() as conn:
        conn.execute("CREATE TABLE public.migwatch_heartbeat (migration_id text PRIMARY KEY, "
                     "beat_at timestamptz NOT NULL CHECK (beat_at < '2000-01-01'), writer text)")
    spec = make_spec(source_db, target_db, tables, stack,
                     snapshot={"timeout_seconds": 120, "poll_interval_seconds": 1})
    cleanup.append(spec)

    out = migrate(write_spec(spec, tmp_path / "spec.yaml"), migration_id)

    assert out["snapshot"]["done"]
    assert counts(target_db.dsn, tables) == counts(source_db.dsn, tables)
    with target_db.connect() as conn:
        row = conn.execute("SELECT dlq_events FROM migwatch.applied_position "
                           "WHERE migration_id = %s AND table_name = '*'",
                           [migration_id]).fetchone()
    assert row is not None and row[0] >= 1  # counted where the report reads it


def test_following_a_snapshot_that_nothing_applies_gives_up_before_its_timeout(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t VALUES (1)")
    spec = make_spec(source_db, target_db, ["public.t"], stack,
                     snapshot={"timeout_seconds": 120, "poll_interval_seconds": 0.5})
    with pytest.raises(TransientError, match="stalled: no applier consumed") as failed:
        snapshot.follow(spec, migration_id, applier_grace=3)
    assert "public.t 0/~1" in str(failed.value) and "0 member(s)" in str(failed.value)


def test_a_local_applier_that_never_joins_its_group_is_replaced(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    spec = make_spec(source_db, target_db, ["public.t"], stack)
    cleanup.append(spec)
    path = write_spec(spec, tmp_path / "spec.yaml")
    capture.prepare_target_schema(spec)
    # a process that holds the applier's pid file but is no consumer: a hung applier
    hung = subprocess.Popen(["sleep", "600"])
    (processes.run_dir(migration_id) / "applier.pid").write_text(str(hung.pid))

    @flow(name="ensure-applier-test")
    def ensure() -> dict[str, Any]:
        return ensure_applier(path, migration_id, wait_seconds=10)

    try:
        out = ensure()
        assert hung.wait(30) is not None  # stopped
    finally:
        hung.kill()
    assert (out["action"], out["mode"]) == ("started", "subprocess")
    assert out["pid"] != hung.pid and out["pid"] == processes.applier_pid(migration_id)
    assert processes.applier_members(spec, migration_id) == 1


def test_run_as_a_deployment_it_starts_the_applier_as_a_deployment_run(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    tables = ["public.customers", "public.orders"]
    workload.init(source_db.dsn, 600)
    spec = make_spec(source_db, target_db, tables, stack,
                     snapshot={"timeout_seconds": 240, "poll_interval_seconds": 1})
    cleanup.append(spec)
    path = write_spec(spec, tmp_path / "spec.yaml")

    with served_deployments(migration_id, tmp_path / "runner.log"):
        stage = run_deployment(f"migrate/{migration_id}", timeout=400, as_subflow=False,
                               parameters={"spec_path": path, "migration_id": migration_id})
        assert stage.state is not None and stage.state.type == StateType.COMPLETED, \
            (tmp_path / "runner.log").read_text()[-3000:]
        with get_client(sync_client=True) as client:
            appliers = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"migration:{migration_id}"])))
            [run] = appliers
            deployment = client.read_deployment(run.deployment_id)  # type: ignore[arg-type]
        assert (deployment.name, run.state_type) == (migration_id, StateType.RUNNING)
        assert run.parent_task_run_id is None  # it outlives the stage: not a subflow
        assert processes.applier_pid(migration_id) is None  # no local process
        assert processes.applier_members(spec, migration_id) >= 1
        assert counts(target_db.dsn, tables) == counts(source_db.dsn, tables)
        assert any("started flow run" in m and f"cdc-applier/{migration_id}" in m
                   for m in run_logs(stage.id))
        [progress] = artifacts(artifact_key("snapshot", migration_id))
        assert progress.data == 100.0

        @flow(name="teardown-applier")
        def teardown_applier() -> dict[str, Any]:
            return stop_applier(spec, migration_id)

        stopped = teardown_applier()

        assert stopped == {"flow_runs_cancelled": [str(run.id)], "local_process_stopped": False}
        assert processes.applier_members(spec, migration_id) == 0
        wait_for(lambda: flow_run(run.id).state_type == StateType.CANCELLED, 60,
                 "applier run Cancelled")

