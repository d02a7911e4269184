"""The fault suite: each fault strikes while the source takes 20 000 changes, the applier runs
under its supervisor as an operator starts it, and nobody helps afterwards. The target must end
equal to the source — judged by PostgreSQL's own row text on both sides (or the raw documents of
a MongoDB target), no code shared with the applier or the validator — with 0 rows lost and 0
extra, nothing dead-lettered, and the fault visible in the metrics where it has one.

Each test prints `FAULT <name>: ...` with its figures (time to catch up after the writes ended,
changes written, lost/extra rows) — the issue's note quotes them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import MongoClient

from migwatch import processes
from migwatch.config import MigrationSpec
from migwatch.connectors.prometheus import PrometheusClient
from migwatch.notifications import send
from migwatch.stack import Stack
from migwatch.watch import watch
from tests.conftest import PgDatabase, mongo_endpoint, pushed
from tests.receivers import Webhook
from tests.reliability.conftest import (
    SHOP,
    differing,
    tally,
    wait_until,
    write_through,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

#: changes per fault, and the rate they are written at (operations/s; an operation is one row
#: change, a primary-key change two)
CHANGES = 20_000
RATE = 800


def restart(stack: Stack, component: str, down_seconds: float) -> Callable[[], None]:
    def fault() -> None:
        assert stack.down((component,)) == [component]
        time.sleep(down_seconds)
        stack.up((component,))
    return fault


def kill_applier(migration_id: str) -> Callable[[], None]:
    def fault() -> None:
        worker = processes.applier_worker_pid(migration_id)
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
    return fault


def subjects(receiver: Webhook) -> list[str]:
    return [b["subject"] for b in receiver.json_bodies()]


def prometheus_value(stack: Stack, expr: str) -> float:
    with PrometheusClient(stack.address("prometheus")) as prom:
        samples = prom.query(expr)
    return sum(s.value for s in samples)


def run_fault(name: str, fault: Callable[[], None], source_db: PgDatabase,
              check: Callable[[], list[str]], at: float = 6) -> tuple[float, int]:
    """Write CHANGES changes, strike `fault` `at` seconds in, wait for `check` to find nothing
    different; returns (seconds to catch up after the writes ended, operations written)."""
    done: list[int] = []
    writer = threading.Thread(
        target=lambda: done.append(write_through(source_db.dsn, RATE, CHANGES)))
    writer.start()
    time.sleep(at)
    fault()
    writer.join()
    assert done and done[0] >= CHANGES, f"the writer stopped at {done}"
    recovered = wait_until(check, 240, f"after {name}")
    return recovered, done[0]


@pytest.mark.parametrize("fault", ["applier-sigkill", "kafka-restart", "target-restart",
                                   "source-restart", "connect-restart"])
def test_a_postgres_target_rides_through(
        fault: str, stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str, supervised: Callable[..., MigrationSpec]) -> None:
    supervised(target_db, supervision={"check_interval_seconds": 2})
    wait_until(lambda: differing(source_db, target_db), 120, "after the snapshot")
    faults = {
        "applier-sigkill": kill_applier(migration_id),
        "kafka-restart": restart(stack, "kafka", 8),
        "target-restart": restart(stack, "postgres-target", 8),
        "source-restart": restart(stack, "postgres-source", 8),
        "connect-restart": restart(stack, "kafka-connect", 0),
    }
    recovered, written = run_fault(fault, faults[fault], source_db,
                                   lambda: differing(source_db, target_db))
    counts = tally(source_db, target_db)
    print(f"\nFAULT {fault}: {written} changes written, caught up {recovered:.1f}s after the "
          f"writes ended, lost {counts.lost}, extra {counts.extra}")
    assert (counts.lost, counts.extra) == (0, 0), counts.per_table
    assert processes.applier_pid(migration_id) is not None, "the supervisor ended"
    figures = pushed(stack, migration_id)
    restarts = figures[("migwatch_restarts_total", "applier")]
    assert restarts == (1 if fault == "applier-sigkill" else 0), figures
    dlq = prometheus_value(stack, f'migwatch_dlq_events_total{{migration_id="{migration_id}"}}')
    assert dlq == 0
    if fault == "target-restart":  # the applier saw the target go and said so
        outages = prometheus_value(
            stack, f'migwatch_applier_outages_total{{migration_id="{migration_id}",'
                   f'dependency="target"}}')
        assert outages >= 1


def mongo_rows(uri: str, database: str) -> dict[str, set[tuple[Any, ...]]]:
    """Per table: (_id, and the text/integer/boolean fields) of every document, read raw."""
    fields = {"public.customers": ("email", "full_name", "is_active"),
              "public.products": ("name", "discontinued"),
              "public.orders": ("customer_id", "status", "note"),
              "public.order_items": ("sku", "qty"),
              "public.ProductReviews": ("sku", "Rating", "body")}
    out = {}
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        db = client[database]
        for table, names in fields.items():
            docs = db[table.split(".")[1]].find({})
            out[table] = {(_key(d["_id"]), *(d.get(n) for n in names)) for d in docs}
    return out


def _key(value: Any) -> Any:
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def source_rows(dsn: str) -> dict[str, set[tuple[Any, ...]]]:
    import psycopg

    queries = {
        "public.customers": "SELECT id, email, full_name, is_active FROM customers",
        "public.products": "SELECT sku, name, discontinued FROM products",
        "public.orders": "SELECT id, customer_id, status, note FROM orders",
        "public.order_items": "SELECT order_id, line_no, sku, qty FROM order_items",
        "public.ProductReviews": 'SELECT id, sku, "Rating", body FROM "ProductReviews"',
    }
    out = {}
    with psycopg.connect(dsn) as conn:
        for table, query in queries.items():
            rows = conn.execute(query).fetchall()
            if table == "public.order_items":
                rows = [((("line_no", r[1]), ("order_id", r[0])), *r[2:]) for r in rows]
            out[table] = set(rows)
    return out


def test_a_mongodb_target_rides_through_30_seconds_away(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str,
        supervised: Callable[..., MigrationSpec], hook: tuple[Webhook, str]) -> None:
    """…and the monitor, watching meanwhile, says so once: one critical message when the
    event-time lag crosses its threshold, one resolved when it is back under."""
    receiver, block = hook
    spec = supervised(mongo_endpoint(stack, mongo_db), supervision={"check_interval_seconds": 2},
                      notifications={"critical": [block]},
                      monitor={"poll_interval_seconds": 1, "consecutive_polls": 2,
                               "window_size": 4, "thresholds": {
                                   "event_time_lag_seconds": {"warn": 6, "critical": 12,
                                                              "caught_up": 3}}})
    uri = stack.address("ferretdb")

    def check() -> list[str]:
        src, dst = source_rows(source_db.dsn), mongo_rows(uri, mongo_db)
        return [t for t in SHOP if src[t] != dst[t]]

    wait_until(check, 120, "after the snapshot")
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(spec, migration_id), daemon=True, kwargs={
        "notify_fn": lambda notice: send(notice, spec.notifications), "stop": stop,
        "serve_metrics": False})
    watcher.start()
    try:
        recovered, written = run_fault("ferretdb-down-30s", restart(stack, "ferretdb", 30),
                                       source_db, check)
        wait_until(lambda: [] if any("RESOLVED" in s for s in subjects(receiver)) else
                   ["no resolved message"], 60, "the monitor's resolved message")
    finally:
        stop.set()
        watcher.join(30)
    got = [s.split()[1] for s in subjects(receiver)]
    assert got == ["CRITICAL", "RESOLVED"], subjects(receiver)
    assert "event_time_lag_seconds" in subjects(receiver)[0]
    src, dst = source_rows(source_db.dsn), mongo_rows(uri, mongo_db)
    lost = sum(len(src[t] - dst[t]) for t in SHOP)
    extra = sum(len(dst[t] - src[t]) for t in SHOP)
    print(f"\nFAULT ferretdb-down-30s: {written} changes written, caught up {recovered:.1f}s "
          f"after the writes ended, lost {lost}, extra {extra}")
    assert (lost, extra) == (0, 0)
    assert pushed(stack, migration_id)[("migwatch_restarts_total", "applier")] == 0
    outages = prometheus_value(
        stack, f'migwatch_applier_outages_total{{migration_id="{migration_id}",'
               f'dependency="target"}}')
    assert outages >= 1
