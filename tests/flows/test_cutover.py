"""The cutover on the real stack: a migration that is GO, an application writing to the source
under its own role the whole time, then the switch.

What is checked never goes through migwatch's own code: the application's committed rows are
counted by the writer itself, both sides are read with plain SQL (`to_jsonb` of every row, or
pymongo), the source's read-only state is what a new session of the application's role meets,
and notifications are what a real HTTP receiver got.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
import requests
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter
from prefect.flow_runs import resume_flow_run
from psycopg import sql
from pymongo import MongoClient

from flows.cutover import cutover
from flows.pipeline import migration_pipeline
from migwatch import capture, processes, runs
from migwatch.config import MigrationSpec
from migwatch.errors import CutoverAborted, CutoverRefused
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec, mongo_endpoint, short_id
from tests.flows.test_cdc_apply_flow import write_spec
from tests.receivers import Webhook, webhook_receiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

SCHEMA = """
CREATE SCHEMA app;
CREATE TABLE app.customers (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    status text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'active')),
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE app."Order Lines" (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES app.customers (id),
    total numeric(10,2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    note text);
INSERT INTO app.customers (email, status)
    SELECT 'c' || g || '@example.com', 'active' FROM generate_series(1, 200) g;
INSERT INTO app."Order Lines" (customer_id, total, note)
    SELECT 1 + g % 200, g % 97, 'seed ' || g FROM generate_series(1, 1000) g;
"""
TABLES = ["app.customers", 'app.Order Lines']
FAST = {
    "connect": {"heartbeat_interval_ms": 500},
    "monitor": {"poll_interval_seconds": 1, "consecutive_polls": 2, "window_size": 4,
                "timeout_seconds": 300},
    "snapshot": {"poll_interval_seconds": 1},
}


class AppWriter(threading.Thread):
    """The application: inserts and updates under its own role until stopped, reconnecting
    when its session is ended; remembers every id whose insert committed."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.committed: list[int] = []
        self.refused: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    while not self.halt.is_set():
                        i += 1
                        row = conn.execute(
                            'INSERT INTO app."Order Lines" (customer_id, total, note) '
                            "VALUES (%s, %s, %s) RETURNING id",
                            [1 + i % 200, i % 50, f"app {i}"]).fetchone()
                        assert row is not None
                        self.committed.append(int(row[0]))
                        conn.execute("UPDATE app.customers SET status = 'new' WHERE id = %s",
                                     [1 + i % 200])
                        time.sleep(0.01)
            except psycopg.Error as exc:
                self.refused.append(type(exc).__name__)
                time.sleep(0.05)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


@pytest.fixture
def app_role(stack: Stack, source_db: PgDatabase) -> Iterator[tuple[str, str]]:
    """A login role of the application's own, with write rights on the tables; its DSN."""
    role = short_id("app")
    with source_db.connect() as conn:
        conn.execute(SCHEMA)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'app-password'").format(
            sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {r}; GRANT SELECT, INSERT, UPDATE, "
                             "DELETE ON ALL TABLES IN SCHEMA app TO {r}; GRANT USAGE ON ALL "
                             "SEQUENCES IN SCHEMA app TO {r}").format(r=sql.Identifier(role)))
    dsn = (f"host=127.0.0.1 port={source_db.port} dbname={source_db.name} user={role} "
           "password=app-password application_name=shop-app")
    yield role, dsn
    with psycopg.connect(stack.pg_dsn("source", "postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                     [role])
    with source_db.connect() as conn:
        conn.execute("SET default_transaction_read_only = off")  # a cutover left it frozen
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(stack.pg_dsn("source", "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def cleanup(migration_id: str) -> Iterator[list[MigrationSpec]]:
    specs: list[MigrationSpec] = []
    yield specs
    processes.stop_applier(migration_id)
    processes.stop_monitor(migration_id)
    for spec in specs:
        capture.teardown(spec, migration_id, delete_topics=True, timeout=90)


def rows(dsn: str, table: str) -> dict[int, Any]:
    """Every row of `table` as jsonb text by id — plain SQL, nothing of migwatch's."""
    schema, name = table.split(".", 1)
    with psycopg.connect(dsn) as conn:
        found = conn.execute(sql.SQL("SELECT id, to_jsonb(t) - 'id' FROM {} t").format(
            sql.Identifier(schema, name))).fetchall()
    return {int(i): json.dumps(v, sort_keys=True) for i, v in found}


def app_can_write(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("UPDATE app.customers SET status = 'active' WHERE id = 1")
        return True
    except psycopg.errors.ReadOnlySqlTransaction:
        return False


def go_migration(spec: MigrationSpec, spec_path: str, migration_id: str) -> None:
    summary = migration_pipeline(spec_path, migration_id)
    assert summary["go"], summary["reasons"]


def paused_run(timeout: float = 120) -> UUID:
    """The cutover flow run waiting for its approval form."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            for run in client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=["cutover"])),
                    flow_run_filter=FlowRunFilter()):
                if run.state is not None and run.state.is_paused():
                    return run.id
            time.sleep(0.5)
    raise AssertionError("no paused cutover run")


def test_an_approved_cutover_switches_with_nothing_lost_and_a_usable_target(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        app_role: tuple[str, str], cleanup: list[MigrationSpec], hook: tuple[Webhook, str],
        tmp_path: Path) -> None:
    notices, block = hook
    role, app_dsn = app_role
    with webhook_receiver() as switch:
        spec = make_spec(source_db, target_db, TABLES, stack, **FAST,
                         notifications={"warning": [block], "critical": [block]},
                         cutover={"switch": {"url": switch.url},
                                  "freeze": {"hooks": [{
                                      "name": "proxy", "command": [
                                          "sh", "-c", f'echo "$MIGWATCH_CUTOVER_STEP" >> '
                                                      f'{tmp_path / "proxy"}']}]}})
        cleanup.append(spec)
        spec_path = write_spec(spec, tmp_path / "spec.yaml")
        app = AppWriter(app_dsn)
        app.start()
        go_migration(spec, spec_path, migration_id)

        outcome: dict[str, Any] = {}

        def cut() -> None:
            try:
                outcome["result"] = cutover(spec_path, migration_id)
            except Exception as exc:
                outcome["error"] = exc

        th = threading.Thread(target=cut, daemon=True)
        th.start()
        run_id = paused_run()
        assert app_can_write(app_dsn)  # nothing is frozen before the approval
        resume_flow_run(run_id, run_input={"approver": "Dana (DBA)", "comment": "CHG-42",
                                           "confirm": True})
        th.join(timeout=300)
        app.stop()
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert result["outcome"] == "switched", result
    assert result["approver"] == "Dana (DBA)" and result["comment"] == "CHG-42"
    assert any("self-declared" in n for n in result["notes"])
    assert [s["name"] for s in result["steps"]] == [
        "preconditions", "approval", "full pass", "freeze", "drain", "final check",
        "sequences", "switch", "teardown"]
    assert all(s["outcome"] == "done" for s in result["steps"]), result["steps"]
    assert 0 < result["downtime_seconds"] < 60

    # the application was stopped by the freeze: its session ended, new ones read-only
    assert "ReadOnlySqlTransaction" in app.refused or result["sessions_terminated"] >= 1
    assert not app_can_write(app_dsn)
    # every insert the application saw commit is on the target, every row equal
    for table in TABLES:
        assert rows(target_db.dsn, table) == rows(source_db.dsn, table), table
    assert set(app.committed) <= set(rows(target_db.dsn, TABLES[1]))
    # the hooks ran: the freeze's command with its step, the switch's webhook with the id
    assert (tmp_path / "proxy").read_text().split() == ["freeze", "proxy"]
    assert [b["step"] for b in switch.json_bodies()] == ["switch"]
    assert switch.json_bodies()[0]["migration_id"] == migration_id

    # the target takes the application's writes: identity, sequence, defaults, constraints
    with psycopg.connect(target_db.dsn, autocommit=True) as conn:
        most = conn.execute("SELECT max(id) FROM app.customers").fetchone()[0]  # type: ignore
        new = conn.execute("INSERT INTO app.customers (email) VALUES ('new@example.com') "
                           "RETURNING id, status, created_at").fetchone()
        assert new is not None and new[0] > most and new[1] == "new" and new[2] is not None
        lines = conn.execute('SELECT max(id) FROM app."Order Lines"').fetchone()[0]  # type: ignore
        line = conn.execute('INSERT INTO app."Order Lines" (customer_id) VALUES (%s) '
                            "RETURNING id, total", [new[0]]).fetchone()
        assert line is not None and line[0] > lines and line[1] == 0
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute('INSERT INTO app."Order Lines" (customer_id) VALUES (-1)')
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO app.customers (email, status) VALUES ('x@y', 'bogus')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO app.customers (email) VALUES ('c1@example.com')")

    # CDC torn down: no slot left on the source
    with source_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE database = %s",
                            [source_db.name]).fetchone()[0] == 0  # type: ignore[index]
    # the report carries the cutover; notifications at start and at the switch arrived
    folder = runs.run_dir(migration_id)
    report = json.loads((folder / "report.json").read_text())
    assert report["cutover"]["outcome"] == "switched"
    assert report["cutover"]["downtime_seconds"] == result["downtime_seconds"]
    html = (folder / "report.html").read_text()
    assert 'id="cutover-timeline"' in html and "Dana (DBA)" in html
    subjects = [b["subject"] for b in notices.json_bodies()]
    assert any("cutover started" in b["body"] for b in notices.json_bodies()), subjects
    assert any("cutover switched" in b["body"] for b in notices.json_bodies()), subjects
    pushed = requests.get(f"{spec.metrics.pushgateway_url}/metrics", timeout=10).text
    assert f'migwatch_cutover_downtime_seconds{{instance="",job="migwatch-cutover",' \
           f'migration_id="{migration_id}"}}' in pushed


def test_a_failing_switch_hook_undoes_the_freeze_and_cdc_keeps_running(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        app_role: tuple[str, str], cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    role, app_dsn = app_role
    with webhook_receiver(status=503) as switch:
        spec = make_spec(source_db, target_db, TABLES, stack, **FAST,
                         cutover={"switch": {"url": switch.url}, "max_report_age_seconds": 1})
        cleanup.append(spec)
        spec_path = write_spec(spec, tmp_path / "spec.yaml")
        app = AppWriter(app_dsn)
        app.start()
        go_migration(spec, spec_path, migration_id)
        time.sleep(1.5)
        # a precondition failing (the GO is older than allowed) refuses before any freeze
        with pytest.raises(CutoverRefused, match="older than cutover.max_report_age_seconds"):
            cutover(spec_path, migration_id, ask_approval=False)
        assert app_can_write(app_dsn)
        assert json.loads((runs.run_dir(migration_id) / "cutover.json").read_text())[
            "outcome"] == "refused"

        # nobody approves in time: refused, nothing frozen
        spec = make_spec(source_db, target_db, TABLES, stack, **FAST,
                         cutover={"switch": {"url": switch.url}, "approval_timeout_seconds": 3})
        spec_path = write_spec(spec, tmp_path / "spec.yaml")
        with pytest.raises(CutoverRefused, match="no approval in time"):
            cutover(spec_path, migration_id)
        assert app_can_write(app_dsn)

        with pytest.raises(CutoverAborted, match="answered 503") as err:
            cutover(spec_path, migration_id, approved_by="ci")
        app_writes_before = len(app.committed)
        assert "source read-only setting" in err.value.undone
        assert [b["step"] for b in switch.json_bodies()] == ["switch"]

    # the source is writable again for the application, and its writes still reach the target
    assert app_can_write(app_dsn)
    deadline = time.monotonic() + 60
    while len(app.committed) < app_writes_before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    app.stop()
    assert len(app.committed) >= app_writes_before + 20, app.refused[-5:]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all(rows(target_db.dsn, t) == rows(source_db.dsn, t) for t in TABLES):
            break
        time.sleep(1)
    for table in TABLES:
        assert rows(target_db.dsn, table) == rows(source_db.dsn, table), table
    cut = json.loads((runs.run_dir(migration_id) / "cutover.json").read_text())
    assert cut["outcome"] == "aborted"
    assert [s["name"] for s in cut["steps"]][-2:] == ["switch", "undo freeze"]
    assert cut["steps"][-2]["outcome"] == "failed"
    assert cut["downtime_seconds"] is not None

    # the cutover's process stopped while frozen: on SIGTERM the run crashes and undoes the
    # freeze itself; on SIGKILL the record says how to undo it, and the CLI does
    spec = make_spec(source_db, target_db, TABLES, stack, **FAST,
                     cutover={"switch": {"command": ["sleep", "300"], "timeout_seconds": 600}})
    spec_path = write_spec(spec, tmp_path / "spec.yaml")
    record = runs.run_dir(migration_id) / "cutover.json"
    cli = [".venv/bin/migwatch", "cutover", spec_path, "--migration-id", migration_id]

    def frozen_in_switch() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*cli, "--yes"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            steps = json.loads(record.read_text())["steps"] if record.exists() else []
            if steps and steps[-1]["name"] == "switch" and steps[-1]["ended_at"] is None:
                return proc
            time.sleep(0.5)
        raise AssertionError("the cutover never reached its switch")

    proc = frozen_in_switch()
    assert not app_can_write(app_dsn)
    proc.send_signal(signal.SIGTERM)  # the CLI process only: its hook keeps sleeping
    proc.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert app_can_write(app_dsn)
    crashed = json.loads(record.read_text())
    assert crashed["outcome"] == "aborted" and crashed["frozen_before"] is None
    assert any("crashed" in u for u in crashed["undone"]), crashed["undone"]

    proc = frozen_in_switch()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert not app_can_write(app_dsn)
    refused = subprocess.run([*cli, "--check"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "read-only already" in refused.stderr + refused.stdout
    undone = subprocess.run([*cli, "--undo-freeze"], capture_output=True, text=True,
                            timeout=120)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert app_can_write(app_dsn)
    assert json.loads(record.read_text())["outcome"] == "aborted"


def test_a_mongodb_target_cuts_over_without_sequences(
        stack: Stack, source_db: PgDatabase, mongo_db: str, migration_id: str,
        app_role: tuple[str, str], cleanup: list[MigrationSpec], tmp_path: Path) -> None:
    role, app_dsn = app_role
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), TABLES, stack, **FAST)
    cleanup.append(spec)
    spec_path = write_spec(spec, tmp_path / "spec.yaml")
    app = AppWriter(app_dsn)
    app.start()
    go_migration(spec, spec_path, migration_id)
    # asked on the CLI and answered no: nothing changes
    asked = subprocess.run([".venv/bin/migwatch", "cutover", spec_path, "--migration-id",
                            migration_id], input="n\n", capture_output=True, text=True,
                           timeout=120)
    assert asked.returncode == 1 and "not approved: nothing was changed" in asked.stdout, \
        asked.stdout + asked.stderr
    assert app_can_write(app_dsn)
    result = cutover(spec_path, migration_id, approved_by="ci")
    app.stop()
    assert result["outcome"] == "switched", result
    steps = {s["name"]: s for s in result["steps"]}
    assert "the target keeps none" in steps["sequences"]["detail"]
    client: MongoClient[Any] = MongoClient(stack.address("ferretdb"))
    try:
        ids = {d["_id"] for d in client[mongo_db]["Order Lines"].find({}, {"_id": 1})}
    finally:
        client.close()
    assert set(app.committed) <= ids
    assert len(ids) == len(rows(source_db.dsn, TABLES[1]))


def test_the_cli_refuses_a_migration_without_a_report(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        tmp_path: Path) -> None:
    with source_db.connect() as conn:
        conn.execute(SCHEMA)
    spec = make_spec(source_db, target_db, TABLES, stack)
    spec_path = write_spec(spec, tmp_path / "spec.yaml")
    done = subprocess.run([".venv/bin/migwatch", "cutover", spec_path, "--migration-id",
                           migration_id, "--yes"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no report for this migration" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
