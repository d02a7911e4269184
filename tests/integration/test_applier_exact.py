"""Every change lands exactly on a PostgreSQL target, for data real databases have: ±infinity and
far dates, timestamp(3) at 9999-12-31, unchanged TOASTed values, tables without a key (duplicate
rows included), and names outside Kafka's topic charset whose topic names collide. Source and
target are compared by PostgreSQL itself (each row's text form), sharing no code with the
applier; a rebalance's rewind never lets an older image win."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from migwatch import capture, names
from migwatch.applier import Applier
from migwatch.batches import Batch, StaleBatch
from migwatch.config import MigrationSpec, qualified
from migwatch.stack import Stack
from migwatch.targets.postgres.writer import PostgresWriter
from tests.conftest import PgDatabase, make_spec


def rows_text(dsn: str, schema: str, table: str) -> list[str]:
    """Every row as PostgreSQL prints it, sorted byte-wise: a multiset, keys or not."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        got = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(
            sql.Identifier(schema, table))).fetchall()
    return sorted((r[0] for r in got), key=lambda s: s.encode())


def differing(source: PgDatabase, target: PgDatabase, tables: list[tuple[str, str]]) -> list[str]:
    return [f"{s}.{t}" for s, t in tables
            if rows_text(source.dsn, s, t) != rows_text(target.dsn, s, t)]


def wait_equal(source: PgDatabase, target: PgDatabase, tables: list[tuple[str, str]],
               timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    left = differing(source, target, tables)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = differing(source, target, tables)
    if left:
        schema, table = next((s, t) for s, t in tables if f"{s}.{t}" in left)
        columns = _differing_columns(source, target, schema, table)
        src, tgt = (set(rows_text(db.dsn, *tables[0])) for db in (source, target))
        cut = [r[:160] for r in sorted(src - tgt)[:3]], [r[:160] for r in sorted(tgt - src)[:3]]
        raise AssertionError(f"still different: {left}; columns that differ: {columns}; "
                             "first table, only on the source / only on the target (first 160 "
                             f"characters): {cut}")


def _differing_columns(source: PgDatabase, target: PgDatabase, schema: str,
                       table: str) -> dict[str, int]:
    """Per column, how many rows (matched by their first column) differ in its text."""
    out: dict[str, int] = {}
    sides = []
    for db in (source, target):
        with psycopg.connect(db.dsn) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            cur = conn.execute(sql.SQL("SELECT to_jsonb(t) FROM {} t").format(
                sql.Identifier(schema, table)))
            sides.append({str(r[0].get("id", next(iter(r[0].values())))): r[0]
                          for r in cur.fetchall()})
    for key, row in sides[0].items():
        other = sides[1].get(key)
        for column, value in row.items():
            if other is None or other.get(column) != value:
                out[column] = out.get(column, 0) + 1
                if isinstance(value, list) and other is not None and isinstance(
                        other.get(column), list):
                    pairs = [(a, b) for a, b in zip(value, other[column], strict=False) if a != b]
                    out[f"{column} e.g."] = pairs[:2]  # type: ignore[assignment]
                else:
                    out[f"{column} at {key}"] = (  # type: ignore[assignment]
                        str(value)[:40], None if other is None else str(other.get(column))[:40])
    return out


@pytest.fixture
def streaming(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
              migration_id: str) -> Iterator[Callable[..., MigrationSpec]]:
    """Create the given tables' spec, start the connector and an applier; stop and tear down."""
    running: list[tuple[Applier, threading.Thread, MigrationSpec]] = []

    def start(tables: list[str]) -> MigrationSpec:
        spec = make_spec(source_db, target_db, tables, stack)
        capture.prepare_source(spec, migration_id)
        capture.prepare_target_schema(spec)
        capture.ensure_connector(spec, migration_id, timeout=120)
        applier = Applier(spec, migration_id, metrics_enabled=False)
        th = threading.Thread(target=applier.run, daemon=True)
        th.start()
        running.append((applier, th, spec))
        return spec

    yield start
    for applier, th, spec in running:
        applier.stop()
        th.join(30)
        capture.teardown(spec, migration_id, delete_topics=True)


def test_infinity_far_dates_and_declared_precisions_land_exactly(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,
        target_db: PgDatabase) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, tz timestamptz, tz3 timestamptz(3), "
                     "ts0 timestamp(0), ts3 timestamp(3), ts timestamp, d date, tm time, "
                     "tm3 time(3), tsa timestamp[], da date[])")
        conn.execute("INSERT INTO t VALUES (1, 'infinity', '-infinity', 'infinity', "
                     "'9999-12-31 23:59:59.999', '-infinity', 'infinity', '24:00:00', "
                     "'23:59:59.999', ARRAY['infinity', '2020-01-01 00:00:00.5']::timestamp[], "
                     "ARRAY['-infinity', '2020-02-29']::date[])")
        conn.execute("INSERT INTO t VALUES (2, '0044-03-15 12:00:00+00 BC', "
                     "'9999-12-31 23:59:59.999+00', '0001-01-01 00:00:00 BC', "
                     "'1900-01-01 00:00:00.001', '4713-01-01 00:00:00 BC', '-infinity', "
                     "'00:00:00', '00:00:00.001', NULL, NULL)")
    streaming(["public.t"])
    with source_db.connect() as conn:  # the same values through the stream, not the snapshot
        conn.execute("INSERT INTO t SELECT id + 10, tz, tz3, ts0, ts3, ts, d, tm, tm3, tsa, da "
                     "FROM t")
        conn.execute("UPDATE t SET d = 'infinity', tz = '-infinity' WHERE id = 2")
        conn.execute("UPDATE t SET d = '-infinity', ts3 = 'infinity' WHERE id = 11")
    wait_equal(source_db, target_db, [("public", "t")])


