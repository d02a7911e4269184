"""The applier rides through a restart of the target PostgreSQL and of the Kafka broker while the
source is written to: it waits, reconnects, and the target ends equal to the source — compared
by PostgreSQL itself, row by row — with nothing lost, nothing duplicated, nothing dead-lettered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from migwatch import capture, metrics, workload
from migwatch.applier import Applier
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec

SHOP = list(workload.SHOP_TABLES)


def table_text(dsn: str, table: str) -> list[str]:
    schema, name = table.split(".")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT t::text FROM {} t").format(
            sql.Identifier(schema, name))).fetchall()
    return sorted(r[0] for r in rows)


def differing(source: PgDatabase, target: PgDatabase) -> list[str]:
    return [t for t in SHOP if table_text(source.dsn, t) != table_text(target.dsn, t)]


def wait_until(check: Callable[[], list[str]], timeout: float, what: str) -> float:
    start = time.monotonic()
    left = check()
    while left and time.monotonic() - start < timeout:
        time.sleep(1)
        left = check()
    assert not left, f"{what}: still different after {timeout:.0f}s: {left}"
    return time.monotonic() - start


@pytest.mark.parametrize("component", ["postgres-target", "kafka"])
def test_the_applier_rides_through_a_restart(
        component: str, stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> None:
    workload.init(source_db.dsn, 1000)
    spec = make_spec(source_db, target_db, SHOP, stack)
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    capture.ensure_connector(spec, migration_id, timeout=120)
    applier = Applier(spec, migration_id)
    th = threading.Thread(target=applier.run, daemon=True)
    th.start()
    try:
        wait_until(lambda: differing(source_db, target_db), 120, "after the snapshot")
        writer = threading.Thread(target=workload.run, args=(source_db.dsn,),
                                  kwargs={"rate": 200, "duration": 30, "max_operations": 5000})
        writer.start()
        time.sleep(5)
        assert stack.down((component,)) == [component]
        time.sleep(8)
        stack.up((component,))
        writer.join()
        recovered = wait_until(lambda: differing(source_db, target_db), 180,
                               f"after restarting {component}")
        print(f"{component}: caught up {recovered:.1f}s after the writes ended")
        assert th.is_alive(), "the applier ended instead of waiting"
        if component == "postgres-target":
            # (a broker outage surfaces no error: the Kafka client waits and reconnects itself)
            outages = metrics.REGISTRY.get_sample_value(
                "migwatch_applier_outages_total",
                {"migration_id": migration_id, "dependency": "target"})
            assert outages and outages >= 1
            assert metrics.REGISTRY.get_sample_value(
                "migwatch_applier_waiting",
                {"migration_id": migration_id, "dependency": "target"}) == 0
        assert applier.stats.dlq == 0
        with target_db.connect() as conn:
            dupes = conn.execute("SELECT count(*) - count(DISTINCT (order_id, line_no)) "
                                 "FROM order_items").fetchone()
        assert dupes == (0,)
    finally:
        applier.stop()
        th.join(60)
        stack.up()
        capture.teardown(spec, migration_id, delete_topics=True)
