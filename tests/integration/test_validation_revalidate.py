"""Revalidation of a moving source: differences are pending with the source LSN at which they were
seen — by the differing rows' keys — and `revalidate` re-checks them while the source keeps
moving: source rows, the applier past that position, target rows, source rows again.

Two kinds of tests:
  - the applier played by the test: it writes the target rows and the applier's position rows
    itself (`record_applied`), for the edges — no position yet, a position behind, waiting for
    it, ranges instead of keys, a table without primary key;
  - a real CDC pipeline (Debezium connector, the applier in a thread) while a writer keeps
    writing to the source: rows CDC delivers late are resolved, a row edited by hand on the
    target is mismatched, a row written continuously stays pending — on a PostgreSQL and on a
    MongoDB target, with composite keys.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg import sql
from pymongo import MongoClient

from migwatch import capture, names, processes, workload
from migwatch.applier import Applier
from migwatch.config import MigrationSpec, mongodb_uri
from migwatch.metrics import REGISTRY
from migwatch.stack import Stack
from migwatch.targets.postgres.positions import ensure_tables
from migwatch.validation import (
    DIFFERENT,
    EQUAL,
    PENDING,
    CompareOptions,
    TableResult,
    ValidationResult,
    applied_lsn,
    revalidate,
    validate,
    validate_table,
)
from migwatch.validation.model import RANGE_MISMATCHED, RANGE_PENDING, RANGE_RESOLVED
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.integration.validation_helpers import copy_tables

TABLES = ["public.orders", "public.order_items"]
SHOP = list(workload.SHOP_TABLES)
#: a position no source in these tests reaches: "the applier has applied everything"
CAUGHT_UP = 2 ** 62


def run_sql(db: PgDatabase, statement: str, params: Any = None) -> None:
    with db.connect() as conn:
        conn.execute(statement, params)


def record_applied(target_db: PgDatabase, migration_id: str, lsn: int,
                   tables: tuple[str, ...] = (names.ALL_TABLES,)) -> None:
    """What the applier writes after a batch: the newest source LSN it applied, per table and
    for all tables ('*')."""
    with target_db.connect() as conn:
        ensure_tables(conn)
        for table in tables:
            conn.execute(sql.SQL(
                "INSERT INTO {} (migration_id, table_name, lsn) VALUES (%s, %s, %s) "
                "ON CONFLICT (migration_id, table_name) DO UPDATE SET lsn = EXCLUDED.lsn").format(
                sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)),
                [migration_id, table, lsn])


def caught_up(target_db: PgDatabase, migration_id: str, tables: list[str]) -> None:
    """The test has delivered every change itself: the applier's rows say it is past all."""
    record_applied(target_db, migration_id, CAUGHT_UP, (names.ALL_TABLES, *tables))


def source_lsn(source_db: PgDatabase) -> int:
    with source_db.connect() as conn:
        row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
        assert row is not None
        return int(row[0])


def mismatches(migration_id: str, state: str, table: str = "public.orders") -> float:
    return REGISTRY.get_sample_value("migwatch_validation_mismatched_rows", {
        "migration_id": migration_id, "table_name": table, "state": state}) or 0.0


def state_of(table: TableResult, key: dict[str, Any]) -> str:
    """The state of the check holding `key` (each key is in exactly one check)."""
    values = list(key.values())
    found = [c.state for c in table.ranges if values in (c.row_keys or [])]
    assert len(found) == 1, (key, [(c.state, c.row_keys) for c in table.ranges])
    return found[0]


def keys_in(table: TableResult, state: str) -> list[list[Any]]:
    return sorted(k for c in table.ranges if c.state == state for k in c.row_keys or [])


