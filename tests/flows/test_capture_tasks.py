"""The capture tasks under a real Prefect API, and `migwatch teardown`: plain data back, retries
on TransientError only, and the CLI's exit codes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from migwatch import names
from migwatch.capture import connector_status as core_status
from migwatch.cli import app
from migwatch.config import MigrationSpec, parse_spec
from migwatch.connectors import kafka
from migwatch.errors import PreflightError, TransientError
from migwatch.stack import Stack
from tasks.capture import (
    connector_status,
    ensure_connector,
    preflight,
    prepare_source,
    prepare_target_schema,
    teardown,
)
from tests.conftest import PgDatabase, make_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def spec(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
         migration_id: str) -> Any:
    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v numeric(6,2));"
                     "INSERT INTO public.t VALUES (1, 2.50)")
    s = make_spec(source_db, target_db, ["public.t"], stack,
                  connect={"heartbeat_interval_ms": 1000, "ready_timeout_seconds": 90})
    yield s
    from migwatch.capture import teardown as core_teardown

    core_teardown(s, migration_id, delete_topics=True, timeout=90)  # before the db is dropped


def _wait_for_topic(bootstrap: str, topic: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    client = kafka.admin(bootstrap)
    try:
        while topic not in client.list_topics():
            assert time.monotonic() < deadline, f"no topic {topic} after {timeout:.0f}s"
            time.sleep(0.2)
    finally:
        client.close()


def _run_count(state: Any) -> int:
    async def read() -> int:
        async with get_client() as client:
            run = await client.read_task_run(state.state_details.task_run_id)
            return run.run_count

    return asyncio.run(read())


def test_the_capture_tasks_run_a_connector_lifecycle_and_return_plain_data(
        spec: MigrationSpec, migration_id: str, target_db: PgDatabase) -> None:
    topic = names.table_topic(migration_id, "public.t")

    @flow
    def lifecycle() -> dict[str, Any]:
        out = {
            "preflight": preflight(spec, migration_id),
            "source": prepare_source(spec, migration_id),
            "schema": prepare_target_schema(spec),
            "connector": ensure_connector(spec, migration_id),
            "status": connector_status(spec, migration_id),
        }
        # RUNNING comes before the snapshot's first event: the table's topic exists only then
        _wait_for_topic(spec.kafka.bootstrap_servers, topic)
        return {**out, "teardown": teardown(spec, migration_id, delete_topics=True)}

    out = lifecycle()
    assert "wal_level=logical" in out["preflight"]
    assert out["source"] == "public.migwatch_heartbeat"
    assert out["schema"] == {"created": ("public.t", "public.migwatch_heartbeat"), "present": ()}
    assert (out["connector"]["action"], out["connector"]["state"]) == ("created", "RUNNING")
    assert out["status"]["running"] is True and out["status"]["tasks"][0]["state"] == "RUNNING"
    assert out["teardown"]["connector"] and out["teardown"]["slot"]
    assert topic in out["teardown"]["topics"]
    assert core_status(spec, migration_id).state == "ABSENT"


def test_an_unreachable_connect_is_retried_and_a_failed_preflight_is_not(
        spec: MigrationSpec, migration_id: str) -> None:
    dead = parse_spec({**spec.model_dump(), "connect": {"url": "http://127.0.0.1:1"}})
    missing = parse_spec({**spec.model_dump(), "tables": ["public.t", "public.nope"]})
    quick = {"retries": 2, "retry_delay_seconds": 0, "retry_jitter_factor": None}

    @flow
    def run() -> tuple[Any, Any]:
        return (connector_status.with_options(**quick)(dead, migration_id, return_state=True),
                preflight.with_options(**quick)(missing, migration_id, return_state=True))

    status, checked = run()
    assert status.is_failed() and checked.is_failed()
    with pytest.raises(TransientError):
        status.result()
    assert _run_count(status) == 3
    with pytest.raises(PreflightError, match="public.nope"):
        checked.result()
    assert _run_count(checked) == 1


def test_the_teardown_command_exits_0_and_2(spec: MigrationSpec, migration_id: str,
                                            tmp_path: Path, source_db: PgDatabase) -> None:
    from migwatch.capture import ensure_connector as core_ensure

    core_ensure(spec, migration_id, timeout=90)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    runner = CliRunner()

    done = runner.invoke(app, ["teardown", str(path), "--migration-id", migration_id,
                               "--delete-topics"])
    assert done.exit_code == 0, done.output
    assert "connector" in done.output and "deleted" in done.output
    assert "dropped" in done.output
    with source_db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                            [names.slot_name(migration_id)]).fetchone() == (0,)

    again = runner.invoke(app, ["teardown", str(path), "--migration-id", migration_id])
    assert again.exit_code == 0 and "deleted" not in again.output

    bad = runner.invoke(app, ["teardown", str(path), "--migration-id", "Not_Valid"])
    assert bad.exit_code == 2
    assert "migration_id" in bad.output
