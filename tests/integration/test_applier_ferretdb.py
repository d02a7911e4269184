"""The applier on FerretDB 1.x, which holds one SQLite connection per matched statement of a write
command until the command ends (its pool has 100): a batch updating hundreds of existing
documents must reach the server in smaller commands, or the server waits forever."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from migwatch import capture
from migwatch.applier import Applier
from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from migwatch.targets.mongo.writer import FERRETDB_WRITE_CHUNK
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
