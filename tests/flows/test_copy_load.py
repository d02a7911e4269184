"""The initial load by COPY (`snapshot.method: copy`) on the real stack, with the source
written to during the load: after catch-up both sides are equal by an independent comparison
(count and md5 of every row's text, plain SQL); a load killed mid-way resumes and ends equal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from psycopg import sql

from flows.pipeline import migration_pipeline
from migwatch import capture, processes, workload
from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.flows.test_cdc_apply_flow import write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")

SHOP = list(workload.SHOP_TABLES)
FAST = {
    "connect": {"heartbeat_interval_ms": 500},
    "monitor": {"poll_interval_seconds": 1, "consecutive_polls": 3, "window_size": 6,
                "timeout_seconds": 300},
}


def md5s(dsn: str) -> dict[str, tuple[int, str]]:
    out = {}
    with psycopg.connect(dsn) as conn:
        for t in SHOP:
            row = conn.execute(sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(md5(x::text), '' ORDER BY "
                "md5(x::text)), '')) FROM {} x").format(sql.Identifier(*t.split(".")))
            ).fetchone()
            assert row is not None
            out[t] = (int(row[0]), str(row[1]))
    return out


class Writer(threading.Thread):
    def __init__(self, dsn: str, rate: float = 100) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.rate = rate
        self.halt = threading.Event()
        self.ops = 0

    def run(self) -> None:
        seed = 0
        while not self.halt.is_set():
            seed += 1
            self.ops += workload.run(self.dsn, rate=self.rate, duration=1, seed=seed).total


@pytest.fixture
def cleanup(migration_id: str) -> Iterator[list[MigrationSpec]]:
    specs: list[MigrationSpec] = []
    yield specs
    processes.stop_applier(migration_id)
    for spec in specs:
        capture.teardown(spec, migration_id, delete_topics=True, timeout=90)


def caught_up_equal(source: str, target: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and md5s(source) != md5s(target):
        time.sleep(1)
    assert md5s(target) == md5s(source)


def test_a_copy_load_with_writes_during_it_ends_equal(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    workload.init(source_db.dsn, 20_000)
    spec = make_spec(source_db, target_db, SHOP, stack, **FAST,
                     snapshot={"method": "copy", "poll_interval_seconds": 1})
    cleanup.append(spec)
    spec_path = write_spec(spec, tmp_path / "spec.yaml")
    writer = Writer(source_db.dsn)
    writer.start()
    summary = migration_pipeline(spec_path, migration_id)
    writer.halt.set()
    writer.join(30)
    assert summary["go"], summary["reasons"]
    assert writer.ops > 0
    caught_up_equal(source_db.dsn, target_db.dsn)
    # the progress artifact ends full, the per-table artifact lists every table
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(like_=f"load-{migration_id}")))}
    assert found[f"load-{migration_id}"].data == 100.0
    assert "rows in" in (found[f"load-{migration_id}"].description or "")
    listed = found[f"load-{migration_id}-tables"].data
    assert len(json.loads(listed) if isinstance(listed, str) else listed) == len(SHOP)
    # Debezium streamed only: no snapshot of its own, its slot is the one the load made
    with psycopg.connect(stack.pg_dsn("source", source_db.name)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s",
                            [source_db.name]).fetchone()[0] == 1  # type: ignore[index]


def test_a_load_into_mongodb_with_writes_during_it_ends_equal(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    from pymongo import MongoClient

    workload.init(source_db.dsn, 5_000)
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), SHOP, stack, **FAST,
                     snapshot={"method": "copy", "poll_interval_seconds": 1,
                               "split_rows": 1000})  # orders and order_items as key ranges
    cleanup.append(spec)
    spec_path = write_spec(spec, tmp_path / "spec.yaml")
    writer = Writer(source_db.dsn, rate=20)  # FerretDB (SQLite) applies ~50 changes/s here
    writer.start()
    summary = migration_pipeline(spec_path, migration_id)
    writer.halt.set()
    writer.join(30)
    assert summary["go"], summary["reasons"]  # migwatch's validator: documents equal
    # independently: every source key is a document, and nothing else is
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    try:
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(source_db.dsn) as conn:
                ids = {int(r[0]) for r in conn.execute("SELECT id FROM public.orders")}
            docs = {int(d["_id"]) for d in client[mongo_db]["orders"].find({}, {"_id": 1})}
            if docs == ids or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        client.close()
    assert docs == ids


def _progress(key: str) -> list[float]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))
    return [float(a.data) for a in found if isinstance(a.data, int | float)]


def _done(target_dsn: str, migration_id: str) -> tuple[int, int, int]:
    """(tables loaded, ranges loaded, ranges planned) as the target records them."""
    with psycopg.connect(target_dsn) as conn:
        exists = conn.execute("SELECT to_regclass('migwatch.applied_position'), "
                              "to_regclass('migwatch.load_ranges')").fetchone()
        if not exists or not exists[0] or not exists[1]:
            return 0, 0, 0
        tables = conn.execute("SELECT count(*) FROM migwatch.applied_position "
                              "WHERE migration_id = %s AND snapshot_done",
                              [migration_id]).fetchone()
        ranges = conn.execute("SELECT count(*) FILTER (WHERE done), count(*) FROM "
                              "migwatch.load_ranges WHERE migration_id = %s",
                              [migration_id]).fetchone()
    assert tables is not None and ranges is not None
    return int(tables[0]), int(ranges[0]), int(ranges[1])


def test_a_copy_load_killed_midway_resumes_and_ends_equal(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    """Killed with a table loaded, and the biggest one (split into key ranges) part-way: the
    resumed load keeps what was recorded — the tables and the ranges — copies the rest from
    a new snapshot, and the slot's replay ends it equal."""
    workload.init(source_db.dsn, 200_000)  # order_items 100,000 rows: 10 ranges; orders 6
    spec = make_spec(source_db, target_db, SHOP, stack, **FAST,
                     snapshot={"method": "copy", "copy_workers": 1, "split_rows": 10_000,
                               "poll_interval_seconds": 1})
    cleanup.append(spec)
    spec_path = write_spec(spec, tmp_path / "spec.yaml")
    writer = Writer(source_db.dsn)
    writer.start()
    from prefect.settings import PREFECT_API_URL

    cli = [".venv/bin/migwatch", "run", spec_path, "--migration-id", migration_id]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True,  # the test's Prefect API: its artifacts
                            env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())})
    deadline = time.monotonic() + 180
    done = (0, 0, 0)
    shown: list[float] = []  # the progress artifact as the UI reads it while the load runs
    while time.monotonic() < deadline and proc.poll() is None:
        done = _done(target_db.dsn, migration_id)
        if done[1] >= 3:  # biggest first: some of order_items' ranges are in
            break
        shown += _progress(f"load-{migration_id}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    tables, ranges, planned = _done(target_db.dsn, migration_id)
    assert tables < len(SHOP) and 3 <= ranges < planned, (tables, ranges, planned)
    assert shown and shown == sorted(shown) and shown[-1] < 100, shown  # never moved back
    with psycopg.connect(stack.pg_dsn("source", source_db.name)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s",
                            [source_db.name]).fetchone()[0] == 1  # type: ignore[index]
    with psycopg.connect(target_db.dsn) as conn:
        kept = {(r[0], r[1]): r[2] for r in conn.execute(
            "SELECT table_name, range_no, rows FROM migwatch.load_ranges "
            "WHERE migration_id = %s AND done",
            [migration_id])}

    summary = migration_pipeline(spec_path, migration_id)
    writer.halt.set()
    writer.join(30)
    assert summary["go"], summary["reasons"]
    caught_up_equal(source_db.dsn, target_db.dsn)
    with psycopg.connect(target_db.dsn) as conn:  # the ranges loaded before were not again
        after = {(r[0], r[1]): r[2] for r in conn.execute(
            "SELECT table_name, range_no, rows FROM migwatch.load_ranges "
            "WHERE migration_id = %s AND done",
            [migration_id])}
    assert len(after) == planned and all(after[n] == rows for n, rows in kept.items())


def test_a_load_into_mongodb_killed_midway_resumes_and_ends_equal(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str,
        cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    """On MongoDB a range's inserts are not one transaction: the range cut off is loaded
    again by key (replacing what it had inserted), and the replay deletes what the source
    deleted since — every source key a document, nothing else."""
    from pymongo import MongoClient

    workload.init(source_db.dsn, 20_000)  # order_items 10,000, orders 6,000 rows: 16 ranges
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), SHOP, stack, **FAST,
                     snapshot={"method": "copy", "copy_workers": 1, "split_rows": 1000,
                               "poll_interval_seconds": 1})
    cleanup.append(spec)
    spec_path = write_spec(spec, tmp_path / "spec.yaml")
    writer = Writer(source_db.dsn, rate=20)
    writer.start()
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    ranges = client[mongo_db]["migwatch_load_ranges"]
    try:
        proc = subprocess.Popen([".venv/bin/migwatch", "run", spec_path, "--migration-id",
                                 migration_id], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if ranges.count_documents({"done": True}) >= 3:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        done, planned = ranges.count_documents({"done": True}), ranges.count_documents({})
        assert 3 <= done < planned, (done, planned)

        summary = migration_pipeline(spec_path, migration_id)
        writer.halt.set()
        writer.join(30)
        assert summary["go"], summary["reasons"]
        for table, key in (("orders", "id"), ("order_items", "order_id, line_no")):
            deadline = time.monotonic() + 60
            while True:
                with psycopg.connect(source_db.dsn) as conn:
                    ids = {tuple(r) for r in conn.execute(sql.SQL("SELECT {} FROM {}").format(
                        sql.SQL(key), sql.Identifier("public", table)))}
                docs = {tuple(d["_id"].values()) if isinstance(d["_id"], dict) else (d["_id"],)
                        for d in client[mongo_db][table].find({}, {"_id": 1})}
                if docs == ids or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert docs == ids, table
    finally:
        client.close()
