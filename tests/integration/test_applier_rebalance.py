"""The CDC applier through consumer-group rebalances on the real stack, while the source is being
written: tables whose topics appear one by one (the group leader notices new metadata and
rebalances) and a second applier joining and leaving. The applier must stay in its group and
end with target == source, checked by independent queries.

kafka-python 3 runs the group join as a task on its IO thread; a `poll()` that returns on its
timeout before that task finishes used to leave a leader's metadata-triggered join half done —
in the group's eyes the member was gone (0 members) while `poll()` kept returning nothing. The
applier here polls with a 1 ms wait, so most of its time is spent outside the join's wait and
that window is hit on nearly every such rebalance; with the default wait it is rare (about one
fresh start in ten on a loaded machine).
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from migwatch import capture, metrics, names, workload
from migwatch.applier import Applier, membership_bound_seconds
from migwatch.connectors import kafka as kafka_conn
from migwatch.consumer_lag import group_lag
from migwatch.errors import TransientError
from migwatch.measures import migration_topics
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec
from tests.integration.test_applier import pg_differences, wait_until

SHOP = list(workload.SHOP_TABLES)
#: tables with no rows when the connector starts: Debezium creates each one's topic only with
#: its first change, which the test makes while the applier runs
LATE = [f"public.late_{c}" for c in "abcd"]


def _where(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or 0)
    return "".join(traceback.format_stack(frame)[-10:]) if frame else "(not running)"


def _state(applier: Applier, thread: threading.Thread, members: Callable[[], int]) -> str:
    return (f"; group members {members()}, applier batches {applier.stats.batches}, "
            f"at:\n{_where(thread)}")


def test_rebalances_while_applying_leave_no_applier_out_of_its_group(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str) -> None:
    workload.init(source_db.dsn, 600)
    with source_db.connect() as conn:
        for table in LATE:
            conn.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, note text)").format(
                sql.Identifier(*table.split("."))))
    tables = SHOP + LATE
    spec = make_spec(source_db, target_db, tables, stack,
                     connect={"heartbeat_interval_ms": 500})
    group = names.consumer_group(migration_id)
    topics = migration_topics(spec, migration_id)

    def members() -> int:
        return group_lag(spec.kafka.bootstrap_servers, group, topics).active_members

    rejoins = metrics.REGISTRY.get_sample_value(
        "migwatch_applier_rejoins_total", {"migration_id": migration_id}) or 0.0
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    applier = Applier(spec, migration_id, max_wait_ms=1)
    second: Applier | None = None
    threads: list[threading.Thread] = []
    try:
        capture.ensure_connector(spec, migration_id, timeout=120)
        main = threading.Thread(target=applier.run, name="applier-main", daemon=True)
        main.start()
        threads.append(main)
        writer = threading.Thread(target=workload.run, args=(source_db.dsn,),
                                  kwargs={"rate": 80, "duration": 45, "max_operations": 3000},
                                  daemon=True)
        writer.start()
        for i, table in enumerate(LATE):
            time.sleep(6)  # the applier refreshes metadata every 5 s
            with source_db.connect() as conn:
                conn.execute(sql.SQL("INSERT INTO {} (id, note) VALUES (1, %s)").format(
                    sql.Identifier(*table.split("."))), [f"first row {i}"])
            if i % 2 == 0:  # a second applier joins for a while, then leaves
                second = Applier(spec, migration_id)
                th = threading.Thread(target=second.run, name=f"applier-{i}", daemon=True)
                th.start()
                threads.append(th)
            elif second is not None:
                second.stop()
                threads[-1].join(30)
                assert not threads[-1].is_alive(), "the second applier did not stop"
                second = None
        writer.join(90)
        with source_db.connect() as conn:  # one more change per late table, after the churn
            for table in LATE:
                conn.execute(sql.SQL("UPDATE {} SET note = 'last' WHERE id = 1").format(
                    sql.Identifier(*table.split("."))))
        state = functools.partial(_state, applier, main, members)
        wait_until(lambda: pg_differences(source_db, target_db, tables), 90,
                   "target vs source", state)
        assert main.is_alive(), "the applier stopped by itself"
        assert members() >= 1
        # the group's committed offsets caught up too: consumer lag is measured from them
        table_topics = [names.table_topic(migration_id, t) for t in tables]
        wait_until(lambda: [f"{p.topic}: {p.lag}" for p in group_lag(
            spec.kafka.bootstrap_servers, group, table_topics).partitions if p.lag],
            30, "consumer lag", state)
    finally:
        applier.stop()
        if second is not None:
            second.stop()
        for th in threads:
            th.join(30)
        capture.teardown(spec, migration_id, delete_topics=True, timeout=90)
    assert not any(th.is_alive() for th in threads), "an applier did not stop"
    with psycopg.connect(target_db.dsn) as conn:
        notes = [conn.execute(sql.SQL("SELECT note FROM {}").format(
            sql.Identifier(*t.split(".")))).fetchall() for t in LATE]
    assert notes == [[("last",)]] * len(LATE)
    after = metrics.REGISTRY.get_sample_value(
        "migwatch_applier_rejoins_total", {"migration_id": migration_id}) or 0.0
    print(f"\nhalf-done joins re-armed: {after - rejoins:.0f}")


def test_an_applier_outside_its_group_longer_than_any_rebalance_fails_loudly(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The backstop behind the re-armed join: a real consumer that is not (yet) a member."""
    spec = make_spec(source_db, target_db, SHOP, stack)
    applier = Applier(spec, migration_id)
    consumer = kafka_conn.consumer(spec.kafka.bootstrap_servers,
                                   names.consumer_group(migration_id), session_timeout_ms=10000)
    try:
        consumer.subscribe(topics=[names.heartbeat_topic(migration_id)])
        assert not kafka_conn.stable_member(consumer)
        assert not kafka_conn.rejoin_if_dropped(consumer)  # never joined: nothing half done
        applier._keep_membership(consumer)  # first seen outside the group: the clock starts
        applier._keep_membership(consumer)  # well within the bound: nothing happens
        bound = membership_bound_seconds(consumer.config)
        assert bound == (consumer.config["max_poll_interval_ms"] + 10000) / 1000
        applier._unstable_since = time.monotonic() - bound - 1
        with pytest.raises(TransientError, match="not a stable member of consumer group"):
            applier._keep_membership(consumer)
    finally:
        consumer.close(autocommit=False)
    assert "kafka-io" in caplog.text  # every thread's stack logged, the client's IO thread too