def test_an_update_that_leaves_toasted_columns_untouched_keeps_their_values(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,
        target_db: PgDatabase) -> None:
    with source_db.connect() as conn:
        # arrays of float8 and timestamp: Debezium sends an unchanged TOASTed value as NULL
        conn.execute("CREATE TABLE doc (id int PRIMARY KEY, n int, body text, meta jsonb, "
                     "blob bytea, tags text[], nums int[], ids uuid[], fl float8[], "
                     "ts timestamp[])")
        for i in range(1, 6):  # incompressible, well past the TOAST threshold
            conn.execute(
                "INSERT INTO doc VALUES (%s, 0, %s, %s, %s, %s, %s, %s, %s, "
                "(SELECT array_agg(now() - random() * interval '9 years') "
                "FROM generate_series(1, 2000)))",
                [i, os.urandom(8000).hex(), orjson.dumps([os.urandom(16).hex()
                                                           for _ in range(400)]).decode(),
                 os.urandom(16000), [os.urandom(16).hex() for _ in range(400)],
                 [int.from_bytes(os.urandom(3), "big") for _ in range(3000)],
                 [uuid.uuid4() for _ in range(400)],
                 [int.from_bytes(os.urandom(6), "big") / 7 for _ in range(2000)]])
    streaming(["public.doc"])
    wait_equal(source_db, target_db, [("public", "doc")])
    with source_db.connect() as conn:
        conn.execute("UPDATE doc SET n = n + 1")  # every big column TOASTed and untouched
        conn.execute("UPDATE doc SET n = n + 1, blob = NULL, fl = NULL, ts = NULL WHERE id = 2")
        conn.execute("UPDATE doc SET body = 'short now' WHERE id = 3")
        conn.execute("UPDATE doc SET n = 9 WHERE id = 3")  # same batch: keeps 'short now'
        conn.execute("UPDATE doc SET id = 40 WHERE id = 4")  # a key change: TOAST untouched
    wait_equal(source_db, target_db, [("public", "doc")])
    with source_db.connect() as conn:
        conn.execute("UPDATE doc SET n = 5 WHERE id = 5")  # in one batch with the key change
        conn.execute("UPDATE doc SET id = 50 WHERE id = 5")
    wait_equal(source_db, target_db, [("public", "doc")])
    with target_db.connect() as conn:
        placeholders = conn.execute(
            "SELECT count(*) FROM doc WHERE body LIKE '%unavailable%' OR meta::text LIKE "
            "'%unavailable%' OR position('unavailable'::bytea in coalesce(blob, '')) > 0"
        ).fetchone()
    assert placeholders == (0,)


