"""The CDC applier on the real stack: snapshot + streamed changes end with target == source,
checked by independent queries (never by the applier's own counters)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml
from bson import Binary, Decimal128
from kafka import KafkaConsumer, KafkaProducer
from psycopg import sql
from pymongo import MongoClient

from migwatch import capture, metrics, names, processes, runs, workload
from migwatch.applier import Applier
from migwatch.config import MigrationSpec
from migwatch.connectors import postgres as pg
from migwatch.stack import Stack
from migwatch.targets.mongo.values import supports_decimal128
from tests.conftest import PgDatabase, make_spec, mongo_endpoint

SHOP = list(workload.SHOP_TABLES)


def pg_digest(dsn: str, table: str) -> tuple[int, str]:
    """Row count and md5 over every column of every row in key order (text form)."""
    schema, name = table.split(".")
    with psycopg.connect(dsn) as conn:
        info = pg.describe_table(conn, schema, name)
        assert info is not None, table
        order = sql.SQL(", ").join(sql.Identifier(k) for k in info.primary_key)
        row = conn.execute(sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {}), '')) FROM {} t"
        ).format(order, info.ident)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def pg_differences(source: PgDatabase, target: PgDatabase, tables: list[str]) -> list[str]:
    return [t for t in tables if pg_digest(source.dsn, t) != pg_digest(target.dsn, t)]


def wait_until(check: Callable[[], list[str]], timeout: float, what: str,
               detail: Callable[[], str] = str) -> None:
    """Poll `check` until it names nothing left; fail naming what is left (and `detail()`)."""
    deadline = time.monotonic() + timeout
    left: list[str] = []
    while time.monotonic() < deadline:
        left = check()
        if not left:
            return
        time.sleep(1.5)
    raise AssertionError(f"{what}: still different after {timeout:.0f}s: {left}{detail()}")


@pytest.fixture
def cdc(
    stack: Stack, source_db: PgDatabase, migration_id: str
) -> Iterator[Callable[..., MigrationSpec]]:
    """Build the workload, a spec for a given target, and a running connector; tear it down."""
    made: list[MigrationSpec] = []

    def start(target: PgDatabase | dict[str, Any], size: int = 3000,
              tables: list[str] | None = None, **extra: Any) -> MigrationSpec:
        workload.init(source_db.dsn, size)
        spec = make_spec(source_db, target, tables or SHOP, stack, **extra)
        made.append(spec)
        capture.prepare_source(spec, migration_id)
        capture.prepare_target_schema(spec)
        capture.ensure_connector(spec, migration_id, timeout=120)
        return spec

    yield start
    for spec in made:
        processes.stop_applier(migration_id)
        capture.teardown(spec, migration_id, delete_topics=True)


def run_in_thread(applier: Applier) -> threading.Thread:
    th = threading.Thread(target=applier.run, daemon=True)
    th.start()
    return th


def test_postgres_target_equals_source_after_snapshot_and_2000_changes(
        cdc: Callable[..., MigrationSpec], source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> None:
    spec = cdc(target_db)
    before = metrics.REGISTRY.get_sample_value(
        "migration_rows_total", {"migration_id": migration_id, "table_name": "public.orders"}) or 0
    applier = Applier(spec, migration_id)
    th = run_in_thread(applier)
    try:
        done = workload.run(source_db.dsn, rate=600, duration=30, max_operations=2100)
        assert done.total >= 2000 and done.operations["pk_change:order_items"] > 0
        wait_until(lambda: pg_differences(source_db, target_db, SHOP), 120, "target vs source")
    finally:
        applier.stop()
        th.join(30)
    assert not th.is_alive()
    after = metrics.REGISTRY.get_sample_value(
        "migration_rows_total", {"migration_id": migration_id, "table_name": "public.orders"})
    assert after is not None and after > before
    with target_db.connect() as conn:
        pos = conn.execute(
            "SELECT source_ts_ms, lsn, snapshot_done FROM migwatch.applied_position "
            "WHERE migration_id = %s AND table_name = '*'", [migration_id]).fetchone()
    assert pos is not None and pos[0] > 0 and pos[1] > 0 and pos[2] is True


def _norm(v: Any) -> Any:
    """One comparable form for a source value and a MongoDB value (independent of the mapping)."""
    if isinstance(v, Decimal128):
        v = v.to_decimal()
    if isinstance(v, Decimal):
        return v.normalize()
    if isinstance(v, float):
        return Decimal(repr(v)).normalize()
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        v = v.astimezone(dt.UTC)
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    if isinstance(v, Binary | bytes | memoryview):
        return bytes(v)
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def mongo_differences(source: PgDatabase, client: MongoClient, database: str,
                      tables: list[str]) -> list[str]:
    bad = []
    with psycopg.connect(source.dsn) as conn:
        for table in tables:
            schema, name = table.split(".")
            info = pg.describe_table(conn, schema, name)
            assert info is not None
            cur = conn.execute(sql.SQL("SELECT * FROM {}").format(info.ident))
            cols = [d.name for d in cur.description or []]
            expected = {}
            for row in cur.fetchall():
                rec = dict(zip(cols, row, strict=True))
                pk = info.primary_key
                key = rec[pk[0]] if len(pk) == 1 else tuple(rec[k] for k in pk)
                expected[key] = {k: _norm(v) for k, v in rec.items() if k not in pk}
            # a server without Decimal128 holds numerics as exact decimal text
            numeric = {c.name for c in info.columns if c.type.startswith("numeric")}
            got = {}
            for doc in client[database][name].find():
                _id = doc.pop("_id")
                key = _id if not isinstance(_id, dict) else tuple(_id[k] for k in info.primary_key)
                got[key] = {k: _norm(Decimal(v) if k in numeric and isinstance(v, str) else v)
                            for k, v in doc.items()}
            if expected != got:
                bad.append(table)
    return bad


def test_mongodb_target_equals_source(cdc: Callable[..., MigrationSpec], stack: Stack,
                                      source_db: PgDatabase, mongo_db: str,
                                      migration_id: str) -> None:
    spec = cdc(mongo_endpoint(stack, mongo_db), size=1500)
    applier = Applier(spec, migration_id)
    th = run_in_thread(applier)
    client: MongoClient = MongoClient(stack.address("ferretdb"))
    try:
        done = workload.run(source_db.dsn, rate=600, duration=30, max_operations=2000)
        assert done.total >= 2000
        wait_until(lambda: mongo_differences(source_db, client, mongo_db, SHOP), 150,
                   "mongo target vs source")
        customer = client[mongo_db]["customers"].find_one({"profile": {"$ne": None}})
        assert isinstance(customer["profile"], dict)  # jsonb became an embedded document
        item = client[mongo_db]["order_items"].find_one()
        assert set(item["_id"]) == {"order_id", "line_no"}  # composite key: embedded _id
        product = client[mongo_db]["products"].find_one({"_id": "SKU-0000001"})
        if supports_decimal128(client.admin.command("buildInfo")):
            assert isinstance(product["price"], Decimal128)
        else:  # FerretDB 1.x has no Decimal128: the exact decimal text, never a float
            assert isinstance(product["price"], str)
            with psycopg.connect(source_db.dsn) as conn:
                price = conn.execute("SELECT price::text FROM products WHERE sku = 'SKU-0000001'"
                                     ).fetchone()
            assert price is not None and product["price"] == price[0]  # scale kept, e.g. '4.10'
    finally:
        applier.stop()
        th.join(30)
        client.close()
    assert applier.stats.dlq == 0


def _dlq_records(stack: Stack, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=stack.address("kafka"),
                             auto_offset_reset="earliest", consumer_timeout_ms=int(timeout * 1000))
    out = []
    for rec in consumer:
        out.append(rec)
        if len(out) >= expected:
            break
    consumer.close()
    return out


def test_poison_messages_go_to_the_dlq_and_the_rest_keeps_flowing(
        cdc: Callable[..., MigrationSpec], stack: Stack, source_db: PgDatabase,
        target_db: PgDatabase, migration_id: str) -> None:
    spec = cdc(target_db, size=600)
    # the target lacks one table: its valid events cannot be applied
    with target_db.connect() as conn:
        conn.execute('DROP TABLE public."ProductReviews"')
    producer = KafkaProducer(bootstrap_servers=stack.address("kafka"))
    producer.send(names.table_topic(migration_id, "public.customers"), b"{not json", key=b"x")
    producer.flush()
    producer.close()
    applier = Applier(spec, migration_id)
    th = run_in_thread(applier)
    try:
        workload.run(source_db.dsn, rate=300, duration=20, max_operations=300)
        others = [t for t in SHOP if t != "public.ProductReviews"]
        wait_until(lambda: pg_differences(source_db, target_db, others), 120, "other tables")
    finally:
        applier.stop()
        th.join(30)
    records = _dlq_records(stack, spec.dlq_topic(migration_id), expected=applier.stats.dlq)
    reasons = {dict(r.headers)["migwatch.reason"].decode() for r in records}
    assert "invalid_json" in reasons and "apply_failed" in reasons
    failed = [r for r in records if dict(r.headers)["migwatch.reason"] == b"apply_failed"]
    assert all(r.topic == spec.dlq_topic(migration_id) for r in records)
    assert all(
        dict(r.headers)["migwatch.topic"].decode().endswith("ProductReviews") for r in failed
    )
    # 600-row workload gives ProductReviews 48 snapshot rows plus the streamed ones
    assert len(failed) >= 48
    assert metrics.REGISTRY.get_sample_value(
        "migwatch_dlq_events_total", {"migration_id": migration_id, "reason": "invalid_json"}) == 1


def test_applier_killed_mid_stream_resumes_without_loss_or_duplicates(
        cdc: Callable[..., MigrationSpec], stack: Stack, source_db: PgDatabase,
        target_db: PgDatabase, migration_id: str, tmp_path: Path) -> None:
    spec = cdc(target_db, size=2000)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(orjson.loads(spec.model_dump_json(exclude_none=True))))
    supervisor = processes.start_applier(spec_file, migration_id)
    processes.wait_applier_running(spec, migration_id, timeout=90)
    worker = processes.applier_worker_pid(migration_id)
    assert worker is not None and worker != supervisor
    writer = threading.Thread(target=workload.run, args=(source_db.dsn,),
                              kwargs={"rate": 300, "duration": 60, "max_operations": 2400})
    writer.start()
    time.sleep(4)
    os.kill(worker, signal.SIGKILL)  # no chance to commit anything; nobody restarts it by hand
    wait_until(lambda: [] if processes.applier_worker_pid(migration_id) not in (None, worker)
               else ["no new worker"], 60, "the supervisor starting the applier again")
    assert processes.applier_pid(migration_id) == supervisor
    writer.join()
    wait_until(lambda: pg_differences(source_db, target_db, SHOP), 150, "after restart")
    assert "applier died (killed by signal 9); starting it again" in \
        (processes.run_dir(migration_id) / "applier.log").read_text()
    # graceful stop: SIGTERM finishes the batch, commits and exits
    assert processes.stop_applier(migration_id, timeout=60)
    log = (processes.run_dir(migration_id) / "applier.log").read_text()
    assert "stopped after" in log, log[-2000:]
    assert processes.applier_pid(migration_id) is None
    assert processes.applier_worker_pid(migration_id) is None
    with target_db.connect() as conn:
        dupes = conn.execute(
            "SELECT count(*) - count(DISTINCT (order_id, line_no)) FROM order_items").fetchone()
        stored = dict(conn.execute(
            "SELECT topic, next_offset FROM migwatch.applied_offsets WHERE migration_id = %s "
            "AND partition = 0", [migration_id]).fetchall())
    assert dupes == (0,)
    assert stored  # offsets live on the target, written with the data they cover
    consumer = KafkaConsumer(bootstrap_servers=stack.address("kafka"),
                             group_id=names.consumer_group(migration_id), enable_auto_commit=False)
    from kafka import TopicPartition

    for topic, offset in stored.items():
        committed = consumer.committed(TopicPartition(topic, 0))
        assert committed == offset, topic
    consumer.close()


def test_an_applier_that_fails_at_start_names_its_cause_and_log_tail(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        tmp_path: Path) -> None:
    """The error (and the one line a run record keeps of it) carries the applier's own reason —
    here a Python ValueError from a setting it cannot read — never an empty tail."""
    from migwatch.errors import ApplierExited

    spec = make_spec(source_db, target_db, ["public.customers"], stack)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(orjson.loads(spec.model_dump_json(exclude_none=True))))
    pid = processes.start_applier(spec_file, migration_id,
                                  extra_env={"MIGWATCH_PROMETHEUS_PORT": "not-a-port"})
    with pytest.raises(ApplierExited) as caught:
        processes.wait_applier_running(spec, migration_id, timeout=60, pid=pid)
    err = caught.value
    first = str(err).splitlines()[0]
    assert "prometheus_port" in first and "ValidationError" in first, first
    assert "prometheus_port" in err.log_tail and "not-a-port" in err.log_tail
    log = (processes.run_dir(migration_id) / "applier.log").read_text()
    assert f"applier {migration_id} failed: ValidationError" in log  # said before it exited
    record = runs.RunRecord(migration_id=migration_id, spec_path=str(spec_file),
                            started_at=dt.datetime.now(dt.UTC))
    record.end("migrate", error=err)
    assert "prometheus_port" in (record.stages["migrate"].message or "")
