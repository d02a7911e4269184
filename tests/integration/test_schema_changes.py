"""Schema changes on the source while CDC runs, on the real stack: additive ones (ADD COLUMN with
and without a default, a stable default that fills existing rows, a widened varchar and integer,
a dropped NOT NULL) follow on the target before the events that need them — nothing is
dead-lettered and source and target end equal, compared by PostgreSQL itself (each row's text,
sharing no code with migwatch); a destructive one (DROP COLUMN) stops only that table, names it,
and the table continues once the target has the same change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from migwatch import positions
from migwatch.cli import app
from migwatch.config import MigrationSpec
from migwatch.schema_changes import (
    ACCEPTED,
    CONTINUED,
    DROPPED,
    FOLLOWED,
    NOT_NULL,
    STOPPED,
    SchemaChange,
)
from migwatch.stack import Stack
from migwatch.targets import engine_for
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.integration.monitor_helpers import write_spec
from tests.integration.test_applier_exact import (  # noqa: F401 - the fixture
    rows_text,
    streaming,
    wait_equal,
)


def column_types(dsn: str, table: str) -> dict[str, tuple[str, bool]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", [table]
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def dead_letters(spec: MigrationSpec, migration_id: str) -> int:
    found = positions.read(spec, migration_id).get("*")
    return found.dlq_events if found is not None else 0


ADDITIVE = [
    "ALTER TABLE t ADD COLUMN b int DEFAULT 7",
    "ALTER TABLE t ADD COLUMN c text",
    "ALTER TABLE t ADD COLUMN d timestamptz NOT NULL DEFAULT now()",
    "INSERT INTO t (id, a, b, c) VALUES (51, 'x', 8, 'new')",
    "UPDATE t SET c = 'changed' WHERE id = 3",
    "ALTER TABLE t ADD COLUMN e varchar(5)",
    "UPDATE t SET e = 'five!' WHERE id = 4",
    "ALTER TABLE t ALTER COLUMN e TYPE varchar(50)",
    "UPDATE t SET e = repeat('y', 40) WHERE id = 4",
    "ALTER TABLE t ALTER COLUMN b TYPE bigint",
    "UPDATE t SET b = 9000000000 WHERE id = 5",
    "ALTER TABLE t ALTER COLUMN a DROP NOT NULL",
    "INSERT INTO t (id, a) VALUES (52, NULL)",
    "DELETE FROM t WHERE id = 6",
]


def _source_table(source_db: PgDatabase) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text NOT NULL)")
        conn.execute("INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 50) g")


def test_additive_changes_follow_on_a_postgresql_target(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,  # noqa: F811
        target_db: PgDatabase, migration_id: str) -> None:
    _source_table(source_db)
    spec = streaming(["public.t"])
    wait_equal(source_db, target_db, [("public", "t")])
    with source_db.connect() as conn:
        for stmt in ADDITIVE:
            conn.execute(stmt)
            conn.commit()
    wait_equal(source_db, target_db, [("public", "t")])
    source, target = (column_types(db.dsn, "public.t") for db in (source_db, target_db))
    assert {c: t for c, (t, _) in target.items()} == {c: t for c, (t, _) in source.items()}
    # NOT NULL where the source has it, unless a row the target held then had no value yet
    # (one the source deleted meanwhile): the target may accept more, never less
    assert all(source[c][1] for c, (_, not_null) in target.items() if not_null)
    assert dead_letters(spec, migration_id) == 0
    seen = history(spec, migration_id)  # each change the target followed, in the history
    assert {r.outcome for r in seen} == {FOLLOWED}
    assert {c.column for r in seen for c in r.changes} >= {"b", "c", "d", "e", "a"}


def test_a_not_null_the_target_keeps_nullable_is_recorded_once(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,  # noqa: F811
        target_db: PgDatabase, migration_id: str) -> None:
    """The source makes a column NOT NULL (its rows filled first); the target keeps it
    nullable (it follows additive changes only). Later changes of the table read its
    definition again: the NOT NULL is one record of the history, not one per read."""
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text)")
        conn.execute("INSERT INTO t SELECT g, CASE WHEN g % 2 = 0 THEN 'a' END "
                     "FROM generate_series(1, 20) g")
    spec = streaming(["public.t"])
    wait_equal(source_db, target_db, [("public", "t")])
    with source_db.connect() as conn:
        for stmt in ["UPDATE t SET a = 'filled' WHERE a IS NULL",
                     "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
                     "ALTER TABLE t ADD COLUMN f int", "UPDATE t SET f = id WHERE id < 5",
                     "ALTER TABLE t ADD COLUMN g int", "UPDATE t SET g = id WHERE id < 5",
                     "ALTER TABLE t ADD COLUMN h int", "INSERT INTO t VALUES (99, 'x', 1, 2, 3)"]:
            conn.execute(stmt)
            conn.commit()
    wait_equal(source_db, target_db, [("public", "t")])
    seen = history(spec, migration_id)
    not_null = [r for r in seen for c in r.changes if (c.column, c.kind) == ("a", NOT_NULL)]
    assert len(not_null) == 1, [r.describe() for r in seen]
    assert {c.column for r in seen for c in r.changes} == {"a", "f", "g", "h"}
    assert dead_letters(spec, migration_id) == 0


def test_additive_changes_follow_on_a_mongodb_target(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str) -> None:
    from pymongo import MongoClient

    from migwatch import capture
    from migwatch.applier import Applier

    _source_table(source_db)
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.t"], stack)
    capture.prepare_source(spec, migration_id)
    capture.ensure_connector(spec, migration_id, timeout=120)
    applier = Applier(spec, migration_id, metrics_enabled=False)
    th = threading.Thread(target=applier.run, daemon=True)
    th.start()
    client: Any = MongoClient(stack.address("ferretdb"))
    coll = client[mongo_db]["t"]
    try:
        _wait(lambda: coll.count_documents({}) == 50)
        with source_db.connect() as conn:
            for stmt in ADDITIVE:
                conn.execute(stmt)
                conn.commit()
            expected = {r[0]: r for r in conn.execute(
                "SELECT id, a, b, c, e FROM t").fetchall()}
        def landed() -> bool:
            docs = {d["_id"]: d for d in coll.find()}
            return docs.keys() == expected.keys() and all(
                (docs[k].get("a"), docs[k].get("b"), docs[k].get("c"), docs[k].get("e"))
                == row[1:] for k, row in expected.items())
        _wait(landed)
        assert all("d" in d for d in coll.find()), "every document has the added column"
        assert dead_letters(spec, migration_id) == 0
    finally:
        applier.stop()
        th.join(30)
        capture.teardown(spec, migration_id, delete_topics=True)
        client.close()


def test_a_dropped_column_stops_only_its_table_until_the_target_has_it_too(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,  # noqa: F811
        target_db: PgDatabase, migration_id: str) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text, gone text)")
        conn.execute("CREATE TABLE other (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO t SELECT g, 'a', 'g' FROM generate_series(1, 20) g")
    spec = streaming(["public.t", "public.other"])
    wait_equal(source_db, target_db, [("public", "t")])
    with source_db.connect() as conn:
        conn.execute("ALTER TABLE t DROP COLUMN gone")
        conn.execute("INSERT INTO t VALUES (21, 'after')")
        conn.execute("INSERT INTO other VALUES (1, 1)")
        conn.commit()
    # the other table keeps going; t stops before the event it cannot apply, and says so
    wait_equal(source_db, target_db, [("public", "other")])
    time.sleep(3)
    with psycopg.connect(target_db.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM t WHERE id = 21").fetchone() == (0,)
    assert dead_letters(spec, migration_id) == 0
    from migwatch import metrics

    stopped = metrics.REGISTRY.get_sample_value(
        "migwatch_table_stopped", {"migration_id": migration_id, "table_name": "public.t"})
    assert stopped == 1
    # the user applies the same change to the target: the table continues where it stopped
    with psycopg.connect(target_db.dsn) as conn:
        conn.execute("ALTER TABLE t DROP COLUMN gone")
    wait_equal(source_db, target_db, [("public", "t")])
    assert dead_letters(spec, migration_id) == 0


def history(spec: MigrationSpec, migration_id: str) -> list[SchemaChange]:
    with engine_for(spec).session("test") as session:
        return session.schema_changes(migration_id)


def resume_table(spec: MigrationSpec, migration_id: str, table: str, tmp_path: Path,
                 *flags: str) -> Any:
    path = write_spec(spec, tmp_path / "spec.yaml")
    return CliRunner().invoke(app, ["resume-table", str(path), table,
                                    "--migration-id", migration_id, *flags])


def test_a_stopped_table_continues_once_the_user_accepts_the_change(
        streaming: Callable[..., MigrationSpec], source_db: PgDatabase,  # noqa: F811
        target_db: PgDatabase, migration_id: str, tmp_path: Path) -> None:
    """DROP COLUMN and a type changed in a way the target does not follow (integer → text
    holding words), each with events of the table on both sides of the change: the table
    stops, `resume-table` shows why, `--accept` removes the target's stale copies, and the
    table continues from where it stopped — every event before and after the change lands."""
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text, gone text, n int NOT NULL)")
        conn.execute("CREATE TABLE other (id int PRIMARY KEY, v int)")
        conn.execute("INSERT INTO t SELECT g, 'a', 'g', g FROM generate_series(1, 20) g")
    spec = streaming(["public.t", "public.other"])
    wait_equal(source_db, target_db, [("public", "t")])
    assert resume_table(spec, migration_id, "public.t", tmp_path).exit_code == 2  # not stopped
    with source_db.connect() as conn:
        conn.execute("UPDATE t SET a = 'before', gone = 'last' WHERE id <= 5")
        conn.commit()
        conn.execute("ALTER TABLE t DROP COLUMN gone")
        conn.execute("ALTER TABLE t ALTER COLUMN n TYPE text USING 'n' || n")
        conn.commit()
        conn.execute("UPDATE t SET a = 'after', n = 'word' WHERE id BETWEEN 4 AND 8")
        conn.execute("INSERT INTO t VALUES (21, 'new', 'twenty-one')")
        conn.execute("INSERT INTO other VALUES (1, 1)")
        conn.commit()
    wait_equal(source_db, target_db, [("public", "other")])
    _wait(lambda: any(r.outcome == STOPPED for r in history(spec, migration_id)), 60)
    stop = next(r for r in history(spec, migration_id) if r.outcome == STOPPED)
    assert stop.table == "public.t"
    assert ("gone", DROPPED) in {(c.column, c.kind) for c in stop.changes}
    shown = resume_table(spec, migration_id, "public.t", tmp_path)
    assert shown.exit_code == 0, shown.output
    assert "'gone' dropped" in shown.output and "--accept" in shown.output
    with psycopg.connect(target_db.dsn) as conn:  # nothing of the table moved meanwhile
        assert conn.execute("SELECT count(*) FROM t WHERE id = 21").fetchone() == (0,)

    accepted = resume_table(spec, migration_id, "public.t", tmp_path, "--accept")
    assert accepted.exit_code == 0, accepted.output
    assert "continued" in accepted.output
    wait_equal(source_db, target_db, [("public", "t"), ("public", "other")])
    assert column_types(target_db.dsn, "public.t")["n"][0] == "text"
    assert dead_letters(spec, migration_id) == 0
    outcomes = [r.outcome for r in history(spec, migration_id) if r.table == "public.t"]
    # n is added again with the source's type and filled: followed, between the two
    assert outcomes[-4:] == [STOPPED, ACCEPTED, FOLLOWED, CONTINUED], outcomes
    assert resume_table(spec, migration_id, "public.t", tmp_path).exit_code == 2


def test_a_dropped_column_on_a_mongodb_target_continues_once_accepted(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str,
        tmp_path: Path) -> None:
    from pymongo import MongoClient

    from migwatch import capture
    from migwatch.applier import Applier

    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text, gone text, b int)")
        conn.execute("INSERT INTO t SELECT g, 'a', 'g', g FROM generate_series(1, 20) g")
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.t"], stack)
    capture.prepare_source(spec, migration_id)
    capture.ensure_connector(spec, migration_id, timeout=120)
    applier = Applier(spec, migration_id, metrics_enabled=False)
    th = threading.Thread(target=applier.run, daemon=True)
    th.start()
    client: Any = MongoClient(stack.address("ferretdb"))
    coll = client[mongo_db]["t"]
    try:
        _wait(lambda: coll.count_documents({}) == 20)
        with source_db.connect() as conn:
            conn.execute("UPDATE t SET a = 'before' WHERE id <= 3")
            conn.commit()
            conn.execute("ALTER TABLE t DROP COLUMN gone")
            conn.execute("ALTER TABLE t ADD COLUMN c text DEFAULT 'c'")
            conn.commit()
            conn.execute("UPDATE t SET a = 'after' WHERE id = 3")
            conn.execute("INSERT INTO t VALUES (21, 'new', 21)")
            conn.commit()
            expected = {r[0]: r for r in conn.execute("SELECT id, a, b, c FROM t").fetchall()}
        _wait(lambda: any(r.outcome == STOPPED for r in history(spec, migration_id)), 60)
        assert coll.count_documents({"_id": 21}) == 0
        accepted = resume_table(spec, migration_id, "public.t", tmp_path, "--accept")
        assert accepted.exit_code == 0, accepted.output

        def landed() -> bool:
            docs = {d["_id"]: d for d in coll.find()}
            return docs.keys() == expected.keys() and all(
                (docs[k].get("a"), docs[k].get("b"), docs[k].get("c")) == row[1:]
                and "gone" not in docs[k] for k, row in expected.items())
        _wait(landed)
        assert dead_letters(spec, migration_id) == 0
        outcomes = [r.outcome for r in history(spec, migration_id)]
        assert outcomes[-1] == CONTINUED and outcomes.index(ACCEPTED) > outcomes.index(STOPPED), \
            outcomes
    finally:
        applier.stop()
        th.join(30)
        capture.teardown(spec, migration_id, delete_topics=True)
        client.close()


def _wait(check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(1)


def test_an_applier_behind_several_changes_reads_each_event_by_its_own_definition(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    """The applier is stopped while the source changes its table several times (a widened
    varchar, a column added with a constant default and one with a volatile one, an integer
    turned text by a rewrite), each with rows written under it; a new applier then reads
    events whose definitions all differ from the catalog it finds. Every event lands by the
    definition it was written under: the integer values before the change land as integers
    (nothing dead-lettered), the table stops at the first text value, and after the user's
    acceptance source and target are equal, compared by PostgreSQL's own row text."""
    from migwatch import capture
    from migwatch.applier import Applier
    from migwatch.resuming import resume

    def rows_json(dsn: str) -> list[str]:
        with psycopg.connect(dsn) as conn:
            return sorted(r[0] for r in conn.execute("SELECT to_jsonb(t)::text FROM t"))

    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, n int, v varchar(5))")
        conn.execute("INSERT INTO t SELECT g, g, 'v' FROM generate_series(1, 10) g")
    spec = make_spec(source_db, target_db, ["public.t"], stack)
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    capture.ensure_connector(spec, migration_id, timeout=120)

    def start() -> tuple[Applier, threading.Thread]:
        applier = Applier(spec, migration_id, metrics_enabled=False)
        th = threading.Thread(target=applier.run, daemon=True)
        th.start()
        return applier, th

    applier, th = start()
    try:
        wait_equal(source_db, target_db, [("public", "t")])
        applier.stop()
        th.join(30)
        with source_db.connect() as conn:
            for statement in [
                "INSERT INTO t VALUES (11, 11, 'short')",
                "ALTER TABLE t ALTER COLUMN v TYPE varchar(20)",
                "INSERT INTO t VALUES (12, 12, 'a longer value')",
                "ALTER TABLE t ADD COLUMN d int DEFAULT 5",
                "INSERT INTO t (id, n, v) VALUES (13, 13, 'x')",
                "ALTER TABLE t ADD COLUMN r text DEFAULT md5(random()::text)",
                "UPDATE t SET n = 100 WHERE id = 1",
                "ALTER TABLE t ALTER COLUMN n TYPE text USING n::text || 'x'",
                "INSERT INTO t (id, n, v) VALUES (14, 'fourteen', 'y')",
                "UPDATE t SET v = 'after' WHERE id = 2",
            ]:
                conn.execute(statement)
                conn.commit()
        applier, th = start()
        _wait(lambda: any(r.outcome == STOPPED for r in history(spec, migration_id)), 90)
        stop = next(r for r in history(spec, migration_id) if r.outcome == STOPPED)
        assert [(c.column, c.kind) for c in stop.changes] == [("n", "changed")], stop
        with psycopg.connect(target_db.dsn) as conn:
            # every event before the change landed, by its own definition
            assert conn.execute("SELECT n, v, d FROM t WHERE id IN (1, 12, 13) ORDER BY id"
                                ).fetchall() == [(100, "v", 5), (12, "a longer value", 5),
                                                 (13, "x", 5)]
            assert conn.execute("SELECT count(*) FROM t WHERE id = 14").fetchone() == (0,)
        assert column_types(target_db.dsn, "public.t")["n"][0] == "integer"
        assert dead_letters(spec, migration_id) == 0
        got = resume(spec, migration_id, "public.t", accept=True, wait_seconds=60)
        assert got.continued, got
        deadline = time.monotonic() + 90  # n is added again, last: rows compared by name
        while rows_json(source_db.dsn) != rows_json(target_db.dsn) and \
                time.monotonic() < deadline:
            time.sleep(1)
        src, tgt = rows_json(source_db.dsn), rows_json(target_db.dsn)
        assert src == tgt, (sorted(set(src) - set(tgt))[:4], sorted(set(tgt) - set(src))[:4])
        assert dead_letters(spec, migration_id) == 0
    finally:
        applier.stop()
        th.join(30)
        capture.teardown(spec, migration_id, delete_topics=True)
