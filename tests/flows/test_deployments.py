"""prefect.yaml as a user deploys it, on the stack's own Prefect server: `prefect deploy --all`
creates every deployment, and a process worker runs one of them from this checkout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from migwatch import runs
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec
from tests.integration.validation_helpers import copy_tables

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "migwatch"
EXPECTED = {
    "migration-pipeline/shop": "flows/pipeline.py:migration_pipeline",
    "cdc-applier/shop": "flows/cdc_apply.py:cdc_applier",
    "validate/shop-nightly": "flows/validate.py:validate",
    "report/shop": "flows/report.py:report",
    "cutover/shop": "flows/cutover.py:cutover",
}


@pytest.fixture
def stack_api(stack: Stack) -> Iterator[dict[str, str]]:
    """The environment a user's shell has: the stack's Prefect API and this checkout."""
    api = stack.address("prefect-server")
    env = {**os.environ, "PREFECT_API_URL": api, "MIGWATCH_PROJECT_DIR": str(REPO),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with temporary_settings({PREFECT_API_URL: api}):
        yield env


def prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PREFECT, "--no-prompt", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def worker(stack_api: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    made = prefect(stack_api, "work-pool", "create", POOL, "--type", "process")
    assert made.returncode == 0 or "already exists" in made.stdout + made.stderr, made.stderr
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL],
                            cwd=tmp_path, env={**stack_api, "PREFECT_WORKER_QUERY_SECONDS": "2"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_deploy_all_then_a_worker_runs_the_nightly_validation(
        stack: Stack, stack_api: dict[str, str], worker: subprocess.Popen[bytes],
        source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        tmp_path: Path) -> None:
    deployed = prefect(stack_api, "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    with get_client(sync_client=True) as client:
        found = {name: client.read_deployment_by_name(name) for name in EXPECTED}
    for name, entrypoint in EXPECTED.items():
        assert found[name].entrypoint == entrypoint, name
        assert found[name].work_pool_name == POOL
    assert found["validate/shop-nightly"].schedules  # nightly, off until a migration is live
    assert found["migration-pipeline/shop"].parameters["spec_path"] == "deployments/shop.yaml"
    assert found["cutover/shop"].parameters["ask_approval"] is True  # pauses for the form

    with source_db.connect() as conn:
        conn.execute("CREATE TABLE public.accounts (id bigint PRIMARY KEY, owner text, "
                     "balance numeric(12,2), opened timestamptz)")
        conn.execute("INSERT INTO public.accounts SELECT g, 'Åsa ' || g, g * 1.5, now() "
                     "FROM generate_series(1, 500) g")
    copy_tables(source_db.dsn, target_db.dsn, ["public.accounts"])
    spec = make_spec(source_db, target_db, ["public.accounts"], stack)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))

    started = time.monotonic()
    run = run_deployment("validate/shop-nightly", timeout=300, parameters={
        "spec_path": str(spec_path), "migration_id": migration_id, "expectations": False})
    assert run.state is not None and run.state.is_completed(), (
        run.state, (tmp_path / "worker.log").read_text(errors="replace")[-3000:])
    # the flow ran in the worker's child process: what it found is in the run's folder
    result = json.loads((runs.run_dir(migration_id) / "validation.json").read_text())
    assert result["status"] == "equal" and result["tables"][0]["source_rows"] == 500
    assert time.monotonic() - started < 300
