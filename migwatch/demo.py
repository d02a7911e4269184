"""The demo: the sample shop workload migrated on the local stack while it keeps taking writes.

`prepare` makes the demo's databases (source `shop` filled by the workload, a fresh target `shop`
on the target cluster or on the MongoDB-wire server), ends the previous demo's capture so no slot
is left behind, and writes the demo's spec next to them; `Writer` keeps the workload writing in a
thread while the pipeline runs, so validation meets a moving source and the monitor has something
to catch up with.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from psycopg import sql

from migwatch import capture, processes, workload
from migwatch.config import StackSettings, load_spec
from migwatch.connectors import postgres as pg
from migwatch.errors import MigwatchError
from migwatch.stack import Stack

DATABASE = "shop"
PASSWORD_ENV = "MIGWATCH_PG_PASSWORD"
REPO_MIGRATIONS = Path(__file__).resolve().parents[1] / "deployments" / "migrations"
TargetKind = Literal["postgres", "mongodb"]


def demo_dir(settings: StackSettings | None = None) -> Path:
    d = (settings or StackSettings()).state_dir / "demo"
    d.mkdir(parents=True, exist_ok=True)
    return d


def spec_data(stack: Stack, target: TargetKind) -> dict[str, Any]:
    """The demo's spec: the example spec of deployments/ with the stack's own ports."""
    s = stack.s
    pg_endpoint = {"kind": "postgres", "host": s.host, "database": DATABASE, "user": s.pg_user,
                   "password": {"env": PASSWORD_ENV}}
    data: dict[str, Any] = {
        "source": {**pg_endpoint, "port": s.pg_source_port},
        "target": ({**pg_endpoint, "port": s.pg_target_port} if target == "postgres" else
                   {"kind": "mongodb", "host": s.host, "port": s.ferretdb_port,
                    "database": DATABASE}),
        "tables": list(workload.SHOP_TABLES),
        "kafka": {"bootstrap_servers": f"{s.host}:{s.kafka_port}"},
        "connect": {"url": s.url(s.connect_port), "heartbeat_interval_ms": 1000},
        "monitor": {"poll_interval_seconds": 2, "consecutive_polls": 3, "window_size": 10,
                    "timeout_seconds": 900,
                    "thresholds": {
                        "event_time_lag_seconds": {"warn": 30, "critical": 120, "caught_up": 5},
                        "end_to_end_lag_seconds": {"warn": 30, "critical": 120, "caught_up": 10}}},
        "validation": {"workers": 2, "sample_cap": 20},
        # the initial load read straight from the slot's exported snapshot (docs/initial-load.md)
        "snapshot": {"method": "copy"},
        "metrics": {"pushgateway_url": s.url(s.pushgateway_port),
                    "prometheus_url": s.url(s.prometheus_port)},
    }
    folder = REPO_MIGRATIONS / ("postgres" if target == "postgres" else "mongodb")
    if folder.is_dir():  # the sample versioned migrations, when run from a checkout
        data["migrations"] = {"folder": str(folder)}
    return data


@dataclass
class Prepared:
    spec_path: Path
    rows: dict[str, int]
    previous: str | None


def prepare(stack: Stack, migration_id: str, size: int, target: TargetKind) -> Prepared:
    """Fresh demo databases, the previous demo's capture ended, the spec written."""
    os.environ.setdefault(PASSWORD_ENV, stack.s.pg_password.get_secret_value())
    folder = demo_dir(stack.s)
    spec_path = folder / f"shop-{target}.yaml"
    last = folder / "last-migration-id"
    previous = last.read_text().strip() if last.exists() else None
    if previous:
        _end_previous(previous, folder)
    _recreate_pg(stack, "source")
    rows = workload.init(stack.pg_dsn("source", DATABASE), size)
    if target == "postgres":
        _recreate_pg(stack, "target")
    else:
        _drop_mongo(stack)
    spec_path.write_text(yaml.safe_dump(spec_data(stack, target), sort_keys=False))
    last.write_text(migration_id)
    return Prepared(spec_path, rows, previous)


def _end_previous(migration_id: str, folder: Path) -> None:
    """Stop the previous demo's applier and drop its connector and slot (keeps WAL in check)."""
    for spec_file in sorted(folder.glob("shop-*.yaml")):
        try:
            spec = load_spec(spec_file)
            processes.stop_applier(migration_id)
            capture.teardown(spec, migration_id, delete_topics=True)
            return
        except MigwatchError:
            continue


def _recreate_pg(stack: Stack, which: str) -> None:
    with pg.connect(stack.pg_dsn(which, "postgres"), f"{which} cluster",
                    autocommit=True) as conn, pg.translated(f"{which}: recreate {DATABASE}"):
        # a slot left by an earlier demo whose capture was not ended pins the database
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE database = %s AND NOT active", [DATABASE])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(DATABASE), sql.Identifier(stack.s.pg_user)))


def _drop_mongo(stack: Stack) -> None:
    from pymongo import MongoClient

    client: Any = MongoClient(stack.address("ferretdb"), serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(DATABASE)
    finally:
        client.close()


@dataclass
class Writer:
    """The workload writing to the source in a thread for `seconds` at `rate` operations/s."""

    dsn: str
    rate: float
    seconds: float
    result: workload.WorkloadResult | None = None
    done_ops: int = 0
    error: str | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name="demo-writer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = workload.run(self.dsn, rate=self.rate, duration=self.seconds,
                                       on_progress=self._progress)
            self.done_ops = self.result.total
        except MigwatchError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def _progress(self, r: workload.WorkloadResult) -> None:
        self.done_ops = r.total

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