def test_a_table_without_a_key_changes_exactly_one_matching_row_duplicates_included(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,
        target_db: PgDatabase) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE log (who text, n int, at timestamptz, payload json)")
        conn.execute("ALTER TABLE log REPLICA IDENTITY FULL")
        conn.execute("INSERT INTO log VALUES ('a', 1, '2020-01-01', '{\"x\": 1}'), "
                     "('a', 1, '2020-01-01', '{\"x\": 1}'), ('a', 1, '2020-01-01', "
                     "'{\"x\": 1}'), ('b', NULL, NULL, NULL), ('b', NULL, NULL, NULL)")
    streaming(["public.log"])
    wait_equal(source_db, target_db, [("public", "log")])
    with source_db.connect() as conn:
        conn.execute("UPDATE log SET n = 2 WHERE ctid = (SELECT ctid FROM log WHERE who = 'a' "
                     "LIMIT 1)")
        conn.execute("DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE who = 'b' "
                     "LIMIT 1)")
        conn.execute("INSERT INTO log VALUES ('b', NULL, NULL, NULL), ('c', 3, now(), '[]')")
        conn.execute("UPDATE log SET payload = '{\"x\":  2}' WHERE who = 'a' AND n = 1")
        conn.execute("DELETE FROM log WHERE who = 'c'")
    wait_equal(source_db, target_db, [("public", "log")])


def test_names_outside_the_topic_charset_and_colliding_topics_land_in_their_own_tables(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,
        target_db: PgDatabase) -> None:
    tables = [("we ird", "Tä b"), ("we ird", "a b"), ("we ird", "a_b"), ("we_ird", "a b"),
              ("public", 'sel"ect'), ("we.ird", "x.y"), ("public", "表😀")]
    with source_db.connect() as conn:
        conn.execute('CREATE SCHEMA "we ird"')
        conn.execute("CREATE SCHEMA we_ird")
        conn.execute('CREATE SCHEMA "we.ird"')
        for schema, table in tables:
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(
                sql.Identifier(schema, table)))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s)").format(
                sql.Identifier(schema, table)), [f"{schema}/{table}"])
    assert len({names.table_topic("x", qualified(s, t)) for s, t in tables}) < len(tables)
    streaming([{"source": qualified(s, t)} for s, t in tables])
    with source_db.connect() as conn:
        for i, (schema, table) in enumerate(tables):
            conn.execute(sql.SQL("INSERT INTO {} VALUES (2, %s)").format(
                sql.Identifier(schema, table)), [f"streamed {i}"])
    wait_equal(source_db, target_db, tables)


# ----------------------------------------------------------------------- rebalance rewind
def record(topic: str, offset: int, key: int, value: str, schema: str = "public",
           table: str = "kv") -> Any:
    event = {"op": "u", "before": None, "after": {"id": key, "v": value},
             "source": {"schema": schema, "table": table, "ts_ms": 1, "lsn": 100 + offset,
                        "snapshot": "false"}}
    return SimpleNamespace(topic=topic, partition=0, offset=offset, key=None, headers=[],
                           value=orjson.dumps(event))


