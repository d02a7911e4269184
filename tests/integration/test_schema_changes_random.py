"""Seeded random schema changes while CDC runs, on the real stack and both targets: a stream of
inserts, updates and deletes interleaved with ADD COLUMN (with a constant default, a volatile
one, none), widened types, a dropped NOT NULL, and destructive changes — DROP COLUMN, an integer
column turned text — each of which stops the table until the user's resolution
(`migwatch.resuming.resume(…, accept=True)`, what `migwatch resume-table --accept` runs). At
the end the source and the target are compared by code that shares nothing with migwatch:
PostgreSQL's own `to_jsonb` of every row on both sides, or the documents read with pymongo.

More seeds: MIGWATCH_DIFF_SEEDS=3 (or a comma list of seeds) runs more.

The applier is often behind several of the changes when it reads an event (the workload does
not wait for it): each event is read by the definition it carries (`event_schema`), not by the
source's catalog as it is by then."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from migwatch import capture, positions
from migwatch.applier import Applier
from migwatch.config import MigrationSpec
from migwatch.resuming import resume
from migwatch.schema_changes import STOPPED, stopped_tables
from migwatch.stack import Stack
from migwatch.targets import engine_for
from tests.conftest import PgDatabase, make_spec, mongo_endpoint


def seeds() -> list[int]:
    raw = os.environ.get("MIGWATCH_DIFF_SEEDS", "")
    if "," in raw:
        return [int(s) for s in raw.split(",") if s.strip()]
    return [20261207 + i for i in range(int(raw) if raw.strip() else 1)]


class Table:
    """The source table's columns as the workload changed them: name → kind (int, text,
    bool) and NOT NULL."""

    def __init__(self) -> None:
        self.columns: dict[str, tuple[str, bool]] = {"a": ("text", True), "n": ("int", False),
                                                     "v": ("text", False)}
        self.ids: set[int] = set()
        self.next_id = 1
        self.added = 0

    def value(self, rng: random.Random, kind: str, nullable: bool) -> Any:
        if nullable and rng.random() < 0.15:
            return None
        if kind == "int":
            return rng.choice([0, -1, 7, 2**31 - 1, rng.randint(-1000, 1000)])
        if kind == "bool":
            return rng.random() < 0.5
        return rng.choice(["", "x", "ünï", "a b", rng.choice("abc") * rng.randint(1, 8)])


def dml(conn: Any, rng: random.Random, t: Table, insert: bool = False) -> int:
    """One insert, update or delete; returns the key."""
    cols = list(t.columns)
    r = 0.0 if insert else rng.random()
    if r < 0.45 or not t.ids:
        key = t.next_id
        t.next_id += 1
        values = [t.value(rng, k, not nn) for k, nn in t.columns.values()]
        conn.execute(sql.SQL("INSERT INTO t (id, {}) VALUES (%s, {})").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(sql.Placeholder() * len(cols))), [key, *values])
        t.ids.add(key)
    elif r < 0.85:
        key = rng.choice(sorted(t.ids))
        col = rng.choice(cols)
        kind, nn = t.columns[col]
        conn.execute(sql.SQL("UPDATE t SET {} = %s WHERE id = %s").format(sql.Identifier(col)),
                     [t.value(rng, kind, not nn), key])
    else:
        key = rng.choice(sorted(t.ids))
        conn.execute("DELETE FROM t WHERE id = %s", [key])
        t.ids.discard(key)
    return key


def ddl(conn: Any, rng: random.Random, t: Table) -> str | None:
    """One schema change; returns "destructive" when the table will stop at it."""
    # Not yet: a column added as NOT NULL — an insert written before it was added, of a row
    # deleted since, has no value for it (the target keeps such a column nullable).
    choice = rng.choice(["add const", "add volatile", "add null", "widen", "drop not null",
                         "drop", "to text"])
    if choice.startswith("add"):
        t.added += 1
        name = f"c{t.added}"
        kind = rng.choice(["int", "text", "bool"])
        pg_type = {"int": "integer", "text": "varchar(10)", "bool": "boolean"}[kind]
        default = {"add const": {"int": "42", "text": "'d'", "bool": "true"}[kind],
                   "add volatile": {"int": "(random() * 100)::int",
                                    "text": "left(md5(random()::text), 8)",
                                    "bool": "random() < 0.5"}[kind],
                   "add null": None}[choice]
        not_null = False  # see above
        conn.execute(sql.SQL("ALTER TABLE t ADD COLUMN {} {}{}{}").format(
            sql.Identifier(name), sql.SQL(pg_type),
            sql.SQL("") if default is None else sql.SQL(" DEFAULT ") + sql.SQL(default),
            sql.SQL(" NOT NULL") if not_null else sql.SQL("")))
        t.columns[name] = (kind, not_null)
        return None
    if choice == "widen":
        texts = [c for c, (k, _) in t.columns.items() if k == "text" and c != "a"]
        ints = [c for c, (k, _) in t.columns.items() if k == "int"]
        col = rng.choice(texts + ints) if texts + ints else None
        if col is None:
            return None
        wider = "text" if t.columns[col][0] == "text" else "bigint"
        conn.execute(sql.SQL("ALTER TABLE t ALTER COLUMN {} TYPE {}").format(
            sql.Identifier(col), sql.SQL(wider)))
        return None
    if choice == "drop not null":
        nn = [c for c, (_, n) in t.columns.items() if n and c != "a"]
        if nn:
            col = rng.choice(nn)
            conn.execute(sql.SQL("ALTER TABLE t ALTER COLUMN {} DROP NOT NULL").format(
                sql.Identifier(col)))
            t.columns[col] = (t.columns[col][0], False)
        return None
    droppable = [c for c in t.columns if c != "a"]
    if not droppable:
        return None
    col = rng.choice(droppable)
    if choice == "drop":
        conn.execute(sql.SQL("ALTER TABLE t DROP COLUMN {}").format(sql.Identifier(col)))
        del t.columns[col]
        return "destructive"
    if t.columns[col][0] != "int":
        return None
    conn.execute(sql.SQL("ALTER TABLE t ALTER COLUMN {} TYPE text USING {}::text || 'x'").format(
        sql.Identifier(col), sql.Identifier(col)))
    t.columns[col] = ("text", t.columns[col][1])
    return "destructive"


def types(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid "
            "= 't'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall())


def source_rows(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return sorted(r[0] for r in conn.execute("SELECT to_jsonb(t)::text FROM t").fetchall())


@pytest.fixture
def applier_for(stack: Stack, migration_id: str) -> Iterator[Callable[[MigrationSpec], None]]:
    running: list[tuple[Applier, threading.Thread, MigrationSpec]] = []

    def start(spec: MigrationSpec) -> None:
        capture.prepare_source(spec, migration_id)
        capture.prepare_target_schema(spec)
        capture.ensure_connector(spec, migration_id, timeout=120)
        applier = Applier(spec, migration_id, metrics_enabled=False)
        th = threading.Thread(target=applier.run, daemon=True)
        th.start()
        running.append((applier, th, spec))

    yield start
    for applier, th, spec in running:
        applier.stop()
        th.join(30)
        capture.teardown(spec, migration_id, delete_topics=True)


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(1)


@pytest.mark.parametrize("seed", seeds())
@pytest.mark.parametrize("target", ["postgres", "mongodb"])
def test_random_schema_changes_land_exactly(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, mongo_db: str,
        migration_id: str, applier_for: Callable[[MigrationSpec], None], target: str,
        seed: int) -> None:
    rng = random.Random(seed)
    t = Table()
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text NOT NULL, n int, v varchar(8))")
        for _ in range(100):
            dml(conn, rng, t)
    endpoint = target_db if target == "postgres" else mongo_endpoint(stack, mongo_db)
    spec = make_spec(source_db, endpoint, ["public.t"], stack)
    applier_for(spec)

    def landed(key: int) -> bool:
        if target == "postgres":
            with psycopg.connect(target_db.dsn) as conn:
                return conn.execute("SELECT 1 FROM t WHERE id = %s", [key]).fetchone() is not None
        from pymongo import MongoClient

        with MongoClient(stack.address("ferretdb")) as client:
            return client[mongo_db]["t"].find_one({"_id": key}) is not None

    changes: list[str] = []
    with psycopg.connect(source_db.dsn, autocommit=True) as conn:
        for _ in range(400):
            if rng.random() > 0.04:
                dml(conn, rng, t)
                continue
            kind = ddl(conn, rng, t)
            changes.append(f"{time.time():.1f} {kind or 'additive'}: {sorted(t.columns)}")
            if kind != "destructive":
                continue
            # a whole row written after the change: the applier meets the change there — and
            # stops, unless the target never had the column (no event carried it yet)
            key = dml(conn, rng, t, insert=True)
            wait(lambda k=key: "public.t" in stopped_tables(history(spec, migration_id))
                 or landed(k), 90,
                 f"the table stops at a destructive change (seed {seed}, {changes[-1]})")
            if not landed(key):
                got = resume(spec, migration_id, "public.t", accept=True, wait_seconds=60)
                changes.append(f"{time.time():.1f} accepted {got.removed} {got.continued}")
            else:
                changes.append(f"{time.time():.1f} landed without a stop")
                assert "public.t" not in stopped_tables(history(spec, migration_id)), \
                    changes[-1]
    expected = source_rows(source_db.dsn)
    if target == "postgres":
        try:
            wait(lambda: source_rows(target_db.dsn) == expected, 120, "target equals source")
        except BaseException:
            got = source_rows(target_db.dsn)
            pytest.fail(f"target differs (seed {seed}; changes {changes}; source "
                        f"{types(source_db.dsn)}, target {types(target_db.dsn)}; only on the "
                        f"source {sorted(set(expected) - set(got))[:3]}, only on the target "
                        f"{sorted(set(got) - set(expected))[:3]})")
    else:
        from pymongo import MongoClient

        client: Any = MongoClient(stack.address("ferretdb"))
        import json

        want = {d["id"]: {k: v for k, v in d.items() if k != "id"}
                for d in map(json.loads, expected)}
        try:
            def docs() -> dict[int, dict[str, Any]]:
                return {d.pop("_id"): d for d in client[mongo_db]["t"].find()}
            try:
                wait(lambda: docs() == want, 120, "documents equal the source's rows")
            except BaseException:
                got_docs = docs()
                differ = [(k, want.get(k), got_docs.get(k)) for k in sorted(
                    set(want) | set(got_docs)) if want.get(k) != got_docs.get(k)]
                pytest.fail(f"documents differ (seed {seed}; changes {changes}; "
                            f"{len(differ)} rows, first: {differ[:3]})")
        finally:
            client.close()
    found = positions.read(spec, migration_id).get("*")
    assert found is None or found.dlq_events == 0, "nothing dead-lettered"
    assert all(r.outcome != STOPPED or r.table == "public.t" for r in history(spec, migration_id))


def history(spec: MigrationSpec, migration_id: str) -> list[Any]:
    with engine_for(spec).session("test") as session:
        return session.schema_changes(migration_id)
