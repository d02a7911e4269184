"""The slot the COPY load creates: with an exported snapshot that lives while its holder is
open; its creation waiting on a transaction open on the source is cancelled after the spec's
timeout, naming that transaction's process."""

from __future__ import annotations

import psycopg
import pytest

from migwatch import capture, names
from migwatch.errors import TransientError
from migwatch.load.estimate import KEEP_MARGIN, LoadEstimate, estimate, hold
from migwatch.load.slot import APPLICATION, ExportedSlot, ensure_publication
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec


def drop_slot(stack: Stack, slot: str) -> None:
    with psycopg.connect(stack.pg_dsn("source", "postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name = %s", [slot])


def test_the_exported_snapshot_shows_the_state_at_the_slot_and_lives_with_its_holder(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
        conn.execute("INSERT INTO public.t SELECT generate_series(1, 10)")
    spec = make_spec(source_db, target_db, ["public.t"], stack)
    capture.prepare_source(spec, migration_id)  # the heartbeat and signal tables it publishes
    assert ensure_publication(spec, migration_id) is True
    assert ensure_publication(spec, migration_id) is False  # made once
    holder = ExportedSlot(spec, migration_id).open()
    try:
        with source_db.connect() as conn:
            conn.execute("INSERT INTO public.t VALUES (11)")  # after the slot: not in it
        for i in range(12, 17):  # five more transactions the held horizon falls behind by
            with source_db.connect() as conn:
                conn.execute("INSERT INTO public.t VALUES (%s)", [i])
        with psycopg.connect(source_db.dsn, autocommit=True) as conn:
            held = hold(conn, migration_id, APPLICATION)
        assert held.xmin_age >= 6 and held.wal_bytes > 0, held
        assert "xmin horizon" in held.describe()
        with psycopg.connect(source_db.dsn) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute(f"SET TRANSACTION SNAPSHOT '{holder.snapshot}'")
            assert conn.execute("SELECT count(*) FROM public.t WHERE id <= 11"
                                ).fetchone()[0] == 10  # type: ignore[index]
    finally:
        holder.close()
    with psycopg.connect(source_db.dsn) as conn:  # the holder gone, its snapshot is too
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(f"SET TRANSACTION SNAPSHOT '{holder.snapshot}'")
    drop_slot(stack, names.slot_name(migration_id))


def test_a_slot_waiting_on_an_open_transaction_is_cancelled_naming_it(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    spec = make_spec(source_db, target_db, ["public.t"], stack,
                     snapshot={"slot_timeout_seconds": 2})
    capture.prepare_source(spec, migration_id)
    ensure_publication(spec, migration_id)
    blocker = psycopg.connect(source_db.dsn + " application_name=long-report")
    try:
        blocker.execute("INSERT INTO public.t VALUES (1)")  # holds an xid, open
        with pytest.raises(TransientError, match="snapshot.slot_timeout_seconds") as err:
            ExportedSlot(spec, migration_id).open()
        assert f"pid {blocker.info.backend_pid}" in str(err.value)
        assert "long-report" in str(err.value)
    finally:
        blocker.close()
    with source_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                            [names.slot_name(migration_id)]).fetchone()[0] == 0  # type: ignore[index]


def test_the_load_estimate_measures_the_source_and_warns_near_the_slot_wal_limit(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO public.t SELECT g, repeat('x', 200) FROM generate_series(1, "
                      "20000) g")
    spec = make_spec(source_db, target_db, ["public.t"], stack,
                     snapshot={"estimate_mib_per_second": 2, "copy_workers": 1})
    # the table's size only grows meanwhile (autovacuum adds its free-space and visibility maps)
    query = ("SELECT pg_table_size('public.t'), "
             "pg_size_bytes(current_setting('max_slot_wal_keep_size'))")
    with source_db.connect() as conn:
        before = conn.execute(query).fetchone()[0]  # type: ignore[index]
    guess = estimate(spec, sample_seconds=0.2)
    with source_db.connect() as conn:
        size, keep = conn.execute(query).fetchone()  # type: ignore[misc]
    assert before <= guess.table_bytes <= size
    assert guess.load_seconds == guess.table_bytes / (2 * 1048576)
    assert guess.wal_bytes_per_second >= 0 and guess.keep_bytes == keep  # the stack's 4 GB
    assert "max_slot_wal_keep_size 4,096.0 MiB" in guess.describe() and guess.warnings() == []
    # the verdict itself, against a limit the WAL held would pass
    near = LoadEstimate(size, 100, 1048576, keep_bytes=int(100 * 1048576 / KEEP_MARGIN) - 1)
    assert "max_slot_wal_keep_size" in near.warnings()[0]
    assert LoadEstimate(size, 100, 1048576, keep_bytes=10**12).warnings() == []


def test_a_load_cut_after_a_tables_last_range_records_it_without_copying_again(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    """Killed between a split table's last range and its own record: the resumed load finds
    every range of the stored plan loaded, records the table loaded (its rows the ranges'
    sum) and copies nothing of it again; the table not begun is copied."""
    from migwatch.load import run
    from migwatch.load.ranges import KeyRange
    from migwatch.targets import engine_for

    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE public.u (id int PRIMARY KEY)")
        conn.execute("INSERT INTO public.t SELECT generate_series(1, 10)")
        conn.execute("INSERT INTO public.u SELECT generate_series(1, 5)")
    spec = make_spec(source_db, target_db, ["public.t", "public.u"], stack,
                     snapshot={"method": "copy"})
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    ensure_publication(spec, migration_id)
    ExportedSlot(spec, migration_id).open().close()  # the cut-off load's slot
    engine = engine_for(spec)
    plan = [KeyRange("public.t", 0, 2, "id", None, "6"),
            KeyRange("public.t", 1, 2, "id", "6", None)]
    engine.save_load_plan(migration_id, "public.t", plan)
    with psycopg.connect(target_db.dsn, autocommit=True) as conn:  # as the cut-off load left it
        conn.execute("INSERT INTO public.t SELECT generate_series(1, 10)")
        conn.execute("UPDATE migwatch.load_ranges SET done = true, rows = 5")
    try:
        result = run.load(spec, migration_id)
        assert result.resumed
        by_table = {t.table: t for t in result.tables}
        assert by_table["public.t"].earlier and by_table["public.u"].rows == 5
        with psycopg.connect(target_db.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM public.t").fetchone() == (10,)
            assert conn.execute(
                "SELECT snapshot_rows, snapshot_done FROM migwatch.applied_position WHERE "
                "migration_id = %s AND table_name = 'public.t'", [migration_id]
            ).fetchone() == (10, True)
    finally:
        drop_slot(stack, names.slot_name(migration_id))
        capture.teardown(spec, migration_id, timeout=60)
