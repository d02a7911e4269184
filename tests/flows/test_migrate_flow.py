"""The migrate stage end to end under a real Prefect API, on the real stack: target schema and
versioned migrations, connector, applier, the followed snapshot with its artifacts and gauge;
a second run that changes nothing; a MongoDB target; an empty table the snapshot ends on; and,
run as a deployment, the applier started as a `cdc-applier` deployment run."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
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
from migwatch.errors import ConfigError, TransientError
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



@pytest.mark.parametrize("method", ["debezium", "copy"])
def test_a_table_added_to_a_running_migration_is_loaded_while_the_others_stream(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path, method: str) -> None:
    """The spec gains a table and the stage runs again with the same id: the connector and its
    publication take it, the target gets it, Debezium's incremental snapshot loads it while
    its own and the other tables' changes keep streaming — and it shows as a snapshot that
    completes — whether the first load was Debezium's snapshot or the COPY load (whose
    publication and slot migwatch made). Taking a table out stops capturing it and says so.
    Compared by counts and each row's text on both sides (shares no code with migwatch)."""
    from tests.integration.test_applier_exact import wait_equal

    with source_db.connect() as conn:
        conn.execute("CREATE TABLE a (id int PRIMARY KEY, v text)")
        conn.execute('CREATE TABLE "AddedLäter" (id int PRIMARY KEY, v text, n numeric)')
        conn.execute("INSERT INTO a SELECT g, 'a' FROM generate_series(1, 200) g")
        conn.execute('INSERT INTO "AddedLäter" SELECT g, md5(g::text), g / 7.0 '
                     "FROM generate_series(1, 5000) g")
    opts = {"snapshot": {"timeout_seconds": 300, "poll_interval_seconds": 1, "method": method}}
    first = make_spec(source_db, target_db, ["public.a"], stack, **opts)
    cleanup.append(first)
    migrate(write_spec(first, tmp_path / "one.yaml"), migration_id)

    both = make_spec(source_db, target_db, ["public.a", '"public"."AddedLäter"'], stack,
                     **opts)
    stop = threading.Event()

    def writes() -> None:  # both tables change while the new one loads
        i = 0
        with psycopg.connect(source_db.dsn, autocommit=True) as conn:
            while not stop.is_set():
                i += 1
                conn.execute("UPDATE a SET v = %s WHERE id = %s", [f"w{i}", i % 200 + 1])
                conn.execute('UPDATE "AddedLäter" SET v = %s WHERE id = %s',
                             [f"w{i}", (i * 37) % 5000 + 1])
                conn.execute('INSERT INTO "AddedLäter" VALUES (%s, %s, 1)', [10000 + i, "new"])
                conn.execute('DELETE FROM "AddedLäter" WHERE id = %s', [(i * 53) % 5000 + 1])
                time.sleep(0.02)

    writer = threading.Thread(target=writes, daemon=True)
    writer.start()
    try:
        out = migrate(write_spec(both, tmp_path / "two.yaml"), migration_id)
    finally:
        stop.set()
        writer.join(10)
    assert out["tables_added"] == ["public.AddedLäter"] and out["tables_removed"] == []
    assert out["connector"]["action"] == "updated"
    assert out["snapshot"]["done"] and "public.AddedLäter" in out["tables"]
    # the snapshot read rows — how many is not fixed: the writes delete and update rows while
    # it loads, and a row changed inside its chunk's window comes as that change instead
    # (Debezium's deduplication; 2,457 of 5,000 seen in one run). Equality below is the check.
    assert out["tables"]["public.AddedLäter"]["rows_loaded"] > 0
    wait_equal(source_db, target_db, [("public", "a"), ("public", "AddedLäter")])

    # a name Debezium's incremental snapshot cannot hold is refused before anything changes
    with source_db.connect() as conn:
        conn.execute('CREATE TABLE "with space" (id int PRIMARY KEY)')
    spaced = make_spec(source_db, target_db, ["public.a", '"public"."AddedLäter"',
                                              '"public"."with space"'], stack, **opts)
    with pytest.raises(ConfigError, match="with space"):
        migrate(write_spec(spaced, tmp_path / "three.yaml"), migration_id)

    out = migrate(write_spec(first, tmp_path / "one.yaml"), migration_id)
    assert out["tables_removed"] == ["public.AddedLäter"] and out["tables_added"] == []
    with source_db.connect() as conn:
        conn.execute('INSERT INTO "AddedLäter" VALUES (99999, %s, 1)', ["after removal"])
        conn.execute("INSERT INTO a VALUES (99999, 'still captured')")
    wait_equal(source_db, target_db, [("public", "a")])
    with psycopg.connect(target_db.dsn) as conn:  # no longer captured
        assert conn.execute('SELECT count(*) FROM "AddedLäter" WHERE id = 99999'
                            ).fetchone() == (0,)


def test_a_table_added_to_a_running_migration_to_mongodb(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE a (id int PRIMARY KEY, v text)")
        conn.execute("CREATE TABLE later (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO a SELECT g, 'a' FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO later SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
    opts = {"snapshot": {"timeout_seconds": 300, "poll_interval_seconds": 1}}
    target = mongo_endpoint(stack, mongo_db)
    first = make_spec(source_db, target, ["public.a"], stack, **opts)
    cleanup.append(first)
    migrate(write_spec(first, tmp_path / "one.yaml"), migration_id)
    both = make_spec(source_db, target, ["public.a", "public.later"], stack, **opts)
    out = migrate(write_spec(both, tmp_path / "two.yaml"), migration_id)
    assert out["tables_added"] == ["public.later"] and out["snapshot"]["done"]
    with source_db.connect() as conn:
        conn.execute("UPDATE later SET v = 'changed' WHERE id <= 10")
        conn.execute("DELETE FROM later WHERE id > 1990")
        expected = {r[0]: r[1] for r in conn.execute("SELECT id, v FROM later").fetchall()}
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    try:
        wait_for(lambda: {d["_id"]: d["v"] for d in client[mongo_db]["later"].find()}
                 == expected, 90, "the added table's documents equal the source's rows")
    finally:
        client.close()
