"""Each lag measure against the real stack, without the applier: a consumer group we drive,
a replication slot we create, heartbeat rows we write, position rows we put on the target."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from pymongo import MongoClient

from migwatch import metrics, names
from migwatch.capture import prepare_source
from migwatch.config import MigrationSpec
from migwatch.consumer_lag import group_lag
from migwatch.errors import TransientError
from migwatch.lag import CONSUMER_LAG, END_TO_END_LAG, EVENT_TIME_LAG, SLOT_WAL, Monitor, Verdict
from migwatch.measures import (
    HeartbeatWriter,
    MetricsExporter,
    applied_positions,
    oldest_unapplied,
    poll,
    slot_wal,
    target_heartbeat,
)
from migwatch.stack import Stack
from migwatch.targets.postgres.positions import ensure_tables
from tests.conftest import PgDatabase, make_spec, mongo_endpoint


@pytest.fixture
def kafka_names(stack: Stack, migration_id: str) -> Iterator[tuple[str, str]]:
    """A topic with two partitions and the group name the applier would use; removed after."""
    topic = names.table_topic(migration_id, "public.orders")
    group = names.consumer_group(migration_id)
    admin = KafkaAdminClient(bootstrap_servers=stack.address("kafka"))
    admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}},
                        wait_for_metadata=True)
    yield topic, group
    admin.delete_groups([group])
    admin.delete_topics([topic])
    admin.close()


def joined(boot: str, group: str, topic: str) -> KafkaConsumer:
    """A member of `group` with `topic`'s partitions assigned, to commit offsets as the group."""
    consumer = KafkaConsumer(bootstrap_servers=boot, group_id=group, enable_auto_commit=False)
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=500)
    return consumer


def test_consumer_lag_of_a_group_we_drive(stack: Stack, kafka_names: tuple[str, str],
                                          migration_id: str) -> None:
    topic, group = kafka_names
    boot = stack.address("kafka")
    producer = KafkaProducer(bootstrap_servers=boot)
    for i in range(30):
        producer.send(topic, b"x", partition=0 if i < 20 else 1)
    producer.flush()
    producer.close()
    consumer = joined(boot, group, topic)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(5, "", -1)})
    absent = names.table_topic(migration_id, "public.absent")

    lag = group_lag(boot, group, [topic, absent])

    assert [(p.partition, p.end_offset, p.committed, p.lag) for p in lag.partitions] == [
        (0, 20, 5, 15), (1, 10, None, 10)]
    assert lag.total == 25 and lag.committed_total == 5 and lag.active_members == 1
    assert lag.missing_topics == (absent,)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(20, "", -1),
                     TopicPartition(topic, 1): OffsetAndMetadata(4, "", -1)})
    consumer.close()

    lag = group_lag(boot, group, [topic, absent])
    assert [p.lag for p in lag.partitions] == [0, 6]
    assert lag.committed_total == 24 and lag.active_members == 0
    admin = KafkaAdminClient(bootstrap_servers=boot)
    assert absent not in admin.list_topics()  # measuring never creates a topic
    admin.close()


def test_the_oldest_unapplied_event_dates_a_backlog(stack: Stack, kafka_names: tuple[str, str],
                                                     migration_id: str) -> None:
    """A backlog is as old as its first unapplied event: its source commit time (schemas on
    or off), even when newer events elsewhere were applied."""
    topic, group = kafka_names
    boot = stack.address("kafka")
    now_ms = int(time.time() * 1000)
    producer = KafkaProducer(bootstrap_servers=boot)
    for i in range(6):  # partition 0: commit times 60 s, 50 s ... 10 s ago
        event = {"op": "c", "source": {"ts_ms": now_ms - (60 - 10 * i) * 1000}}
        producer.send(topic, orjson.dumps(event), partition=0)
    producer.send(topic, orjson.dumps({"schema": {}, "payload": {
        "op": "u", "source": {"ts_ms": now_ms - 5000}}}), partition=1)
    producer.flush()
    producer.close()
    consumer = joined(boot, group, topic)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "", -1)})  # 2 applied
    consumer.close()

    oldest = oldest_unapplied(boot, group_lag(boot, group, [topic]).partitions)

    assert oldest == {topic: (now_ms - 40_000) / 1000}  # the 3rd event, not the newest one
    assert oldest_unapplied(boot, ()) == {}


def test_consumer_lag_exported_per_partition(stack: Stack, kafka_names: tuple[str, str],
                                             migration_id: str, source_db: PgDatabase,
                                             target_db: PgDatabase) -> None:
    topic, group = kafka_names
    producer = KafkaProducer(bootstrap_servers=stack.address("kafka"))
    for _ in range(7):
        producer.send(topic, b"y", partition=1)
    producer.flush()
    producer.close()
    spec = make_spec(source_db, target_db, ["public.orders"], stack)
    sample = poll(spec, migration_id)
    MetricsExporter(migration_id, names.slot_name(migration_id)).export(sample)
    value = metrics.REGISTRY.get_sample_value(
        "cdc_consumer_lag_messages", {"migration_id": migration_id, "topic": topic,
                                      "partition": "1"})
    assert value == 7
    assert sample.values[CONSUMER_LAG] == 7
    assert sample.applier_alive is False


def test_unreachable_kafka_is_transient() -> None:
    with pytest.raises(TransientError):
        group_lag("127.0.0.1:1", "migwatch-nobody", ["t"], timeout_ms=2000)


