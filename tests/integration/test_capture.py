"""The Debezium connector lifecycle on the real stack: pre-flight, target schema, connector
create/no-op/failure, the change-event envelope, and teardown leaving nothing behind.

Every test has its own databases and migration id, and the `cdc` fixture tears down each
connector it created (slot, publication, consumer group, topics) even when the test fails:
a leftover connector would hold a slot on the shared source cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from migwatch import names, workload
from migwatch.capture import (
    connector_status,
    ensure_connector,
    prepare_source,
    prepare_target_schema,
    teardown,
)
from migwatch.config import MigrationSpec, parse_spec
from migwatch.connectors.postgres import describe_table
from migwatch.errors import ConnectorFailed, PreflightError
from migwatch.preflight import preflight
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec, mongo_endpoint, short_id

WAIT = 90  # every wait is bounded
SNAPSHOT_MARKS = {"first", "first_in_data_collection", "true", "last_in_data_collection", "last"}
FAST = {"heartbeat_interval_ms": 1000, "ready_timeout_seconds": WAIT}


class Cdc:
    """Creates specs for a test and remembers every migration id to tear down afterwards."""

    def __init__(self, stack: Stack, source: PgDatabase) -> None:
        self.stack = stack
        self.source = source
        self.created: list[tuple[MigrationSpec, str]] = []

    def spec(self, target: PgDatabase | dict[str, Any], tables: list[Any],
             **extra: Any) -> MigrationSpec:
        connect = {**FAST, **extra.pop("connect", {})}
        return make_spec(self.source, target, tables, self.stack, connect=connect, **extra)

    def track(self, spec: MigrationSpec, migration_id: str) -> None:
        self.created.append((spec, migration_id))

    def ensure(self, spec: MigrationSpec, migration_id: str) -> Any:
        self.track(spec, migration_id)
        return ensure_connector(spec, migration_id, timeout=WAIT)


@pytest.fixture
def cdc(stack: Stack, source_db: PgDatabase) -> Iterator[Cdc]:
    helper = Cdc(stack, source_db)
    yield helper
    for spec, migration_id in helper.created:  # before source_db is dropped
        teardown(spec, migration_id, delete_topics=True, timeout=WAIT)


def connect_url(stack: Stack) -> str:
    return stack.address("kafka-connect")


def source_objects(source: PgDatabase, migration_id: str) -> tuple[list[Any], list[Any]]:
    with source.connect() as conn:
        slots = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots "
                             "WHERE slot_name = %s", [names.slot_name(migration_id)]).fetchall()
        pubs = conn.execute("SELECT pubname FROM pg_publication WHERE pubname = %s",
                            [names.publication_name(migration_id)]).fetchall()
    return slots, pubs


def read_topic(stack: Stack, topic: str, until: Callable[[list[Any]], bool],
               timeout: float = WAIT) -> list[Any]:
    """Decoded values of `topic` from the beginning until `until(values)` holds (bounded)."""
    deadline = time.monotonic() + timeout
    admin = KafkaAdminClient(bootstrap_servers=stack.address("kafka"))
    try:
        while topic not in admin.list_topics():
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            time.sleep(0.5)
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=stack.address("kafka"), group_id=None,
                             enable_auto_commit=False)
    values: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        while not until(values):
            assert time.monotonic() < deadline, f"{topic}: condition not met, {len(values)} read"
            for records in consumer.poll(timeout_ms=500).values():
                # the payload of a schemas-on envelope (each event carries its definition)
                values += [None if r.value is None else json.loads(r.value)["payload"]
                           for r in records]
    finally:
        consumer.close()
    return values


# ---------------------------------------------------------------------------- envelope
def test_snapshot_reads_and_a_new_row_arrive_as_debezium_envelopes(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc) -> None:
    sizes = workload.init(source_db.dsn, 500)
    with source_db.connect() as conn:  # same name but lower case: must not be captured
        conn.execute("CREATE TABLE public.productreviews (id int PRIMARY KEY)")
    spec = cdc.spec(target_db, list(workload.SHOP_TABLES))
    prepare_source(spec, migration_id)

    started = time.monotonic()
    result = cdc.ensure(spec, migration_id)
    running_after = time.monotonic() - started
    assert (result.action, result.state, result.tasks) == ("created", "RUNNING", ("RUNNING",))

    topics = {t: names.table_topic(migration_id, t) for t in workload.SHOP_TABLES}
    snapshot: dict[str, list[Any]] = {}
    for table, topic in topics.items():
        n = sizes[table.split(".")[1]]
        snapshot[table] = read_topic(stack, topic, lambda v, n=n: len(v) >= n)
    snapshot_after = time.monotonic() - started
    print(f"\nconnector RUNNING after {running_after:.1f}s; snapshot of {sum(sizes.values())} rows"
          f" read back after {snapshot_after:.1f}s")

    for table, events in snapshot.items():
        assert len(events) == sizes[table.split(".")[1]], table
        for event in events:
            assert event["op"] == "r" and event["before"] is None and event["after"]
            assert isinstance(event["source"]["snapshot"], str)
            assert event["source"]["snapshot"] in SNAPSHOT_MARKS
    assert {e["after"]["id"] for e in snapshot["public.customers"]} == \
        set(range(1, sizes["customers"] + 1))
    assert all(isinstance(e["after"]["price"], str) for e in snapshot["public.products"])

    with source_db.connect() as conn:
        conn.execute("INSERT INTO public.customers VALUES (100001, 'new@example.com', 'Zoë New', "
                     "true, '{\"a\": 1}', '2025-01-02 03:04:05.123456+00')")
    events = read_topic(stack, topics["public.customers"],
                        lambda v: any(e and e["op"] == "c" for e in v))
    created = next(e for e in events if e and e["op"] == "c")
    assert created["before"] is None
    after = created["after"]
    assert (after["id"], after["email"], after["full_name"], after["is_active"]) == \
        (100001, "new@example.com", "Zoë New", True)
    assert json.loads(after["profile"]) == {"a": 1}
    assert after["created_at"].startswith("2025-01-02T03:04:05.123456")
    source = created["source"]
    assert (source["schema"], source["table"], source["db"]) == \
        ("public", "customers", source_db.name)
    assert isinstance(source["ts_ms"], int) and source["ts_ms"] > 1_700_000_000_000
    assert isinstance(source["lsn"], int) and source["lsn"] > 0
    assert source["snapshot"] in (None, "false")  # unset when streamed (no schema default written)

    # the heartbeat action query keeps this migration's row moving on its own topic
    beat_topic = names.table_topic(migration_id, "public.migwatch_heartbeat")
    beats = read_topic(stack, beat_topic, lambda v: sum(
        1 for e in v if e and e["op"] == "u" and e["after"]["writer"] == "debezium") >= 2)
    assert {e["after"]["migration_id"] for e in beats if e} == {migration_id}

    with source_db.connect() as conn:
        published = {r[0] for r in conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
            [names.publication_name(migration_id)])}
    # and Debezium's signal table, which it adds itself (tables added later are loaded through it)
    assert published == {*workload.SHOP_TABLES, "public.migwatch_heartbeat",
                         f"public.{names.signal_table(migration_id)}"}


# ---------------------------------------------------------------------------- idempotence
def test_ensure_twice_is_a_no_op_and_a_changed_spec_updates(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    spec = cdc.spec(target_db, ["public.t"])
    prepare_source(spec, migration_id)
    first = cdc.ensure(spec, migration_id)
    assert first.action == "created"
    slots, _ = source_objects(source_db, migration_id)
    assert len(slots) == 1 and slots[0][1] is not None
    pid_before = slots[0][1]

    second = cdc.ensure(spec, migration_id)
    assert (second.action, second.state) == ("unchanged", "RUNNING")
    slots, _ = source_objects(source_db, migration_id)
    assert slots[0][1] == pid_before  # the same replication connection: nothing restarted

    changed = cdc.spec(target_db, ["public.t"], connect={"overrides": {"max.batch.size": "1024"}})
    third = cdc.ensure(changed, migration_id)
    assert (third.action, third.state) == ("updated", "RUNNING")
    stored = requests.get(f"{connect_url(stack)}/connectors/{first.name}/config", timeout=10).json()
    assert stored["max.batch.size"] == "1024"


# ---------------------------------------------------------------------------- failures
def test_a_wrong_password_is_a_connector_failure_mentioning_authentication(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "not-the-password-" + short_id()
    monkeypatch.setenv("TEST_CAPTURE_WRONG_PW", wrong)
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    good = cdc.spec(target_db, ["public.t"])
    bad_source = {**source_db.endpoint(), "password": {"env": "TEST_CAPTURE_WRONG_PW"}}
    spec = parse_spec({**good.model_dump(), "source": bad_source})
    prepare_source(good, migration_id)
    cdc.track(good, migration_id)  # teardown needs the right password

    with pytest.raises(ConnectorFailed) as err:
        ensure_connector(spec, migration_id, timeout=WAIT)
    assert "password authentication failed" in err.value.trace
    assert wrong not in err.value.trace and wrong not in str(err.value)
    assert connector_status(spec, migration_id).state == "ABSENT"  # nothing half-created


def test_a_failed_task_surfaces_the_workers_trace(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    # no publication exists and creating one is forbidden: the task fails when it starts
    spec = cdc.spec(target_db, ["public.t"],
                    connect={"overrides": {"publication.autocreate.mode": "disabled"}})
    prepare_source(spec, migration_id)
    with pytest.raises(ConnectorFailed) as err:
        cdc.ensure(spec, migration_id)
    assert "Publication autocreation is disabled" in err.value.trace
    assert "\tat io.debezium." in err.value.trace  # the worker's Java stack trace
    status = connector_status(spec, migration_id)
    assert status.failed and [t.state for t in status.tasks] == ["FAILED"]
    assert status.trace == err.value.trace


# ---------------------------------------------------------------------------- pre-flight
def test_preflight_names_every_failure_in_one_error(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.keyed (id int PRIMARY KEY);"
                     "CREATE TABLE public.nokey (id int);"
                     "CREATE TABLE public.full_identity (id int);"
                     "ALTER TABLE public.full_identity REPLICA IDENTITY FULL")
    unreachable = {**target_db.endpoint(), "port": 1}
    spec = cdc.spec(unreachable, ["public.keyed", "public.nokey", "public.missing",
                                  "public.full_identity"])
    with pytest.raises(PreflightError) as err:
        preflight(spec, migration_id)
    failures = err.value.failures
    assert len(failures) == 3, failures
    assert any("public.nokey" in f and "primary key" in f for f in failures)
    assert any("public.missing" in f and "does not exist" in f for f in failures)
    assert any(f.startswith("target unreachable") and ":1/" in f for f in failures)
    assert not any("public.keyed" in f or "full_identity" in f for f in failures)

    good = cdc.spec(target_db, ["public.keyed", "public.full_identity"])
    passed = preflight(good, migration_id)
    assert {"wal_level=logical", "REPLICATION privilege", "replication slot available",
            "Debezium PostgreSQL plugin loaded", "target reachable (postgres)"} <= set(passed)

    dead_source = parse_spec({**good.model_dump(), "source": {**source_db.endpoint(), "port": 1}})
    with pytest.raises(PreflightError) as err:
        preflight(dead_source, migration_id)
    assert len(err.value.failures) == 1
    assert err.value.failures[0].startswith("source unreachable") and ":1/" in str(err.value)


def test_preflight_pings_a_mongodb_target(stack: Stack, source_db: PgDatabase, mongo_db: str,
                                          migration_id: str, cdc: Cdc) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY)")
    assert "target reachable (mongodb)" in preflight(
        cdc.spec(mongo_endpoint(stack, mongo_db), ["public.t"]), migration_id)
    dead = {**mongo_endpoint(stack, mongo_db), "port": 1}
    with pytest.raises(PreflightError) as err:
        preflight(cdc.spec(dead, ["public.t"]), migration_id)
    assert [f for f in err.value.failures if f.startswith("target unreachable")]


# ---------------------------------------------------------------------------- target schema
def test_prepare_target_schema_copies_the_shop_tables_once(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc) -> None:
    workload.init(source_db.dsn, 100)
    spec = cdc.spec(target_db, list(workload.SHOP_TABLES))
    result = prepare_target_schema(spec)
    assert set(result.created) == {*workload.SHOP_TABLES, "public.migwatch_heartbeat"}
    assert result.present == ()

    with source_db.connect() as src, target_db.connect() as tgt:
        for qualified in workload.SHOP_TABLES:
            schema, name = qualified.split(".")
            want, got = describe_table(src, schema, name), describe_table(tgt, schema, name)
            assert got is not None, qualified
            assert [(c.name, c.type, c.not_null) for c in got.columns] == \
                [(c.name, c.type, c.not_null) for c in want.columns], qualified
            assert got.primary_key == want.primary_key, qualified
        items = describe_table(tgt, "public", "order_items")
        assert items is not None and items.primary_key == ("order_id", "line_no")
        reviews = describe_table(tgt, "public", "ProductReviews")
        assert reviews is not None and reviews.column("Rating").type == "smallint"
        beat = describe_table(tgt, "public", "migwatch_heartbeat")
        assert beat is not None and beat.primary_key == ("migration_id",)

    again = prepare_target_schema(spec)
    assert again.created == ()
    assert set(again.present) == set(result.created)


def test_prepare_target_schema_needs_no_ddl_for_mongodb(stack: Stack, source_db: PgDatabase,
                                                        mongo_db: str, cdc: Cdc) -> None:
    spec = cdc.spec(mongo_endpoint(stack, mongo_db), ["public.anything"])
    result = prepare_target_schema(spec)
    assert (result.created, result.present) == ((), ())


# ---------------------------------------------------------------------------- teardown
def test_teardown_leaves_no_slot_publication_connector_group_or_topic(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t VALUES (1)")
    spec = cdc.spec(target_db, ["public.t"])
    prepare_source(spec, migration_id)
    cdc.ensure(spec, migration_id)
    topic = names.table_topic(migration_id, "public.t")
    read_topic(stack, topic, lambda v: len(v) >= 1)
    group = names.consumer_group(migration_id)
    consumer = KafkaConsumer(topic, bootstrap_servers=stack.address("kafka"), group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=20000)
    assert next(iter(consumer)) is not None
    consumer.commit()
    consumer.close()

    removed = teardown(spec, migration_id, delete_topics=True, timeout=WAIT)
    assert (removed.connector, removed.slot, removed.publication, removed.consumer_group) == \
        (True, True, True, True)
    assert topic in removed.topics

    assert source_objects(source_db, migration_id) == ([], [])
    r = requests.get(f"{connect_url(stack)}/connectors/{names.connector_name(migration_id)}",
                     timeout=10)
    assert r.status_code == 404
    admin = KafkaAdminClient(bootstrap_servers=stack.address("kafka"))
    try:
        assert group not in {g["group_id"] for g in admin.list_groups()}
        deadline = time.monotonic() + WAIT
        prefix = names.topic_prefix(migration_id) + "."
        while [t for t in admin.list_topics() if t.startswith(prefix)]:
            assert time.monotonic() < deadline, "topics still listed"
            time.sleep(0.5)
    finally:
        admin.close()

    again = teardown(spec, migration_id, delete_topics=True, timeout=WAIT)
    assert (again.connector, again.slot, again.publication, again.consumer_group,
            again.topics) == (False, False, False, False, ())


def test_a_connector_recreated_after_teardown_snapshots_again(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        cdc: Cdc) -> None:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY);"
                     "INSERT INTO public.t SELECT generate_series(1, 5)")
    spec = cdc.spec(target_db, ["public.t"])
    prepare_source(spec, migration_id)
    cdc.ensure(spec, migration_id)
    topic = names.table_topic(migration_id, "public.t")
    read_topic(stack, topic, lambda v: len(v) >= 5)
    teardown(spec, migration_id, delete_topics=False, timeout=WAIT)

    # stored offsets were reset: the new connector reads the table again instead of resuming
    cdc.ensure(spec, migration_id)
    events = read_topic(stack, topic, lambda v: len(v) >= 10)
    assert [e["op"] for e in events] == ["r"] * 10


def test_connector_status_of_a_migration_without_connector_is_absent(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, cdc: Cdc) -> None:
    spec = cdc.spec(target_db, ["public.t"])
    status = connector_status(spec, "t-" + short_id("none"))
    assert (status.state, status.tasks, status.running, status.failed) == \
        ("ABSENT", (), False, False)