@pytest.fixture
def shop(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> Iterator[None]:
    workload.init(source_db.dsn, 3000)
    copy_tables(source_db.dsn, target_db.dsn, TABLES)
    yield


@pytest.fixture
def spec(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> MigrationSpec:
    return make_spec(source_db, target_db, TABLES, stack, validation={"chunk_rows": 300})


# ----------------------------------------------------------------------------- the test applies
def test_nothing_is_rechecked_until_the_applier_passes_what_the_source_showed(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'stale' WHERE id IN (15, 850)")
    run_sql(target_db, "DELETE FROM public.order_items WHERE order_id = 20 AND line_no = 1")
    before = source_lsn(source_db)
    result = validate(spec, migration_id)
    orders, items = result.table("orders"), result.table("order_items")
    assert orders.status == PENDING and orders.changed == 2
    assert keys_in(orders, RANGE_PENDING) == [[15], [850]]  # by key, each with its LSN
    assert keys_in(items, RANGE_PENDING) == [[20, 1]] and items.missing == 1
    assert all(c.lsn_num >= before for t in result.tables for c in t.ranges)
    assert mismatches(migration_id, "pending") == 2

    # no applier position yet: nothing can be re-checked, and the result says why
    revalidate(spec, migration_id, result)
    assert orders.status == PENDING and all(c.attempts == 1 for c in orders.ranges)
    assert any("applier position unknown" in n for n in result.notes)
    assert not orders.counts_lsn  # counts not re-taken either: the target could not follow

    # the applier is behind what the source shows now: still not re-checked, and said why
    record_applied(target_db, migration_id, before - 1)
    assert applied_lsn(spec, migration_id) == before - 1
    revalidate(spec, migration_id, result, apply_wait_seconds=1)
    assert [c.state for t in result.tables for c in t.ranges] == ["pending"] * 3
    assert all("not yet past" in c.note for t in result.tables for c in t.ranges)
    assert any("public.orders: not re-checked" in n for n in result.notes)


def test_rows_the_applier_delivers_are_resolved_and_counts_are_retaken(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'stale' WHERE id IN (15, 850)")
    run_sql(target_db, "DELETE FROM public.order_items WHERE order_id = 20 AND line_no = 1")
    result = validate(spec, migration_id)
    orders = result.table("orders")
    rows = orders.source_rows

    # CDC delivers the source's rows, and the source has moved on meanwhile (applied too)
    run_sql(target_db, "UPDATE public.orders SET status = s.status FROM (VALUES (15, 'done'), "
                       "(850, 'shipped')) s(id, status) WHERE orders.id = s.id")
    run_sql(target_db, "INSERT INTO public.order_items VALUES (20, 1, 'SKU-0000021', 1, 20.99)")
    for db in (source_db, target_db):
        run_sql(db, "INSERT INTO public.orders SELECT id + 100000, customer_id, status, total, "
                    "placed_at, shipped_at, note FROM public.orders WHERE id <= 3")
    caught_up(target_db, migration_id, TABLES)
    revalidate(spec, migration_id, result)

    assert [c.state for c in orders.ranges] == ["resolved", "resolved"]
    assert orders.status == EQUAL and orders.mismatched_rows == 0 and not orders.sample
    assert result.table("order_items").status == EQUAL
    assert result.status == EQUAL and result.exit_code == 0
    assert mismatches(migration_id, "pending") == 0
    assert mismatches(migration_id, "resolved") == 2
    # the counts are those of now, with the source position they were taken at
    assert (orders.source_rows, orders.target_rows) == (rows + 3, rows + 3)
    assert "/" in orders.counts_lsn and orders.counted_at
    assert any("counts_lsn" in n for n in result.notes)
    # the result, saved and loaded, keeps the checks, their keys and states
    again = ValidationResult.from_dict(result.to_dict())
    assert [c.state for c in again.table("orders").ranges] == ["resolved", "resolved"]
    assert keys_in(again.table("orders"), RANGE_RESOLVED) == [[15], [850]]


def test_a_difference_that_stays_is_mismatched_a_row_only_on_the_target_too(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET total = 0 WHERE id IN (30, 31)")
    run_sql(target_db, "INSERT INTO public.orders SELECT 987654, customer_id, status, total, "
                       "placed_at, shipped_at, note FROM public.orders WHERE id = 1")
    result = validate(spec, migration_id, tables=["public.orders"])
    # the source moves 31 on and the applier delivers it: 31 is fixed, 30 and 987654 are not
    run_sql(source_db, "UPDATE public.orders SET total = 1 WHERE id = 31")
    run_sql(target_db, "UPDATE public.orders SET total = 1 WHERE id = 31")
    caught_up(target_db, migration_id, TABLES)
    revalidate(spec, migration_id, result)

    orders = result.table("orders")
    assert state_of(orders, {"id": 30}) == RANGE_MISMATCHED
    assert state_of(orders, {"id": 987654}) == RANGE_MISMATCHED
    assert state_of(orders, {"id": 31}) == RANGE_RESOLVED
    assert orders.status == DIFFERENT and (orders.changed, orders.extra) == (1, 1)
    assert sorted((str(d.key["id"]), d.kind, tuple(d.columns)) for d in orders.sample) == [
        ("30", "changed", ("total",)), ("987654", "extra", ())]
    mismatched = [c for c in orders.ranges if c.state == RANGE_MISMATCHED]
    assert all("source row did not change" in c.note for c in mismatched)
    assert result.exit_code == 1


def test_revalidate_waits_for_the_applier(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    run_sql(target_db, "UPDATE public.orders SET note = 'x' WHERE id = 44")
    result = validate(spec, migration_id, tables=["public.orders"])
    record_applied(target_db, migration_id, source_lsn(source_db) - 1)  # behind

    def applier() -> None:
        run_sql(target_db, "UPDATE public.orders SET note = 'note 44' WHERE id = 44")
        caught_up(target_db, migration_id, TABLES)

    timer = threading.Timer(1.5, applier)
    timer.start()
    try:
        revalidate(spec, migration_id, result, timeout_seconds=60, apply_wait_seconds=0)
    finally:
        timer.join()
    [check] = result.table("orders").ranges
    assert check.state == "resolved" and result.status == EQUAL


def test_ranges_when_more_rows_differ_than_the_key_budget(
        spec: MigrationSpec, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: None) -> None:
    """Past `pending_keys` differing rows a table records ranges; a range whose source rows do
    not move is resolved or mismatched as a whole."""
    run_sql(target_db, "UPDATE public.orders SET total = total + 1 WHERE id IN (5, 6, 7, 700)")
    [t] = [t for t in spec.tables if t.source == "public.orders"]
    options = CompareOptions(chunk_rows=300, pending_keys=2, moving_source=True)
    orders = validate_table(spec, t, options, migration_id)
    assert [c.row_keys is None for c in orders.ranges] == [True, False]  # 3 keys, then 1
    assert orders.changed == 4
    run_sql(target_db, "UPDATE public.orders SET total = total - 1 WHERE id IN (5, 6, 7)")
    result = ValidationResult(migration_id, "s", "t", "now", tables=[orders])
    caught_up(target_db, migration_id, TABLES)
    revalidate(spec, migration_id, result)
    assert [c.state for c in orders.ranges] == ["resolved", "mismatched"]
    assert [d.key for d in orders.sample] == [{"id": 700}] and orders.status == DIFFERENT

    # a range still different: mismatched as a range, its rows located for the sample
    run_sql(target_db, "UPDATE public.orders SET total = 0 WHERE id IN (5, 6, 7)")
    again = validate_table(spec, t, options, migration_id)
    caught_up(target_db, migration_id, TABLES)
    revalidate(spec, migration_id, ValidationResult(migration_id, "s", "t", "now",
                                                    tables=[again]))
    ranged = [c for c in again.ranges if c.row_keys is None]
    assert [c.state for c in ranged] == ["mismatched"] and ranged[0].changed == 3
    assert "range did not change" in ranged[0].note


def test_a_table_without_primary_key_is_rechecked_whole(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    for db in (source_db, target_db):
        run_sql(db, "CREATE TABLE public.log (at int, what text)")
        run_sql(db, "INSERT INTO public.log SELECT g, 'e' || g FROM generate_series(1, 50) g")
    run_sql(target_db, "DELETE FROM public.log WHERE at = 7")
    spec = make_spec(source_db, target_db, ["public.log"], stack)
    result = validate(spec, migration_id)
    log = result.table("log")
    [check] = log.ranges
    assert check.row_keys is None and check.state == RANGE_PENDING
    caught_up(target_db, migration_id, ["public.log"])
    revalidate(spec, migration_id, result)
    assert [c.state for c in log.ranges] == [RANGE_MISMATCHED] and log.missing == 1
    assert log.status == DIFFERENT and (log.source_rows, log.target_rows) == (50, 49)


# ----------------------------------------------------------------------------- real CDC
class Pipeline:
    """The connector and an applier in a thread, which a test stops and starts again (CDC that
    falls behind), and a writer that keeps writing to the source."""

    def __init__(self, spec: MigrationSpec, migration_id: str) -> None:
        self.spec = spec
        self.migration_id = migration_id
        self.applier: Applier | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.applier = Applier(self.spec, self.migration_id)
        self.thread = threading.Thread(target=self.applier.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        assert self.applier is not None and self.thread is not None
        self.applier.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()

    def wait_snapshot(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._snapshot_done():
                return
            time.sleep(0.5)
        raise AssertionError("the applier did not finish the snapshot")

    def _snapshot_done(self) -> bool:
        where = {"migration_id": self.migration_id, "table_name": names.ALL_TABLES}
        if self.spec.target.kind == "mongodb":
            client: Any = MongoClient(mongodb_uri(self.spec.target, "target"))
            try:
                doc = client[self.spec.target.database][names.POSITION_COLLECTION].find_one(
                    {"_id": where})
            finally:
                client.close()
            return bool(doc and doc.get("snapshot_done"))
        from migwatch.connectors import postgres as pg

        with pg.connect_endpoint(self.spec.target, "target", autocommit=True) as conn:
            if not pg.table_exists(conn, names.POSITION_SCHEMA, names.POSITION_TABLE):
                return False
            row = conn.execute(sql.SQL(
                "SELECT snapshot_done FROM {} WHERE migration_id = %(migration_id)s "
                "AND table_name = %(table_name)s").format(
                sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)), where).fetchone()
        return bool(row and row[0])


@pytest.fixture
def cdc(stack: Stack, source_db: PgDatabase,
        migration_id: str) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def start(target: PgDatabase | dict[str, Any], size: int = 2000) -> Pipeline:
        workload.init(source_db.dsn, size)
        spec = make_spec(source_db, target, SHOP, stack, connect={"heartbeat_interval_ms": 500})
        capture.prepare_source(spec, migration_id)
        capture.prepare_target_schema(spec)
        capture.ensure_connector(spec, migration_id, timeout=120)
        p = Pipeline(spec, migration_id)
        made.append(p)
        p.start()
        p.wait_snapshot()
        return p

    yield start
    for p in made:
        if p.thread is not None and p.thread.is_alive():
            p.stop()
        processes.stop_applier(migration_id)
        capture.teardown(p.spec, migration_id, delete_topics=True)


class Writer:
    """The shop workload writing to the source (inserts, updates, deletes, a primary-key
    change — never the rows the tests change themselves) until stopped; counts its writes."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.done = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seed = 0
        while not self.stopping.is_set():
            seed += 1
            self.done += workload.run(self.dsn, rate=40, duration=1.0, seed=seed).total

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)


def test_cdc_resolves_late_rows_while_the_source_keeps_writing_and_a_hand_edit_is_mismatched(
        cdc: Callable[..., Pipeline], source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> None:
    pipe = cdc(target_db)
    pipe.stop()  # CDC falls behind: the next source changes are not on the target yet
    run_sql(source_db, "UPDATE public.orders SET note = 'late' WHERE id = 5")
    run_sql(source_db, "UPDATE public.order_items SET qty = qty + 1 "
                       "WHERE order_id = 500 AND line_no = 1")
    run_sql(target_db, "UPDATE public.orders SET total = 0 WHERE id = 12")  # by hand: wrong
    with Writer(source_db.dsn) as writer:
        time.sleep(1)
        result = validate(pipe.spec, migration_id)
        orders, items = result.table("orders"), result.table("order_items")
        assert {5, 12} <= {k[0] for k in keys_in(orders, RANGE_PENDING)}
        assert [500, 1] in keys_in(items, RANGE_PENDING)
        assert all(c.row_keys is not None for t in result.tables for c in t.ranges)

        # the all-tables position alone proves nothing while the table's topic still holds
        # changes the applier has not applied (its own position is what lags)
        real = applied_lsn(pipe.spec, migration_id)
        assert real is not None
        record_applied(target_db, migration_id, CAUGHT_UP)
        # only orders: for the tables the writer touches, this made-up position also claims
        # changes Debezium has not even sent to Kafka yet — no topic shows them unapplied, and
        # their rows would be (rightly, given the lie) judged mismatched
        revalidate(pipe.spec, migration_id, dataclasses.replace(result, tables=[orders]),
                   apply_wait_seconds=2)
        assert state_of(orders, {"id": 5}) == RANGE_PENDING
        assert all("of the table not applied yet" in c.note for c in orders.ranges)
        record_applied(target_db, migration_id, real)

        pipe.start()  # CDC catches up while the writer goes on
        before = writer.done
        revalidate(pipe.spec, migration_id, result, timeout_seconds=90)
        time.sleep(1.1)  # the writer's current second is counted
        during = writer.done - before

    assert during > 0  # everything above happened while the source kept moving
    assert state_of(orders, {"id": 5}) == RANGE_RESOLVED
    assert state_of(items, {"order_id": 500, "line_no": 1}) == RANGE_RESOLVED
    assert state_of(orders, {"id": 12}) == RANGE_MISMATCHED
    mismatched = {(t.table, tuple(k)) for t in result.tables
                  for k in keys_in(t, RANGE_MISMATCHED)}
    assert mismatched == {("public.orders", (12,))}  # no row mismatched for merely moving
    assert orders.status == DIFFERENT
    assert [(d.key, d.columns) for d in orders.sample if d.key == {"id": 12}] == [
        ({"id": 12}, ["total"])]
    assert all(t.status in (EQUAL, PENDING) for t in result.tables if t is not orders)
    assert all("/" in t.counts_lsn for t in result.tables)


def test_a_row_written_continuously_stays_pending_and_resolves_once_quiet(
        cdc: Callable[..., Pipeline], source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> None:
    pipe = cdc(target_db)
    pipe.stop()
    run_sql(source_db, "UPDATE public.customers SET full_name = 'Zoë Hot' WHERE id = 3")
    result = validate(pipe.spec, migration_id, tables=["public.customers"])
    customers = result.table("customers")
    assert keys_in(customers, RANGE_PENDING) == [[3]]
    pipe.start()

    stop = threading.Event()

    def hot() -> None:
        with source_db.connect() as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute("UPDATE public.customers SET profile = jsonb_build_object("
                             "'visits', %s::int) WHERE id = 3", [n])
                time.sleep(0.02)

    th = threading.Thread(target=hot, daemon=True)
    th.start()
    try:
        revalidate(pipe.spec, migration_id, result, max_attempts=3, timeout_seconds=60)
    finally:
        stop.set()
        th.join()
    [check] = customers.ranges
    assert check.state == RANGE_PENDING and check.attempts == 4  # seen once, re-checked 3×
    assert "still changing on the source" in check.note and "left pending" in check.note
    assert customers.status == PENDING and result.exit_code == 1
    assert any("public.customers: 1 row(s) still changing" in n for n in result.notes)

    # the source is quiet now: the table's own position stays at its last write, before what
    # the source shows; the all-tables position (heartbeats) and an empty topic prove it is
    # caught up
    revalidate(pipe.spec, migration_id, result, timeout_seconds=60)
    assert customers.status == EQUAL
    assert [c.state for c in customers.ranges] == [RANGE_RESOLVED]
    assert not any("still changing" in n for n in result.notes)


def test_mongodb_target_keys_by_id_while_the_source_keeps_writing(
        cdc: Callable[..., Pipeline], stack: Stack, source_db: PgDatabase, mongo_db: str,
        migration_id: str) -> None:
    pipe = cdc(mongo_endpoint(stack, mongo_db), size=1500)
    pipe.stop()
    with source_db.connect() as conn:  # an order line far from those the writer deletes
        item = conn.execute("SELECT order_id, line_no FROM public.order_items "
                            "WHERE order_id >= 300 ORDER BY 1, 2 LIMIT 1").fetchone()
        assert item is not None
    run_sql(source_db, "UPDATE public.orders SET note = 'late' WHERE id = 5")
    run_sql(source_db, "UPDATE public.order_items SET qty = qty + 1 "
                       "WHERE order_id = %s AND line_no = %s", list(item))
    client: Any = MongoClient(stack.address("ferretdb"))
    try:
        client[mongo_db].orders.update_one({"_id": 12}, {"$set": {"status": "lost"}})
        with Writer(source_db.dsn) as writer:
            time.sleep(1)
            result = validate(pipe.spec, migration_id)
            orders, items = result.table("orders"), result.table("order_items")
            assert {5, 12} <= {k[0] for k in keys_in(orders, RANGE_PENDING)}
            assert list(item) in keys_in(items, RANGE_PENDING)

            pipe.start()
            before = writer.done
            revalidate(pipe.spec, migration_id, result, timeout_seconds=90)
            time.sleep(1.1)
            during = writer.done - before
    finally:
        client.close()

    assert during > 0
    assert state_of(orders, {"id": 5}) == RANGE_RESOLVED
    assert state_of(items, {"order_id": item[0], "line_no": item[1]}) == RANGE_RESOLVED
    assert state_of(orders, {"id": 12}) == RANGE_MISMATCHED
    assert [(d.key, d.columns) for d in orders.sample if d.key == {"id": 12}] == [
        ({"id": 12}, ["status"])]
    mismatched = {(t.table, tuple(k)) for t in result.tables
                  for k in keys_in(t, RANGE_MISMATCHED)}
    assert mismatched == {("public.orders", (12,))}
    assert all(t.counts_lsn for t in result.tables)

