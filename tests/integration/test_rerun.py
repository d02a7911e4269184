"""Running a migration id again, on the real stack: teardown clears the applier's stored
positions and offsets (PostgreSQL and MongoDB targets), so a rerun after deleted topics applies
its whole new snapshot instead of seeking past it; a fresh start onto target tables that hold
rows is refused naming them, unless reset empties them; a resume is left exactly as it is.

Every test has its own databases and migration id; connectors and appliers are removed after.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from psycopg import sql
from pymongo import MongoClient

from migwatch import capture, names, positions, processes
from migwatch.applier import Applier
from migwatch.config import MigrationSpec
from migwatch.errors import TargetNotEmpty
from migwatch.stack import Stack
from migwatch.targets.postgres.positions import ensure_tables
from tests.conftest import PgDatabase, make_spec, mongo_endpoint

WAIT = 90
FAST = {"heartbeat_interval_ms": 1000, "ready_timeout_seconds": WAIT}


@pytest.fixture
def specs(migration_id: str) -> Iterator[list[MigrationSpec]]:
    """Specs whose applier, connector, slot and topics are removed after the test."""
    made: list[MigrationSpec] = []
    yield made
    processes.stop_applier(migration_id)
    for spec in made:
        deadline = time.monotonic() + 60
        while processes.applier_members(spec, migration_id) and time.monotonic() < deadline:
            time.sleep(1)
        capture.teardown(spec, migration_id, delete_topics=True, timeout=WAIT)


def table(db: PgDatabase, name: str = "public.t") -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(
            sql.Identifier(*name.split(".")))).fetchall()


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(1)


def applying(spec: MigrationSpec, migration_id: str) -> tuple[Applier, threading.Thread]:
    applier = Applier(spec, migration_id, metrics_enabled=False)
    th = threading.Thread(target=applier.run, daemon=True)
    th.start()
    return applier, th


def stop(running: tuple[Applier, threading.Thread]) -> None:
    running[0].stop()
    running[1].join(30)
    assert not running[1].is_alive()


def stored(db: PgDatabase, migration_id: str) -> tuple[int, int]:
    """(position rows, offset rows) of the migration on a PostgreSQL target."""
    found = []
    with db.connect() as conn:
        for name in ("applied_position", "applied_offsets"):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE migration_id = %s").format(
                sql.Identifier("migwatch", name)), [migration_id]).fetchone()
            found.append(int(row[0]) if row else -1)
    return found[0], found[1]


# ---------------------------------------------------------------------------- teardown
def test_teardown_clears_positions_so_a_rerun_after_deleted_topics_applies_everything(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        specs: list[MigrationSpec]) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text);"
                     "INSERT INTO public.t SELECT g, 'first run' FROM generate_series(1, 20) g")
    spec = make_spec(source_db, target_db, ["public.t"], stack, connect=FAST)
    specs.append(spec)
    capture.prepare_target_schema(spec)
    capture.prepare_source(spec, migration_id)
    capture.ensure_connector(spec, migration_id, timeout=WAIT)
    running = applying(spec, migration_id)
    try:
        wait_until(lambda: table(target_db) == table(source_db), "first snapshot applied")
    finally:
        stop(running)
    before = stored(target_db, migration_id)
    assert before[0] > 0 and before[1] > 0
    with target_db.connect() as conn:  # another migration's rows on the same target stay
        conn.execute("INSERT INTO migwatch.applied_position (migration_id, table_name) "
                     "VALUES ('other-run', '*')")
        conn.execute("INSERT INTO migwatch.applied_offsets VALUES ('other-run', 'x', 0, 7)")

    done = capture.teardown(spec, migration_id, delete_topics=True, timeout=WAIT)

    assert done.positions == sum(before) and stored(target_db, migration_id) == (0, 0)
    assert stored(target_db, "other-run") == (1, 1)
    admin = KafkaAdminClient(bootstrap_servers=stack.address("kafka"))
    try:  # topic deletion completes asynchronously: the rerun must find them gone
        wait_until(lambda: not [t for t in admin.list_topics()
                                if t.startswith(names.topic_prefix(migration_id) + ".")],
                   "topics deleted")
    finally:
        admin.close()

    # the source moves on while nothing captures it; the rerun's snapshot must carry all of it
    with source_db.connect() as conn:
        conn.execute("UPDATE public.t SET v = 'second run';"
                     "INSERT INTO public.t VALUES (21, 'new'), (22, 'new')")
    capture.ensure_connector(spec, migration_id, timeout=WAIT)
    running = applying(spec, migration_id)
    try:
        wait_until(lambda: table(target_db) == table(source_db), "rerun snapshot applied")
    finally:
        stop(running)
    assert len(table(target_db)) == 22


def test_teardown_clears_this_migrations_mongodb_positions_only(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str) -> None:
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.t"], stack,
                     connect=FAST)
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    try:
        db = client[mongo_db]
        for mid in (migration_id, "other-run"):  # the shapes MongoWriter writes
            db[names.POSITION_COLLECTION].insert_many([
                {"_id": {"migration_id": mid, "table_name": t}, "events": 3, "snapshot_done": True}
                for t in ("public.t", names.ALL_TABLES)])
            db[names.OFFSETS_COLLECTION].insert_one(
                {"_id": {"migration_id": mid, "topic": "x", "partition": 0}, "next_offset": 9})
        assert positions.read(spec, migration_id)

        done = capture.teardown(spec, migration_id, timeout=WAIT)

        assert done.positions == 3
        assert positions.read(spec, migration_id) == {}
        assert set(positions.read(spec, "other-run")) == {"public.t", names.ALL_TABLES}
        assert db[names.OFFSETS_COLLECTION].count_documents({}) == 1
        assert capture.teardown(spec, migration_id, timeout=WAIT).positions == 0
    finally:
        client.close()


def test_teardown_after_the_target_database_is_gone_still_succeeds(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    gone = PgDatabase("target", target_db.name + "_gone", target_db.port, "")
    spec = make_spec(source_db, gone, ["public.t"], stack, connect=FAST)
    done = capture.teardown(spec, migration_id, timeout=WAIT)  # nothing left to clear
    assert (done.connector, done.slot, done.positions) == (False, False, 0)


# ---------------------------------------------------------------------------- fresh start
def test_a_fresh_start_onto_tables_holding_rows_is_refused_unless_reset(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.a (id int PRIMARY KEY);"
                     "CREATE TABLE public.b (id int PRIMARY KEY, a_id int);"
                     "CREATE TABLE public.c (id int PRIMARY KEY)")
    spec = make_spec(source_db, target_db, ["public.a", "public.b", "public.c"], stack,
                     connect=FAST)
    capture.prepare_target_schema(spec)
    with target_db.connect() as conn:
        # b references a: emptying must truncate them together
        conn.execute("ALTER TABLE public.b ADD FOREIGN KEY (a_id) REFERENCES public.a;"
                     "INSERT INTO public.a VALUES (1); INSERT INTO public.b VALUES (1, 1)")
        ensure_tables(conn)  # a stale position of an earlier run with this id
        conn.execute("INSERT INTO migwatch.applied_position (migration_id, table_name, "
                     "snapshot_done) VALUES (%s, 'public.a', true)", [migration_id])

    with pytest.raises(TargetNotEmpty) as err:
        capture.ensure_fresh_target(spec, migration_id)
    assert err.value.tables == ["public.a", "public.b"]
    assert "public.a, public.b" in str(err.value) and "--reset-target" in str(err.value)
    assert (table(target_db, "public.a"), table(target_db, "public.b")) == ([(1,)], [(1, 1)])
    assert positions.read(spec, migration_id)  # nothing touched

    done = capture.ensure_fresh_target(spec, migration_id, reset=True)

    assert (done.fresh, done.non_empty, done.emptied, done.positions) == \
        (True, ("public.a", "public.b"), ("public.a", "public.b", "public.c"), 1)
    assert table(target_db, "public.a") == table(target_db, "public.b") == []
    assert positions.read(spec, migration_id) == {}
    again = capture.ensure_fresh_target(spec, migration_id)  # empty now: nothing to refuse
    assert (again.fresh, again.non_empty, again.emptied) == (True, (), ())


def test_a_resume_is_left_alone_even_when_reset_is_asked_for(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        specs: list[MigrationSpec]) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text);"
                     "INSERT INTO public.t VALUES (1, 'x')")
    spec = make_spec(source_db, target_db, ["public.t"], stack, connect=FAST)
    specs.append(spec)
    capture.prepare_target_schema(spec)
    capture.prepare_source(spec, migration_id)
    capture.ensure_connector(spec, migration_id, timeout=WAIT)
    with target_db.connect() as conn:
        conn.execute("INSERT INTO public.t VALUES (1, 'x'), (2, 'only on the target')")

    done = capture.ensure_fresh_target(spec, migration_id, reset=True)

    assert (done.fresh, done.reset_ignored, done.emptied) == (False, True, ())
    assert table(target_db) == [(1, "x"), (2, "only on the target")]


def test_a_fresh_start_onto_a_mongodb_collection_holding_documents(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY); CREATE TABLE public.u (id int "
                     "PRIMARY KEY)")
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.t", "public.u"],
                     stack, connect=FAST)
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    try:
        client[mongo_db]["t"].insert_one({"_id": 1})
        with pytest.raises(TargetNotEmpty, match="public.t"):
            capture.ensure_fresh_target(spec, migration_id)
        assert client[mongo_db]["t"].count_documents({}) == 1
        done = capture.ensure_fresh_target(spec, migration_id, reset=True)
        assert (done.non_empty, done.emptied) == (("public.t",), ("public.t", "public.u"))
        assert client[mongo_db]["t"].count_documents({}) == 0
    finally:
        client.close()


# ---------------------------------------------------------------------------- the migrate stage
def test_the_migrate_stage_reruns_after_teardown_only_with_reset_target(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        specs: list[MigrationSpec], prefect_harness: None, tmp_path: Path) -> None:
    from flows.migrate import migrate
    from tests.flows.test_cdc_apply_flow import write_spec

    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text);"
                     "INSERT INTO public.t SELECT g, 'first' FROM generate_series(1, 30) g")
    spec = make_spec(source_db, target_db, ["public.t"], stack, connect=FAST,
                     snapshot={"timeout_seconds": 120, "poll_interval_seconds": 0.5})
    specs.append(spec)
    path = write_spec(spec, tmp_path / "spec.yaml")
    first = migrate(path, migration_id)
    assert first["target"]["fresh"] and first["connector"]["action"] == "created"
    wait_until(lambda: table(target_db) == table(source_db), "first run applied")

    # a resume onto its own non-empty target is unchanged
    resumed = migrate(path, migration_id)
    assert (resumed["target"]["fresh"], resumed["connector"]["action"]) == (False, "unchanged")

    processes.stop_applier(migration_id)
    wait_until(lambda: processes.applier_members(spec, migration_id) == 0, "applier stopped")
    capture.teardown(spec, migration_id, delete_topics=True, timeout=WAIT)
    with source_db.connect() as conn:
        conn.execute("UPDATE public.t SET v = 'second' WHERE id <= 10;"
                     "DELETE FROM public.t WHERE id > 25; INSERT INTO public.t VALUES (99, 'new')")

    refused = migrate(path, migration_id, return_state=True)
    assert refused.is_failed()
    with pytest.raises(TargetNotEmpty, match="public.t"):
        refused.result()
    assert capture.connector_status(spec, migration_id).state == "ABSENT"  # nothing created

    again = migrate(path, migration_id, reset_target=True)
    assert list(again["target"]["emptied"]) == ["public.t"]
    wait_until(lambda: table(target_db) == table(source_db), "rerun applied")
    assert len(table(target_db)) == 26
