"""Validation of a moving source: differences are pending with the source LSN at which they were
seen, and `revalidate` re-checks them once the applier's applied position has passed that LSN.

No applier runs here: each test plays its part — it fixes (or not) the target rows and then
records the applied position in the target's position table, as the applier does after a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg import sql
from pymongo import MongoClient

from migwatch import names, workload
from migwatch.config import MigrationSpec
from migwatch.metrics import REGISTRY
from migwatch.stack import Stack
from migwatch.validation import (
    DIFFERENT,
    EQUAL,
    PENDING,
    ValidationResult,
    applied_lsn,
    revalidate,
    validate,
)
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.integration.validation_helpers import copy_tables, fill_mongo

TABLES = ["public.orders", "public.order_items"]


def run_sql(db: PgDatabase, statement: str, params: Any = None) -> None:
    with db.connect() as conn:
        conn.execute(statement, params)


def record_applied(target_db: PgDatabase, migration_id: str, lsn: int) -> None:
    """What the applier writes after a batch: the newest source LSN it applied."""
    with target_db.connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
            sql.Identifier(names.POSITION_SCHEMA)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (migration_id text NOT NULL, table_name text NOT NULL,"
            " source_ts_ms bigint, lsn bigint, events bigint NOT NULL DEFAULT 0,"
            " snapshot_rows bigint NOT NULL DEFAULT 0,"
            " snapshot_done boolean NOT NULL DEFAULT false,"
            " dlq_events bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (migration_id, table_name))").format(
            sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)))
        conn.execute(sql.SQL(
            "INSERT INTO {} (migration_id, table_name, lsn) VALUES (%s, %s, %s) "
            "ON CONFLICT (migration_id, table_name) DO UPDATE SET lsn = EXCLUDED.lsn").format(
            sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)),
            [migration_id, names.ALL_TABLES, lsn])


def source_lsn(source_db: PgDatabase) -> int:
    with source_db.connect() as conn:
        row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
        assert row is not None
        return int(row[0])


def mismatches(migration_id: str, state: str) -> float:
    return REGISTRY.get_sample_value("migwatch_validation_mismatched_rows", {
        "migration_id": migration_id, "table_name": "public.orders", "state": state}) or 0.0


@pytest.fixture
def shop(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> Iterator[None]:
    workload.init(source_db.dsn, 3000)
    copy_tables(source_db.dsn, target_db.dsn, TABLES)
    yield


@pytest.fixture
def spec(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> MigrationSpec:
    return make_spec(source_db, target_db, TABLES, stack, validation={"chunk_rows": 300})


def test_a_pending_mismatch_that_cdc_fixes_is_resolved(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'stale' WHERE id IN (15, 850)")
    run_sql(target_db, "DELETE FROM public.order_items WHERE order_id = 20 AND line_no = 1")
    result = validate(spec, migration_id)
    orders = result.table("orders")
    assert orders.status == PENDING and orders.changed == 2
    assert len(orders.ranges) == 2  # far apart: two leaf ranges
    # each table reads the LSN when its comparison ends (other writers move it meanwhile)
    lsns = [r.lsn_num for t in result.tables for r in t.ranges]
    assert len(lsns) == 3
    assert mismatches(migration_id, "pending") == 2

    # no applier position yet: nothing can be re-checked, and the result says why
    revalidate(spec, migration_id, result)
    assert orders.status == PENDING and all(r.attempts == 1 for r in orders.ranges)
    assert any("applier position unknown" in n for n in result.notes)

    # the applier has not reached the LSN yet: still not re-checked
    record_applied(target_db, migration_id, min(lsns) - 1)
    assert applied_lsn(spec, migration_id) == min(lsns) - 1
    revalidate(spec, migration_id, result)
    assert [r.state for t in result.tables for r in t.ranges] == ["pending"] * 3

    # CDC delivers the source's rows, then records its position past the LSN
    run_sql(target_db, "UPDATE public.orders SET status = s.status FROM (VALUES (15, 'done'), "
                       "(850, 'shipped')) s(id, status) WHERE orders.id = s.id")
    run_sql(target_db, "INSERT INTO public.order_items VALUES (20, 1, 'SKU-0000021', 1, 20.99)")
    record_applied(target_db, migration_id, max(lsns) + 1)
    revalidate(spec, migration_id, result)

    assert [r.state for r in orders.ranges] == ["resolved", "resolved"]
    assert orders.status == EQUAL and orders.mismatched_rows == 0 and not orders.sample
    assert result.table("order_items").status == EQUAL
    assert result.status == EQUAL and result.exit_code == 0
    assert mismatches(migration_id, "pending") == 0
    assert mismatches(migration_id, "resolved") == 2
    # the result, saved and loaded, keeps the ranges and their states
    again = ValidationResult.from_dict(result.to_dict())
    assert [r.state for r in again.table("orders").ranges] == ["resolved", "resolved"]


def test_a_difference_that_stays_is_mismatched(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET total = 0 WHERE id = 30")
    result = validate(spec, migration_id, tables=["public.orders"])
    [rng] = result.table("orders").ranges
    record_applied(target_db, migration_id, rng.lsn_num)
    revalidate(spec, migration_id, result)

    orders = result.table("orders")
    assert rng.state == "mismatched" and orders.status == DIFFERENT
    assert [(d.key, d.columns) for d in orders.sample] == [({"id": 30}, ["total"])]
    assert result.exit_code == 1


def test_a_row_still_changing_is_rechecked_a_bounded_number_of_times(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET total = 0 WHERE id = 31")
    result = validate(spec, migration_id, tables=["public.orders"])
    [rng] = result.table("orders").ranges
    for attempt in (1, 2):
        # the source row changes again before the target catches up
        run_sql(source_db, "UPDATE public.orders SET total = total + 1 WHERE id = 31")
        record_applied(target_db, migration_id, rng.lsn_num)
        seen_before = rng.lsn_num
        revalidate(spec, migration_id, result, max_attempts=3)
        assert rng.state == "pending" and rng.attempts == attempt + 1
        assert rng.lsn_num > seen_before  # waits for the applier to pass the new position
    run_sql(source_db, "UPDATE public.orders SET total = total + 1 WHERE id = 31")
    record_applied(target_db, migration_id, rng.lsn_num)
    revalidate(spec, migration_id, result, max_attempts=3)
    assert rng.state == "mismatched" and rng.attempts == 3
    assert result.table("orders").status == DIFFERENT


def test_revalidate_waits_for_the_applier(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET note = 'x' WHERE id = 44")
    result = validate(spec, migration_id, tables=["public.orders"])
    [rng] = result.table("orders").ranges

    def applier() -> None:
        run_sql(target_db, "UPDATE public.orders SET note = 'note 44' WHERE id = 44")
        record_applied(target_db, migration_id, rng.lsn_num + 100)

    timer = threading.Timer(1.0, applier)
    timer.start()
    try:
        revalidate(spec, migration_id, result, timeout_seconds=60, poll_seconds=0.2)
    finally:
        timer.join()
    assert rng.state == "resolved" and result.status == EQUAL


# ----------------------------------------------------------------------------- MongoDB target
def test_mongodb_target_pending_ranges(stack: Stack, source_db: PgDatabase, mongo_db: str,
                                       migration_id: str) -> None:
    workload.init(source_db.dsn, 3000)
    fill_mongo(source_db.dsn, stack.address("ferretdb"), mongo_db, ["public.orders"])
    client: Any = MongoClient(stack.address("ferretdb"))
    db = client[mongo_db]
    try:
        db.orders.update_one({"_id": 5}, {"$set": {"status": "stale"}})
        db.orders.update_one({"_id": 800}, {"$set": {"status": "stale"}})
        spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.orders"], stack,
                         validation={"chunk_rows": 200})
        result = validate(spec, migration_id)
        orders = result.table("orders")
        assert orders.status == PENDING and len(orders.ranges) == 2

        fix: Callable[[], None] = lambda: db.orders.update_one(  # noqa: E731
            {"_id": 800}, {"$set": {"status": "new"}})
        fix()  # the applier fixes one of the two rows, then records its position
        db[names.POSITION_COLLECTION].insert_one({
            "_id": {"migration_id": migration_id, "table_name": names.ALL_TABLES},
            "lsn": max(r.lsn_num for r in orders.ranges)})
        revalidate(spec, migration_id, result)

        states = {r.keys[0]["key"]["id"] if r.keys else None: r.state for r in orders.ranges}
        assert states == {5: "mismatched", 800: "resolved"}
        assert [d.key for d in orders.sample] == [{"id": 5}]
        assert orders.status == DIFFERENT
    finally:
        client.close()
