"""`AppliedThrough`: the one answer to "has the target applied every change of a table up to
source position L?" — never yes while a change before L has not even reached Kafka (it can sit
in Connect's producer while the all-tables position already passed L), and yes for an idle
table with nothing unapplied."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from migwatch import capture, names, positions
from migwatch.applier import Applier
from migwatch.config import MigrationSpec
from migwatch.connectors.connect import ConnectClient
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec


def current_lsn(db: PgDatabase) -> int:
    with db.connect() as conn:
        row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def running(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
            migration_id: str) -> Iterator[MigrationSpec]:
    for db in (source_db,):
        with db.connect() as conn:
            conn.execute("CREATE TABLE busy (id int PRIMARY KEY, v text)")
            conn.execute("CREATE TABLE idle (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO busy VALUES (1, 'a')")
            conn.execute("INSERT INTO idle VALUES (1, 'a')")
    spec = make_spec(source_db, target_db, ["public.busy", "public.idle"], stack)
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    capture.ensure_connector(spec, migration_id, timeout=120)
    applier = Applier(spec, migration_id, metrics_enabled=False)
    th = threading.Thread(target=applier.run, daemon=True)
    th.start()
    yield spec
    applier.stop()
    th.join(30)
    capture.teardown(spec, migration_id, delete_topics=True)


def wait_for(check: object, timeout: float = 60) -> positions.Through:
    deadline = time.monotonic() + timeout
    while True:
        got = check()  # type: ignore[operator]
        if got.done or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_never_applied_through_a_change_that_has_not_reached_kafka(
        running: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> None:
    spec = running
    with positions.AppliedThrough(spec, migration_id) as applied:
        start = current_lsn(source_db)
        assert wait_for(lambda: applied.check("public.busy", start)).done
        assert wait_for(lambda: applied.check("public.idle", start)).done  # no event after L

        with ConnectClient(spec.connect.url) as connect:
            assert connect.stop(names.connector_name(migration_id))
            try:
                time.sleep(3)  # the stop has committed its last offsets
                with source_db.connect() as conn:
                    conn.execute("INSERT INTO busy VALUES (2, 'in flight')")
                fence = current_lsn(source_db)
                # what a heartbeat racing ahead of the data looks like on the target: the
                # all-tables position past L, the table's topic with nothing unapplied
                with target_db.connect() as conn:
                    conn.execute(sql.SQL(
                        "UPDATE {} SET lsn = %s WHERE migration_id = %s AND table_name = %s"
                    ).format(sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)),
                        [fence + 1, migration_id, names.ALL_TABLES])
                through = applied.check("public.busy", fence)
                assert not through.done
                assert "Debezium has handed changes to Kafka up to" in (through.why or "")
            finally:
                connect.resume(names.connector_name(migration_id))
        got = wait_for(lambda: applied.check("public.busy", fence), timeout=90)
        assert got.done, got.why
        with psycopg.connect(target_db.dsn) as conn:
            assert conn.execute("SELECT v FROM busy WHERE id = 2").fetchone() == ("in flight",)
