"""Table shapes DBAs have, on the real stack: what pre-flight accepts (and the key every part of
migwatch then uses), what it refuses (naming the table and the fix), and that accepted shapes
really arrive on the target — rows of a partitioned table's partitions, changes of a table keyed
by its replica identity index, tables with odd names under the topics Debezium gives them.

Every test has its own databases and migration id; connectors and appliers are removed after.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from psycopg import sql

from migwatch import capture, connector_config, names, preflight
from migwatch.applier import Applier
from migwatch.config import MigrationSpec, qualified
from migwatch.connectors.postgres import (
    KEY_NONE,
    KEY_REPLICA_IDENTITY_INDEX,
    describe_table,
)
from migwatch.errors import PreflightError
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec

WAIT = 90
FAST = {"heartbeat_interval_ms": 1000, "ready_timeout_seconds": WAIT}


class Cdc:
    """Specs for one test; every connector and applier it started is removed afterwards."""

    def __init__(self, stack: Stack, source: PgDatabase, target: PgDatabase,
                 migration_id: str) -> None:
        self.stack = stack
        self.source = source
        self.target = target
        self.mid = migration_id
        self.specs: list[MigrationSpec] = []
        self.appliers: list[tuple[Applier, threading.Thread]] = []

    def spec(self, tables: list[str], **connect: Any) -> MigrationSpec:
        return make_spec(self.source, self.target, tables, self.stack,
                         connect={**FAST, **connect})

    def start(self, spec: MigrationSpec, apply: bool = True) -> None:
        """Pre-flight, target schema, heartbeat row, connector — and an applier in a thread."""
        self.specs.append(spec)
        preflight.preflight(spec, self.mid)
        capture.prepare_target_schema(spec)
        capture.prepare_source(spec, self.mid)
        capture.ensure_connector(spec, self.mid, timeout=WAIT)
        if apply:
            applier = Applier(spec, self.mid, metrics_enabled=False)
            th = threading.Thread(target=applier.run, daemon=True)
            th.start()
            self.appliers.append((applier, th))

    def stop(self) -> None:
        for applier, th in self.appliers:
            applier.stop()
            th.join(30)
        self.appliers.clear()


@pytest.fixture
def cdc(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> Iterator[Cdc]:
    helper = Cdc(stack, source_db, target_db, migration_id)
    yield helper
    helper.stop()
    for spec in helper.specs:
        capture.teardown(spec, migration_id, delete_topics=True, timeout=WAIT)


def rows(db: PgDatabase, table: str, order: str) -> list[tuple[Any, ...]]:
    schema, name = table.split(".")
    with db.connect() as conn:
        return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(schema, name), sql.SQL(order))).fetchall()


def wait_equal(get: Callable[[], Any], want: Callable[[], Any], what: str,
               timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while (got := get()) != (wanted := want()):
        assert time.monotonic() < deadline, f"{what}: target {got} != source {wanted}"
        time.sleep(1)


def refusals(spec: MigrationSpec, migration_id: str) -> list[str]:
    with pytest.raises(PreflightError) as err:
        preflight.preflight(spec, migration_id)
    return err.value.failures


# ---------------------------------------------------------------------------- accepted shapes
def test_a_replica_identity_index_is_the_key_everywhere(
        cdc: Cdc, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.ri (code text NOT NULL, n int NOT NULL, v text);"
                     "CREATE UNIQUE INDEX ri_code_n ON public.ri (n, code);"
                     "ALTER TABLE public.ri REPLICA IDENTITY USING INDEX ri_code_n;"
                     "INSERT INTO public.ri SELECT 'c' || g, g, 'v' || g "
                     "FROM generate_series(1, 20) g")
        info = describe_table(conn, "public", "ri")
    assert info is not None
    assert (info.primary_key, info.key_source, info.identity_index) == \
        (("n", "code"), KEY_REPLICA_IDENTITY_INDEX, ("n", "code"))

    spec = cdc.spec(["public.ri"])
    cdc.start(spec)
    with target_db.connect() as conn:  # the target is keyed the same way, from the start
        target = describe_table(conn, "public", "ri")
    assert target is not None and (target.primary_key, target.key_source) == \
        (("n", "code"), KEY_REPLICA_IDENTITY_INDEX)
    order = "n, code"
    wait_equal(lambda: rows(target_db, "public.ri", order),
               lambda: rows(source_db, "public.ri", order), "snapshot")
    with source_db.connect() as conn:  # updates and deletes carry only the index's columns
        conn.execute("UPDATE public.ri SET v = 'changed' WHERE n <= 5;"
                     "DELETE FROM public.ri WHERE n BETWEEN 6 AND 10;"
                     "UPDATE public.ri SET n = n + 100 WHERE n = 20;"
                     "INSERT INTO public.ri VALUES ('new', 1, 'same n, other code')")
    wait_equal(lambda: rows(target_db, "public.ri", order),
               lambda: rows(source_db, "public.ri", order), "changes")
    assert len(rows(target_db, "public.ri", order)) == 16


def test_a_partitioned_table_arrives_whole_through_its_root(
        stack: Stack, cdc: Cdc, source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute(
            "CREATE TABLE public.events (id int NOT NULL, region text NOT NULL, v text, "
            "PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
            "CREATE TABLE public.events_eu PARTITION OF public.events FOR VALUES IN ('eu');"
            "CREATE TABLE public.events_us PARTITION OF public.events FOR VALUES IN ('us');"
            "INSERT INTO public.events SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, "
            "'v' || g FROM generate_series(1, 10) g")
    spec = cdc.spec(["public.events"])
    cdc.start(spec)
    order = "id, region"
    wait_equal(lambda: rows(target_db, "public.events", order),
               lambda: rows(source_db, "public.events", order), "snapshot")
    # changes made in each partition stream under the root's name
    with source_db.connect() as conn:
        conn.execute("INSERT INTO public.events VALUES (11, 'eu', 'new eu'), (12, 'us', 'new us');"
                     "UPDATE public.events SET v = 'changed' WHERE id IN (2, 3);"
                     "DELETE FROM public.events WHERE id IN (4, 5)")
    wait_equal(lambda: rows(target_db, "public.events", order),
               lambda: rows(source_db, "public.events", order), "changes")
    with target_db.connect() as conn:  # partitioned the same way on the target
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'public.events'::regclass"
                            ).fetchone()
        parts = conn.execute("SELECT relid::regclass::text, isleaf FROM "
                             "pg_partition_tree('public.events') ORDER BY 1").fetchall()
        landed = conn.execute("SELECT tableoid::regclass::text, count(*) FROM public.events "
                              "GROUP BY 1 ORDER BY 1").fetchall()
    assert kind == ("p",)
    assert parts == [("events", False), ("events_eu", True), ("events_us", True)]
    assert landed == [("events_eu", 5), ("events_us", 5)]
    with source_db.connect() as conn:
        pub = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s",
                           [names.publication_name(migration_id)]).fetchone()
        published = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s",
            [names.publication_name(migration_id)])}
    # and Debezium's signal table, which it adds itself (tables added later load through it)
    assert pub == (True,) and published == {"events", "migwatch_heartbeat",
                                             names.signal_table(migration_id)}
    admin = KafkaAdminClient(bootstrap_servers=stack.address("kafka"))
    try:
        topics = {t for t in admin.list_topics() if t.startswith(
            names.topic_prefix(migration_id) + ".")}
    finally:
        admin.close()
    assert topics == {names.table_topic(migration_id, "public.events"),
                      names.table_topic(migration_id, "public.migwatch_heartbeat"),
                      names.notification_topic(migration_id)}  # Debezium's notifications


def test_target_columns_keep_the_source_collations(
        cdc: Cdc, source_db: PgDatabase, target_db: PgDatabase) -> None:
    with source_db.connect() as conn:
        conn.execute('CREATE TABLE public.names (id int PRIMARY KEY, a text COLLATE "C", '
                     'b varchar(10) COLLATE "POSIX", c text, d text[] COLLATE "C")')
    capture.prepare_target_schema(cdc.spec(["public.names"]))
    with target_db.connect() as conn:
        found: dict[str, str | None] = dict(conn.execute(
            "SELECT a.attname, CASE WHEN a.attcollation <> t.typcollation "
            "THEN co.collname END FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
            "WHERE a.attrelid = 'public.names'::regclass AND a.attnum > 0").fetchall())
    assert found == {"id": None, "a": "C", "b": "POSIX", "c": None, "d": "C"}


# ---------------------------------------------------------------------------- refused shapes
def test_shapes_logical_decoding_cannot_carry_are_refused_naming_table_and_fix(
        cdc: Cdc, source_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute(
            "CREATE TABLE public.nokey (id int, v text);"
            "CREATE TABLE public.nothing (id int PRIMARY KEY);"
            "ALTER TABLE public.nothing REPLICA IDENTITY NOTHING;"
            "CREATE TABLE public.nokey_nothing (id int);"
            "ALTER TABLE public.nokey_nothing REPLICA IDENTITY NOTHING;"
            "CREATE TABLE public.other_index (id int PRIMARY KEY, code text NOT NULL);"
            "CREATE UNIQUE INDEX other_code ON public.other_index (code);"
            "ALTER TABLE public.other_index REPLICA IDENTITY USING INDEX other_code;"
            "CREATE TABLE public.index_gone (code text NOT NULL);"
            "CREATE UNIQUE INDEX gone_code ON public.index_gone (code);"
            "ALTER TABLE public.index_gone REPLICA IDENTITY USING INDEX gone_code;"
            "DROP INDEX public.gone_code;"
            "CREATE UNLOGGED TABLE public.scratch (id int PRIMARY KEY);"
            "CREATE DOMAIN public.lo AS oid;"
            'CREATE TABLE public."Blobs" (id int PRIMARY KEY, raw oid, "Doc" public.lo);'
            "CREATE TABLE public.parts (id int NOT NULL, r int NOT NULL, PRIMARY KEY (id, r)) "
            "PARTITION BY RANGE (r);"
            "CREATE TABLE public.parts_1 PARTITION OF public.parts FOR VALUES FROM (0) TO (10);"
            "CREATE UNLOGGED TABLE public.parts_2 PARTITION OF public.parts "
            "FOR VALUES FROM (10) TO (20);"
            "CREATE TABLE public.heap (id int, r int) PARTITION BY RANGE (r);"
            "CREATE TABLE public.heap_1 PARTITION OF public.heap FOR VALUES FROM (0) TO (10);"
            "CREATE TABLE public.heap_2 PARTITION OF public.heap FOR VALUES FROM (10) TO (20);"
            "ALTER TABLE public.heap_1 REPLICA IDENTITY FULL;"
            "CREATE TABLE public.full_heap (id int, r int) PARTITION BY RANGE (r);"
            "CREATE TABLE public.full_heap_1 PARTITION OF public.full_heap "
            "FOR VALUES FROM (0) TO (10);"
            "ALTER TABLE public.full_heap_1 REPLICA IDENTITY FULL;"
            "CREATE TABLE public.ok (id int PRIMARY KEY);"
            "CREATE TABLE public.bits (id int PRIMARY KEY, flags bit varying(8), "
            "spans interval[], fixed bit(3), one_span interval);"
            "CREATE TABLE public.ok_full (id int);"
            "ALTER TABLE public.ok_full REPLICA IDENTITY FULL")
    tables = ["public.nokey", "public.nothing", "public.nokey_nothing", "public.other_index",
              "public.index_gone", "public.scratch", "public.Blobs", "public.parts_1",
              "public.parts", "public.heap", "public.full_heap", "public.ok", "public.ok_full",
              "public.bits"]
    failures = refusals(cdc.spec(tables), migration_id)
    by_table: dict[str, list[str]] = {}
    for f in failures:
        by_table.setdefault(f.split(":")[0].removeprefix("table "), []).append(f)
    assert set(by_table) == {"public.nokey", "public.nothing", "public.nokey_nothing",
                             "public.other_index", "public.index_gone", "public.scratch",
                             "public.Blobs", "public.parts_1", "public.parts", "public.heap",
                             "public.bits"}, \
        failures

    def one(table: str) -> str:
        [text] = by_table[table]
        return text

    assert "no primary key and REPLICA IDENTITY DEFAULT" in one("public.nokey")
    assert 'ALTER TABLE "public"."nokey" REPLICA IDENTITY FULL' in one("public.nokey")
    assert "USING INDEX" in one("public.nokey")
    assert "REPLICA IDENTITY NOTHING" in one("public.nothing")
    assert 'ALTER TABLE "public"."nothing" REPLICA IDENTITY DEFAULT' in one("public.nothing")
    assert "REPLICA IDENTITY NOTHING" in one("public.nokey_nothing")
    assert "(code), not its primary key (id)" in one("public.other_index")
    assert "index no longer exists" in one("public.index_gone")
    assert "UNLOGGED" in one("public.scratch") and "SET LOGGED" in one("public.scratch")
    assert "raw, Doc hold large-object references" in one("public.Blobs")
    assert "flags (bit varying(8)), spans (interval[]): Debezium's change events do not " \
        "carry" in one("public.bits")  # bit(3) and interval are carried
    assert "partition of public.parts" in one("public.parts_1")
    assert "partition public.parts_2: is UNLOGGED" in one("public.parts")
    assert "partition public.heap_2: REPLICA IDENTITY DEFAULT" in one("public.heap")
    assert 'ALTER TABLE "public"."heap_2" REPLICA IDENTITY FULL' in one("public.heap")

    with source_db.connect() as conn:  # keyless but FULL: the whole row is the key
        full = describe_table(conn, "public", "ok_full")
    assert full is not None and (full.primary_key, full.key_source) == ((), KEY_NONE)


# ---------------------------------------------------------------------------- names
#: (schema, table) names PostgreSQL accepts: spaces, quotes, dots, a comma (Debezium splits its
#: include list on commas), regex metacharacters, a reserved word, mixed case, non-ASCII
ODD = [("Sales Dept.", 'we"ird na.me'), ("Sales Dept.", "a,b"), ("public", "a+b"),
       ("public", "x(1)$"), ("public", "select"), ("public", "MixedCase"), ("public", "Tä b€"),
       ("ünï", "back\\slash")]


def test_odd_names_pass_preflight_and_get_the_topics_debezium_names(
        stack: Stack, cdc: Cdc, source_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        for schema in {s for s, _ in ODD}:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for i, (schema, table) in enumerate(ODD):
            ident = sql.Identifier(schema, table)
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(ident),
                         [i, f"{schema}|{table}"])
    spec = cdc.spec([qualified(s, t) for s, t in ODD])
    assert connector_config.captured_tables(spec)[:-1] == ODD
    cdc.start(spec, apply=False)  # pre-flight included

    wanted = {names.table_topic(migration_id, qualified(s, t)): (s, t) for s, t in ODD}
    assert len(wanted) == len(ODD)
    seen: dict[str, Any] = {}
    consumer = KafkaConsumer(bootstrap_servers=stack.address("kafka"), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             metadata_max_age_ms=1000)
    deadline = time.monotonic() + WAIT
    try:
        consumer.subscribe(pattern=f"^{names.topic_prefix(migration_id)}\\..*")
        while set(seen) < set(wanted):
            assert time.monotonic() < deadline, \
                f"topics seen {sorted(seen)}, wanted {sorted(wanted)}"
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.value is not None and r.topic in wanted:
                        seen[r.topic] = json.loads(r.value)["payload"]
    finally:
        consumer.close()
    for topic, event in seen.items():
        schema, table = wanted[topic]
        assert (event["source"]["schema"], event["source"]["table"]) == (schema, table), topic
        assert event["after"]["v"] == f"{schema}|{table}"
    heartbeat = names.table_topic(migration_id, "public.migwatch_heartbeat")
    expected = {*wanted, heartbeat, names.notification_topic(migration_id)}
    # the heartbeat topic is made at the first heartbeat's event, which may come after the rows
    admin = KafkaAdminClient(bootstrap_servers=stack.address("kafka"))
    try:
        while True:
            made = {t for t in admin.list_topics()
                    if t.startswith(names.topic_prefix(migration_id) + ".")}
            if made >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        admin.close()
    assert made == expected
    print("\n" + "\n".join(f"{s}.{t} -> {topic}" for topic, (s, t) in sorted(wanted.items())))
    with psycopg.connect(source_db.dsn) as conn:  # the publication lists each table once
        published = conn.execute("SELECT count(*) FROM pg_publication_tables WHERE pubname = %s",
                                 [names.publication_name(migration_id)]).fetchone()
    assert published == (len(ODD) + 2,)  # with the heartbeat and the signal table


def test_a_domain_over_an_enum_anywhere_in_the_database_is_refused_naming_it(
        cdc: Cdc, source_db: PgDatabase, migration_id: str) -> None:
    """Debezium's connector fails to start on such a database (its type registry reads every
    type), whichever tables the spec names: pre-flight says so instead of a Java trace."""
    with source_db.connect() as conn:
        conn.execute("CREATE TYPE public.mood AS ENUM ('sad', 'ok');"
                     'CREATE DOMAIN public."Mood D" AS public.mood;'
                     "CREATE TABLE public.plain (id int PRIMARY KEY);")
    spec = cdc.spec(["public.plain"])
    with pytest.raises(PreflightError) as err:
        preflight.preflight(spec, migration_id)
    assert err.value.failures == [
        'source: domain public."Mood D" is over an enum, and Debezium\'s PostgreSQL connector '
        "fails to start on a database that holds one (it reads every type at start); use the "
        "enum itself, or a text domain with a CHECK, instead"]