def test_slot_retained_wal_grows_with_writes(stack: Stack, source_db: PgDatabase,
                                             target_db: PgDatabase, migration_id: str) -> None:
    slot = names.slot_name(migration_id)
    spec = make_spec(source_db, target_db, ["public.t"], stack,
                     monitor={"slot_wal_limit_bytes": 512 << 20})
    with source_db.connect() as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
        try:
            before = slot_wal(spec, slot)
            conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, pad text)")
            conn.execute("INSERT INTO public.t SELECT g, repeat('x', 200) "
                         "FROM generate_series(1, 5000) g")
            after = slot_wal(spec, slot)
            sample = poll(spec, migration_id)
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    assert before.exists and before.wal_status == "reserved"
    assert before.retained_bytes is not None and after.retained_bytes is not None
    assert after.retained_bytes - before.retained_bytes > 1_000_000  # 5000 × 200 bytes at least
    assert after.limit_bytes == 512 << 20  # max_slot_wal_keep_size is unlimited here
    assert sample.values[SLOT_WAL] is not None
    assert sample.values[SLOT_WAL] >= after.retained_bytes
    assert sample.slot_limit_bytes == 512 << 20
    gone = slot_wal(spec, slot)
    assert not gone.exists and gone.retained_bytes is None


def test_heartbeat_writer_moves_the_source_row(stack: Stack, source_db: PgDatabase,
                                               target_db: PgDatabase, migration_id: str) -> None:
    spec = make_spec(source_db, target_db, ["public.t"], stack)
    prepare_source(spec, migration_id)
    with HeartbeatWriter(spec, migration_id, interval=0.3) as writer:
        time.sleep(1.5)
    assert writer.writes >= 3 and writer.failures == 0
    assert writer.since is not None and writer.last is not None and writer.last > writer.since
    with source_db.connect() as conn:
        beat_at, who = conn.execute(
            "SELECT beat_at, writer FROM public.migwatch_heartbeat WHERE migration_id = %s",
            [migration_id]).fetchone()
    assert who == "monitor"
    assert beat_at.timestamp() == pytest.approx(writer.last, abs=0.001)


def test_poll_reads_position_and_heartbeat_on_a_postgres_target(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    spec = make_spec(source_db, target_db, ["public.orders"], stack)
    now = time.time()
    with target_db.connect() as conn:  # what the applier would have written
        ensure_tables(conn)
        conn.execute("INSERT INTO migwatch.applied_position (migration_id, table_name, "
                     "source_ts_ms, lsn, events, dlq_events) VALUES "
                     "(%s, '*', %s, 1, 90, 2), (%s, 'public.orders', %s, 1, 80, 1)",
                     [migration_id, int((now - 3) * 1000), migration_id, int((now - 8) * 1000)])
        conn.execute("CREATE TABLE public.migwatch_heartbeat (migration_id text PRIMARY KEY, "
                     "beat_at timestamptz NOT NULL, writer text)")
        conn.execute("INSERT INTO public.migwatch_heartbeat VALUES (%s, to_timestamp(%s), "
                     "'monitor')", [migration_id, now - 4])
    positions = applied_positions(spec, migration_id)
    assert positions["*"].events == 90 and positions["*"].dlq_events == 2
    assert target_heartbeat(spec, migration_id) == pytest.approx(now - 4, abs=0.001)

    sample = poll(spec, migration_id, clock=lambda: now + 1)
    assert sample.values[EVENT_TIME_LAG] == pytest.approx(4, abs=0.01)
    assert sample.values[END_TO_END_LAG] == pytest.approx(5, abs=0.01)
    assert sample.data_lag_seconds == pytest.approx(5, abs=0.01)
    assert (sample.dlq_messages, sample.applied_events) == (2, 90)
    # the orders topic does not exist, so nothing is pending: the table has the overall lag
    assert [(t.source_table, t.seconds) for t in sample.tables] == [
        ("public.orders", pytest.approx(4, abs=0.01))]
    # no connector and no slot: the verdict says so
    assert sample.connector_state == "MISSING"
    assert any("does not exist" in p for p in sample.problems)
    ev = Monitor(spec.monitor, migration_id).evaluate(sample)
    assert ev.verdict is Verdict.ERROR and "connector is MISSING" in ev.reasons


def test_position_and_heartbeat_on_a_mongodb_target(stack: Stack, source_db: PgDatabase,
                                                     mongo_db: str, migration_id: str) -> None:
    spec: MigrationSpec = make_spec(source_db, mongo_endpoint(stack, mongo_db),
                                    ["public.orders"], stack)
    beat = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=6)
    client: MongoClient = MongoClient(stack.address("ferretdb"))
    db = client[mongo_db]
    db[names.POSITION_COLLECTION].insert_one({
        "_id": {"migration_id": migration_id, "table_name": "*"}, "source_ts_ms": 1234,
        "events": 5, "dlq_events": 0})
    db["migwatch_heartbeat"].insert_one({"_id": migration_id, "beat_at": beat,
                                         "writer": "monitor"})
    client.close()
    assert applied_positions(spec, migration_id)["*"].source_ts_ms == 1234
    assert target_heartbeat(spec, migration_id) == beat.timestamp()
    assert applied_positions(spec, "t-other") == {}
    assert target_heartbeat(spec, "t-other") is None
