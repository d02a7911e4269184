"""The whole pipeline on the real stack, as a user runs it: migrate → validate →
monitor-until-caught-up → report, with the source taking writes during the run.

A clean run ends GO and its report carries the source's row counts, lag values Prometheus also
saw, artifacts and an HTML page Chromium renders with its charts; a run whose target holds a row
the source never had ends NO-GO naming that table and key, with its report still written.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from psycopg import sql

from flows.migrate import migrate
from flows.pipeline import migration_pipeline
from migwatch import capture, processes, runs, workload
from migwatch.config import MigrationSpec
from migwatch.connectors.prometheus import PrometheusClient
from migwatch.errors import MigwatchError, ValidationFailed
from migwatch.stack import Stack
from tests.browser import ensure_chromium, render
from tests.conftest import PgDatabase, make_spec
from tests.flows.test_cdc_apply_flow import write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")

SHOP = list(workload.SHOP_TABLES)
FAST = {
    "connect": {"heartbeat_interval_ms": 1000},
    "monitor": {"poll_interval_seconds": 1, "consecutive_polls": 3, "window_size": 6,
                "timeout_seconds": 300},
    "snapshot": {"poll_interval_seconds": 1},
}


@pytest.fixture
def pipeline_spec(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                  migration_id: str, tmp_path: Path) -> Iterator[tuple[MigrationSpec, str]]:
    """The shop workload on the source, a spec for it, and everything removed afterwards."""
    workload.init(source_db.dsn, 2000)
    spec = make_spec(source_db, target_db, SHOP, stack, **FAST)
    yield spec, write_spec(spec, tmp_path / "spec.yaml")
    processes.stop_applier(migration_id)
    capture.teardown(spec, migration_id, delete_topics=True, timeout=90)
    requests.delete(f"{spec.metrics.pushgateway_url}/metrics/job/migwatch/migration_id/"
                    f"{migration_id}", timeout=10)


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(*t.split(".")))).fetchone()[0]) for t in SHOP}  # type: ignore[index]


def artifact_keys(prefix: str) -> set[str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(like_=prefix)))
    return {a.key for a in found if a.key}


def writing_until_monitored(dsn: str, migration_id: str, limit: float = 120) -> threading.Thread:
    """The source takes writes through migrate and validate; they stop once the monitor stage
    starts, so the report's counts can be compared with the final ones on both sides."""

    def run() -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if "monitor" in runs.load(migration_id).stages:
                    return
            except MigwatchError:
                pass  # the run has not written its record yet
            workload.run(dsn, rate=60, duration=1)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_a_run_with_a_moving_source_is_go_with_the_right_figures(
        stack: Stack, pipeline_spec: tuple[MigrationSpec, str], source_db: PgDatabase,
        target_db: PgDatabase, migration_id: str) -> None:
    spec, spec_path = pipeline_spec
    ensure_chromium(stack)
    writer = writing_until_monitored(source_db.dsn, migration_id)
    summary = migration_pipeline(spec_path, migration_id)
    writer.join()

    assert summary["go"], summary["reasons"]
    record = runs.load(migration_id)
    assert [record.stages[s].status for s in runs.STAGES] == ["completed"] * 4
    report: dict[str, Any] = json.loads(Path(summary["paths"]["json"]).read_text())
    assert report["verdict"]["go"] and report["caught_up"]
    # the report's counts are the source's (the writer has stopped: both sides are final)
    final = counts(source_db.dsn)
    assert {t["source_table"]: t["rows_source"] for t in report["tables"]} == final
    assert {t["source_table"]: t["rows_target"] for t in report["tables"]} == final
    assert counts(target_db.dsn) == final
    assert all(t["validation"] == "equal" for t in report["tables"])
    assert sum(t["rows_snapshot"] for t in report["tables"]) >= 2000 * 0.9
    assert sum(t["changes_applied"] for t in report["tables"]) > 0  # the writes went through

    # lag: the report's last data lag is under its caught-up threshold, and Prometheus, which
    # scraped the monitor, saw the same figure within a scrape or two
    lag = {m["name"]: m for m in report["lag"]}
    data_lag = lag["data_lag_seconds"]
    assert data_lag["last"] is not None and data_lag["last"] <= data_lag["caught_up"]
    with PrometheusClient(spec.metrics.prometheus_url) as prom:
        seen = prom.query(f'max_over_time(migration_data_lag_seconds{{migration_id='
                          f'"{migration_id}"}}[10m])')
    assert seen and abs(seen[0].value - data_lag["peak"]) <= max(3.0, 0.2 * data_lag["peak"])

    keys = artifact_keys(f"report-{migration_id}%")
    assert {f"report-{migration_id}", f"report-{migration_id}-tables"} <= keys

    # the report's metrics reached the Pushgateway, and the summary says so
    assert summary["pushed"] is True
    groups = requests.get(spec.metrics.pushgateway_url.rstrip("/") + "/api/v1/metrics",
                          timeout=10).json()["data"]
    verdicts = [g for g in groups if g["labels"].get("migration_id") == migration_id
                and "migwatch_verdict_go" in g]
    assert verdicts, f"no group of {migration_id} with the verdict on the Pushgateway"

    page = render(Path(summary["paths"]["html"]), f"pipeline-{migration_id}.png")
    assert page["verdict"].startswith("GO")
    assert [t["table"] for t in page["tables"]] == SHOP
    drawn = {c["id"]: c for c in page["charts"]}
    assert drawn["lag-seconds"]["lines"] and all(
        ln["length"] > 0 for ln in drawn["lag-seconds"]["lines"])
    assert drawn["throughput"]["lines"]


def test_a_row_the_source_never_had_makes_it_no_go_naming_table_and_key(
        pipeline_spec: tuple[MigrationSpec, str], source_db: PgDatabase, target_db: PgDatabase,
        migration_id: str) -> None:
    spec, spec_path = pipeline_spec
    # a fresh run refuses target tables that already hold rows (TargetNotEmpty), so the ghost
    # row arrives while the migration runs: after its migrate stage, which the pipeline's own
    # migrate stage then resumes (connector and applier found as they are)
    migrate(spec_path, migration_id)
    with target_db.connect() as conn:
        conn.execute("INSERT INTO customers (id, email, is_active, created_at) "
                     "VALUES (987654, 'ghost@example.com', true, now())")
    with pytest.raises(ValidationFailed, match="no-go"):
        migration_pipeline(spec_path, migration_id)

    report = json.loads((runs.run_dir(migration_id) / "report.json").read_text())
    assert not report["verdict"]["go"]
    customers = next(t for t in report["tables"] if t["source_table"] == "public.customers")
    assert customers["validation"] == "mismatched" and customers["mismatched_rows"] == 1
    assert customers["differing_keys"] == [{"id": 987654}]
    assert any("public.customers" in r and "987654" in r for r in report["verdict"]["reasons"])
    others = [t for t in report["tables"] if t["source_table"] != "public.customers"]
    assert all(t["validation"] == "equal" for t in others)
    assert (runs.run_dir(migration_id) / "report.html").exists()
    assert runs.load(migration_id).stages["report"].status == "completed"
