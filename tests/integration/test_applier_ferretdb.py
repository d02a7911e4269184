"""The applier on FerretDB 1.x, which holds one SQLite connection per matched statement of a write
command until the command ends (its pool has 100): a batch updating hundreds of existing
documents must reach the server in smaller commands, or the server waits forever. And the
writer against a unique index: rows swapping a unique value in one batch land (re-applied in
source order where the collapsed write collides), a real collision is an error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from migwatch import capture
from migwatch.applier import Applier
from migwatch.batches import Batch, Change
from migwatch.config import MigrationSpec
from migwatch.connectors.postgres import Column, TableInfo
from migwatch.decoding import UNCHANGED
from migwatch.errors import PermanentError
from migwatch.stack import Stack
from migwatch.targets.mongo.writer import FERRETDB_WRITE_CHUNK, MongoWriter
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.integration.monitor_helpers import wait_for

ROWS = 300  # several times the server's pool, in one source transaction


@pytest.fixture
def spec(stack: Stack, source_db: PgDatabase, mongo_db: str,
         migration_id: str) -> Iterator[MigrationSpec]:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.items (id bigint PRIMARY KEY, v int NOT NULL)")
        conn.execute("INSERT INTO public.items SELECT g, 0 FROM generate_series(1, %s) g",
                     [ROWS])
    s = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.items"], stack,
                  connect={"heartbeat_interval_ms": 500})
    capture.prepare_source(s, migration_id)
    capture.ensure_connector(s, migration_id, timeout=120)
    yield s
    capture.teardown(s, migration_id, delete_topics=True, timeout=90)


def test_hundreds_of_updates_in_one_batch_reach_ferretdb(
        stack: Stack, spec: MigrationSpec, source_db: PgDatabase, mongo_db: str,
        migration_id: str) -> None:
    assert FERRETDB_WRITE_CHUNK < 100
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"), socketTimeoutMS=30_000)
    coll = client[mongo_db]["items"]
    applier = Applier(spec, migration_id, batch_size=5000, max_wait_ms=2000)
    thread = threading.Thread(target=applier.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: coll.count_documents({}) == ROWS, 120, "snapshot on the target")
        with source_db.connect() as conn:  # every row updated at once: one large batch
            conn.execute("UPDATE public.items SET v = 1")
        wait_for(lambda: coll.count_documents({"v": 1}) == ROWS, 120,
                 "every update applied")
        assert client.admin.command("ping")["ok"] == 1  # and the server still answers
    finally:
        applier.stop()
        thread.join(60)
        client.close()
    assert not thread.is_alive() and applier.stats.dlq == 0


CODES = TableInfo("public", "codes", (Column("id", "integer", True), Column("code", "text", True),
                                      Column("note", "text", False)), ("id",))


@pytest.fixture(params=["bulk", "delete-insert"])
def unique_writer(request: pytest.FixtureRequest, stack: Stack, source_db: PgDatabase,
                  mongo_db: str, migration_id: str) -> Iterator[tuple[MongoWriter, Any]]:
    """A writer for `codes`, whose collection holds rows 1..4 (code cN, note nN) and a unique
    index on `code`; "bulk": the ordered replace-by-`_id` writes a real MongoDB gets,
    "delete-insert": FerretDB's (see MongoWriter)."""
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.codes"], stack)
    writer = MongoWriter(spec, migration_id, {"public.codes": CODES}, list(spec.tables))
    assert writer.chunk == FERRETDB_WRITE_CHUNK  # the stack's server is FerretDB
    if request.param == "bulk":
        writer.chunk = None
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"), socketTimeoutMS=30_000)
    coll = client[mongo_db]["codes"]
    coll.insert_many([{"_id": i, "code": f"c{i}", "note": f"n{i}"} for i in range(1, 5)])
    coll.create_index([("code", 1)], unique=True, name="codes_code_key")
    try:
        yield writer, coll
    finally:
        writer.close()
        client.close()


def batch_of(writer: MongoWriter, *changes: tuple[int, str | None]) -> Batch:
    """Changes of `codes` in this order: (id, new code) an update whose note the event left
    out (an unchanged TOASTed value), (id, None) a delete."""
    table = writer.tables["public.codes"]
    batch = Batch()
    for key, code in changes:
        row = None if code is None else writer.target_row(
            "public.codes", "u", (key,), {"id": key, "code": code, "note": UNCHANGED}, None)
        batch.add(Change(table, "u" if row is not None else "d", (key,), row, 1, None, "false"))
    return batch


def test_rows_swapping_a_unique_value_in_one_batch_land_as_the_source_left_them(
        unique_writer: tuple[MongoWriter, Any]) -> None:
    writer, coll = unique_writer
    # 1 and 2 swap through a third value, 3 and 4 too, 4 then leaves, 2 goes and comes back
    # — as the source's non-deferrable index let one statement after another do it
    writer.apply(batch_of(writer, (1, "tmp"), (2, "c1"), (1, "c2"),
                          (3, "tmp"), (4, "c3"), (3, "c4"), (4, None), (2, None), (2, "c1")))
    assert {d["_id"]: (d["code"], d["note"]) for d in coll.find()} == {
        1: ("c2", "n1"), 2: ("c1", "n2"), 3: ("c4", "n3")}
    assert "codes_code_key" in coll.index_information()


def test_rows_the_collapsed_write_got_to_first_do_not_stand_in_the_way(
        unique_writer: tuple[MongoWriter, Any]) -> None:
    """The collapsed write lands 1 and 2 at their last codes, then collides on 3; in source
    order 1 held "v" before 2 did — applied from where the collapsed write stopped, 1 taking
    "v" again would collide with 2's last code."""
    writer, coll = unique_writer
    writer.apply(batch_of(writer, (1, "r0"), (1, "v"), (1, "r"), (2, "v"),
                          (3, "tmp"), (4, "c3"), (3, "c4")))
    assert {d["_id"]: (d["code"], d["note"]) for d in coll.find()} == {
        1: ("r", "n1"), 2: ("v", "n2"), 3: ("c4", "n3"), 4: ("c3", "n4")}


def test_a_real_collision_stays_an_error(unique_writer: tuple[MongoWriter, Any]) -> None:
    writer, coll = unique_writer
    with pytest.raises(PermanentError):  # 3 keeps c3: no order of this batch lands
        writer.apply(batch_of(writer, (1, "c9"), (2, "c3")))
    docs = {d["_id"]: d["code"] for d in coll.find()}
    assert docs[1] == "c9" and docs[3] == "c3" and docs.get(2) != "c3"
