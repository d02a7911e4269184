"""The slot the COPY load creates: with an exported snapshot that lives while its holder is
open; its creation waiting on a transaction open on the source is cancelled after the spec's
timeout, naming that transaction's process."""

from __future__ import annotations

import psycopg
import pytest

from migwatch import capture, names
from migwatch.errors import TransientError
from migwatch.load.slot import ExportedSlot, ensure_publication
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
        with psycopg.connect(source_db.dsn) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute(f"SET TRANSACTION SNAPSHOT '{holder.snapshot}'")
            assert conn.execute("SELECT count(*) FROM public.t").fetchone()[0] == 10  # type: ignore[index]
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