def test_records_read_twice_by_a_rewind_never_let_an_older_image_win(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    for db in (source_db, target_db):
        with db.connect() as conn:
            conn.execute("CREATE TABLE kv (id int PRIMARY KEY, v text)")
    spec = make_spec(source_db, target_db, ["public.kv"], stack)
    applier = Applier(spec, migration_id, metrics_enabled=False)
    applier._load_tables()
    writer = applier._writer()
    topic = names.table_topic(migration_id, "public.kv")
    try:
        first = [record(topic, o, 1, f"v{o}") for o in range(0, 5)]
        applier._process(first, writer, dlq=None)  # stores next offset 5
        # a rebalance seeks back to 3 while records 3..7 were gathered: 3 and 4 arrive twice,
        # the second time after 7
        gathered = [record(topic, o, 1, f"v{o}") for o in (3, 4, 5, 6, 7, 3, 4)]
        batch = applier._process(gathered, writer, dlq=None)
        with target_db.connect() as conn:
            assert conn.execute("SELECT v FROM kv WHERE id = 1").fetchone() == ("v7",)
            stored = conn.execute(
                "SELECT next_offset FROM migwatch.applied_offsets WHERE migration_id = %s",
                [migration_id]).fetchone()
        assert stored == (8,) and batch.event_count == 3  # 5, 6, 7 only
        # a batch wholly at or below the stored offset changes nothing and never moves it back
        applier._process([record(topic, 2, 1, "old")], writer, dlq=None)
        with target_db.connect() as conn:
            assert conn.execute("SELECT v FROM kv WHERE id = 1").fetchone() == ("v7",)
        stale = Batch()
        stale.note_offset(record(topic, 6, 1, "x"))
        with pytest.raises(StaleBatch):
            writer.apply(stale)
        assert isinstance(writer, PostgresWriter)
    finally:
        writer.close()


# ----------------------------------------------------------------------- dead letters
def test_dead_letters_are_acknowledged_before_the_offsets_past_them_are_stored(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    """A batch with a bad event whose dead letter Kafka does not take (here: larger than a
    message may be) stores nothing: no rows, no offsets. Once a dead letter is acknowledged the
    batch lands, and a record read twice counts once."""
    from kafka import KafkaProducer

    from migwatch.errors import MigwatchError

    for db in (source_db, target_db):
        with db.connect() as conn:
            conn.execute("CREATE TABLE kv (id int PRIMARY KEY, v text)")
    spec = make_spec(source_db, target_db, ["public.kv"], stack)
    applier = Applier(spec, migration_id, metrics_enabled=False)
    applier._load_tables()
    writer = applier._writer()
    topic = names.table_topic(migration_id, "public.kv")
    bad = SimpleNamespace(topic=topic, partition=0, offset=1, key=None, headers=[],
                          value=b"not json")
    huge = SimpleNamespace(topic=topic, partition=0, offset=1, key=None, headers=[],
                           value=b"not json" * 300_000)
    batch = [record(topic, 0, 1, "a"), huge, record(topic, 2, 2, "b")]
    dlq = KafkaProducer(bootstrap_servers=stack.address("kafka"), max_block_ms=3000)
    try:
        with pytest.raises(MigwatchError):
            applier._process(batch, writer, dlq=dlq)
        with target_db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM kv").fetchone() == (0,)
            assert conn.execute(
                "SELECT count(*) FROM migwatch.applied_offsets WHERE migration_id = %s",
                [migration_id]).fetchone() == (0,)
        applier._process([record(topic, 0, 1, "a"), bad, record(topic, 2, 2, "b"), bad],
                         writer, dlq=dlq)
        with target_db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM kv").fetchone() == (2,)
            assert conn.execute(
                "SELECT dlq_events FROM migwatch.applied_position WHERE migration_id = %s "
                "AND table_name = '*'", [migration_id]).fetchone() == (1,)
            assert conn.execute(
                "SELECT next_offset FROM migwatch.applied_offsets WHERE migration_id = %s",
                [migration_id]).fetchone() == (3,)
    finally:
        dlq.close(timeout=5)
        writer.close()


def test_an_unchanged_toasted_value_of_a_not_null_column_keeps_its_value(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,
        target_db: PgDatabase) -> None:
    """An update that leaves a TOASTed NOT NULL column out (Debezium's placeholder): the
    target keeps its value."""
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, big text NOT NULL, n int)")
        conn.execute("ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL")
    streaming(["public.t"])
    with source_db.connect() as conn:
        conn.execute("INSERT INTO t SELECT g, repeat(md5(g::text), 400), g "
                     "FROM generate_series(1, 5) g")
        conn.commit()
        conn.execute("UPDATE t SET n = n + 100")
    wait_equal(source_db, target_db, [("public", "t")])
