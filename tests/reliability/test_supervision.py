"""The supervisor on the real stack: an applier killed again and again is started again until its
restart budget is spent, then left down with one critical message; a Debezium task that Connect
marks FAILED on a source restart is restarted through Connect's REST API and the target catches
up. What the supervisor claims is checked where it lands: the webhook's requests, the
Pushgateway's exposition, the process table, the target's rows."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from migwatch import capture, processes
from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from tests.conftest import PgDatabase, pushed
from tests.receivers import Webhook
from tests.reliability.conftest import differing, wait_until, write_through

pytestmark = pytest.mark.usefixtures("prefect_harness")


def subjects(receiver: Webhook) -> list[str]:
    return [b["subject"] for b in receiver.json_bodies()]


def test_a_crash_looping_applier_is_restarted_until_its_budget_is_spent(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        supervised: Callable[..., MigrationSpec], hook: tuple[Webhook, str]) -> None:
    receiver, block = hook
    supervised(target_db, notifications={"warning": [block], "critical": [block]},
               supervision={"max_restarts": 2, "window_seconds": 300,
                            "backoff_initial_seconds": 0.5, "backoff_max_seconds": 1})
    supervisor = processes.applier_pid(migration_id)
    killed: list[int] = []
    for _ in range(3):
        wait_until(lambda: [] if processes.applier_worker_pid(migration_id) not in
                   (None, *killed) else ["no new worker"], 60, "a new worker")
        worker = processes.applier_worker_pid(migration_id)
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        killed.append(worker)
    wait_until(lambda: [] if processes.applier_pid(migration_id) is None else ["supervisor"],
               30, "the supervisor giving up")
    assert supervisor is not None
    wait_until(lambda: [] if len(receiver.requests) >= 3 else ["messages"], 30, "3 messages")
    time.sleep(1)  # nothing more may come
    got = subjects(receiver)
    assert len(got) == 3, got
    assert [s.split()[1] for s in got] == ["WARNING", "WARNING", "CRITICAL"], got
    bodies = [b["body"] for b in receiver.json_bodies()]
    assert all("killed by signal 9" in b for b in bodies), bodies
    assert "gives up" in bodies[-1]
    figures = pushed(stack, migration_id)
    assert figures[("migwatch_restarts_total", "applier")] == 2
    assert figures[("migwatch_supervisor_gave_up", "applier")] == 1
    assert figures[("migwatch_restarts_total", "connector")] == 0
    log = (processes.run_dir(migration_id) / "applier.log").read_text()
    assert log.count("applier died (killed by signal 9); starting it again") == 2
    assert "restart budget spent, giving up" in log


def test_a_failed_connector_task_is_restarted_and_the_target_catches_up(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        supervised: Callable[..., MigrationSpec], hook: tuple[Webhook, str]) -> None:
    """`errors.max.retries=0` makes Debezium fail its task on the first retriable error instead
    of retrying inside the task (its default) — as a task fails when its retries run out."""
    receiver, block = hook
    spec = supervised(target_db, connect={"overrides": {"errors.max.retries": "0"}},
                      notifications={"warning": [block], "critical": [block]},
                      supervision={"check_interval_seconds": 1})
    wait_until(lambda: differing(source_db, target_db), 120, "after the snapshot")
    writer = threading.Thread(target=write_through, args=(source_db.dsn, 200, 3000))
    writer.start()
    time.sleep(3)
    assert stack.down(("postgres-source",)) == ["postgres-source"]
    time.sleep(3)
    stack.up(("postgres-source",))
    writer.join()
    recovered = wait_until(lambda: differing(source_db, target_db), 180,
                           "after the source restarted")
    print(f"connector: caught up {recovered:.1f}s after the writes ended")
    assert capture.connector_status(spec, migration_id).running
    figures = pushed(stack, migration_id)
    assert figures[("migwatch_restarts_total", "connector")] >= 1, figures
    assert figures[("migwatch_restarts_total", "applier")] == 0
    got = subjects(receiver)
    assert got and all(s.split()[1] == "WARNING" for s in got), got
    assert "a FAILED task was restarted" in receiver.json_bodies()[0]["body"]
    with target_db.connect() as conn:
        dupes = conn.execute("SELECT count(*) - count(DISTINCT (order_id, line_no)) "
                             "FROM order_items").fetchone()
    assert dupes == (0,)
