"""Faults that strike the pipeline itself, run as a user runs it (`migwatch run`, a process, on
the stack's Prefect server):

- the pipeline's process killed in the middle of its migrate stage, and the same command run
  again with the same migration id: it resumes — the connector, its slot and the applier are
  reused, the snapshot is not taken twice (each source row has exactly one snapshot event on
  Kafka) — and ends GO;
- the Prefect server down for 30 s while the pipeline runs: the applier, which needs no Prefect,
  keeps applying the source's writes meanwhile; the pipeline rides through or fails, and run
  again it ends GO.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
import yaml
from kafka import KafkaConsumer
from psycopg import sql

from migwatch import capture, names, processes, runs, workload
from migwatch.config import MigrationSpec
from migwatch.errors import MigwatchError
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec
from tests.reliability.conftest import write_through

MIGWATCH = str(Path(sys.executable).parent / "migwatch")
SHOP = list(workload.SHOP_TABLES)
FAST = {"monitor": {"poll_interval_seconds": 1, "consecutive_polls": 3, "window_size": 6,
                    "timeout_seconds": 300},
        "snapshot": {"poll_interval_seconds": 1}}


@pytest.fixture
def pipeline(stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
             tmp_path: Path) -> Iterator[tuple[MigrationSpec, Path, dict[str, str]]]:
    spec = make_spec(source_db, target_db, SHOP, stack, **FAST)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(orjson.loads(spec.model_dump_json(exclude_none=True))))
    env = {**os.environ, "PREFECT_API_URL": stack.address("prefect-server"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    yield spec, path, env
    stack.up()
    processes.stop_applier(migration_id)
    deadline = time.monotonic() + 30
    while processes.applier_members(spec, migration_id) and time.monotonic() < deadline:
        time.sleep(1)
    capture.teardown(spec, migration_id, delete_topics=True)


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(*t.split(".")))).fetchone()[0]) for t in SHOP}  # type: ignore[index]


def stage_begun(migration_id: str, stage: str) -> bool:
    try:
        return stage in runs.load(migration_id).stages
    except MigwatchError:
        return False


def snapshot_events(stack: Stack, migration_id: str) -> dict[str, int]:
    """Per table, how many snapshot (op r) events its topic holds."""
    topics = {names.table_topic(migration_id, t): t for t in SHOP}
    consumer = KafkaConsumer(*topics, bootstrap_servers=stack.address("kafka"), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    out = dict.fromkeys(SHOP, 0)
    try:
        for r in consumer:
            if r.value and orjson.loads(r.value)["payload"].get("op") == "r":
                out[topics[r.topic]] += 1
    finally:
        consumer.close()
    return out


def run(path: Path, migration_id: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([MIGWATCH, "run", str(path), "--migration-id", migration_id],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def test_a_pipeline_killed_mid_migrate_resumes_when_run_again(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        pipeline: tuple[MigrationSpec, Path, dict[str, str]]) -> None:
    spec, path, env = pipeline
    workload.init(source_db.dsn, 20000)
    rows = counts(source_db.dsn)
    first = run(path, migration_id, env)
    deadline = time.monotonic() + 180
    while not (processes.applier_running(spec, migration_id)
               and sum(counts(target_db.dsn).values()) > 0):
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-3000:]  # type: ignore[union-attr]
        time.sleep(0.5)
    assert not stage_begun(migration_id, "validate"), "too late: migrate had ended"
    os.killpg(first.pid, signal.SIGKILL)  # the pipeline's process, nothing else
    first.wait(30)
    applier = processes.applier_pid(migration_id)
    assert applier is not None, "the applier went with the pipeline"

    again = run(path, migration_id, env)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-4000:]
    assert "GO" in out
    assert processes.applier_pid(migration_id) == applier  # reused, not started again
    assert counts(target_db.dsn) == counts(source_db.dsn) == rows
    assert snapshot_events(stack, migration_id) == rows  # the snapshot was taken once


def test_the_prefect_server_away_for_30_seconds(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        pipeline: tuple[MigrationSpec, Path, dict[str, str]]) -> None:
    spec, path, env = pipeline
    workload.init(source_db.dsn, 2000)
    first = run(path, migration_id, env)
    deadline = time.monotonic() + 180
    while not stage_begun(migration_id, "validate"):
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-3000:]  # type: ignore[union-attr]
        time.sleep(0.5)
    before = counts(target_db.dsn)
    assert stack.down(("prefect-server",)) == ["prefect-server"]
    writer = threading.Thread(target=write_through, args=(source_db.dsn, 100, 1500))
    writer.start()
    writer.join()
    applied_while_away = counts(target_db.dsn)
    time.sleep(max(0.0, 30 - 15))
    stack.up(("prefect-server",))
    out, _ = first.communicate(timeout=600)
    print(f"\nFAULT prefect-down-30s: first run exit {first.returncode}")
    assert applied_while_away != before, "the applier stopped with the Prefect server"
    if first.returncode != 0:  # it did not ride through: run again, it resumes
        again = run(path, migration_id, env)
        out, _ = again.communicate(timeout=600)
        assert again.returncode == 0, out[-4000:]
    assert "GO" in out
    assert counts(target_db.dsn) == counts(source_db.dsn)
