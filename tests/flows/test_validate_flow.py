"""The validate flow end to end under a real Prefect API, on the real databases: plain data, a
saved result the report stage can load, artifacts, and `ValidationFailed` only when strict."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prometheus_client.exposition import delete_from_gateway

from flows.validate import validate
from migwatch import workload
from migwatch.config import StackSettings
from migwatch.errors import ValidationFailed
from migwatch.stack import Stack
from migwatch.validation import load_result, result_path
from tests.conftest import PgDatabase, make_spec
from tests.integration.validation_helpers import copy_tables

pytestmark = pytest.mark.usefixtures("prefect_harness")

TABLES = ["public.customers", "public.orders", "public.order_items"]


@pytest.fixture
def spec_path(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
              tmp_path: Path) -> Path:
    workload.init(source_db.dsn, 2000)
    copy_tables(source_db.dsn, target_db.dsn, TABLES)
    spec = make_spec(source_db, target_db, TABLES, stack,
                     validation={"chunk_rows": 250, "workers": 2})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    return path


@pytest.fixture
def saved(stack: Stack, migration_id: str) -> Iterator[Path]:
    """The result file the flow writes; removed afterwards, with the pushed metrics."""
    path = result_path(StackSettings().state_dir, migration_id)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)
    delete_from_gateway(f"{stack.s.host}:{stack.s.pushgateway_port}", job="migwatch-validate",
                        grouping_key={"migration_id": migration_id})


def artifacts(key: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key])))


def run_sql(db: PgDatabase, statement: str) -> None:
    with db.connect() as conn:
        conn.execute(statement)


def test_equal_tables(stack: Stack, spec_path: Path, migration_id: str, saved: Path) -> None:
    out = validate(str(spec_path), migration_id)

    assert out["status"] == "equal" and out["result_path"] == str(saved)
    assert [t["table"] for t in out["tables"]] == TABLES  # in spec order
    assert all(t["expectations"]["success"] for t in out["tables"])
    loaded = load_result(migration_id)  # what the report stage reads
    assert loaded.status == "equal" and loaded.table("orders").rows_compared == 600
    [summary] = artifacts(f"validate-{migration_id}-tables")
    assert summary.type == "table" and "public.order_items" in str(summary.data)
    progress = artifacts(f"validate-{migration_id}")
    assert progress and progress[0].data == 100.0
    assert artifacts(f"validate-{migration_id}-public-orders")  # per-table progress
    # the stage's metrics are on the Pushgateway under this migration id
    pushed = requests.get(f"http://{stack.s.host}:{stack.s.pushgateway_port}/metrics",
                          timeout=10).text
    assert any(line.startswith("migwatch_validation_rows_compared_total{")
               and f'migration_id="{migration_id}"' in line and 'table_name="public.orders"'
               in line and line.endswith(" 600") for line in pushed.splitlines())


def test_differences_are_returned_pending_and_not_raised(
        spec_path: Path, target_db: PgDatabase, migration_id: str, saved: Path) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'lost' WHERE id = 17")
    out = validate(str(spec_path), migration_id, strict=True)  # pending is not a failure

    orders = next(t for t in out["tables"] if t["table"] == "public.orders")
    assert orders["status"] == "pending" and out["status"] == "pending"
    assert orders["sample"][0]["key"] == {"id": 17}
    assert load_result(migration_id).table("orders").pending_ranges()


def test_strict_raises_validation_failed_naming_table_and_expectation(
        spec_path: Path, target_db: PgDatabase, migration_id: str, saved: Path) -> None:
    run_sql(target_db, "DELETE FROM public.customers WHERE id = 21")
    run_sql(target_db, "ALTER TABLE public.order_items ALTER COLUMN sku DROP NOT NULL")
    run_sql(target_db, "UPDATE public.order_items SET sku = NULL "
                       "WHERE order_id = 3 AND line_no = 1")
    with pytest.raises(ValidationFailed) as err:
        validate(str(spec_path), migration_id, strict=True, moving_source=False)

    message = str(err.value)
    assert "public.customers: 1 missing" in message
    assert "public.order_items: expect_column_values_to_not_be_null(sku)" in message
    report = err.value.report
    assert report["status"] == "different"
    assert saved.exists()  # the report stage still finds the result
    [gx] = artifacts(f"validate-{migration_id}-expectations")
    assert "expect_column_values_to_not_be_null(sku)" in str(gx.data)


def test_without_strict_differences_and_errors_are_returned(
        spec_path: Path, target_db: PgDatabase, migration_id: str, saved: Path) -> None:
    run_sql(target_db, "DROP TABLE public.customers")
    run_sql(target_db, "UPDATE public.orders SET total = -1 WHERE id = 5")
    out = validate(str(spec_path), migration_id, moving_source=False)
    tables = {t["table"]: t for t in out["tables"]}
    customers = tables["public.customers"]
    assert customers["status"] == "error" and "does not exist" in customers["error"]
    assert customers["expectations"] is None  # no suite on a table that could not be read
    assert tables["public.orders"]["status"] == "different"
    assert tables["public.order_items"]["expectations"]["success"]
    assert out["status"] == "error"


def test_revalidate_task_resolves_the_saved_pending_ranges(
        spec_path: Path, target_db: PgDatabase, migration_id: str, saved: Path) -> None:
    from prefect import flow

    from migwatch.config import load_spec
    from tasks.validate import revalidate_pending
    from tests.integration.test_validation_revalidate import caught_up

    run_sql(target_db, "UPDATE public.orders SET status = 'lost' WHERE id = 33")
    out = validate(str(spec_path), migration_id, expectations=False)
    assert out["status"] == "pending"
    assert [r["row_keys"] for t in out["tables"] for r in t["ranges"]] == [[[33]]]
    run_sql(target_db, "UPDATE public.orders SET status = 'paid' WHERE id = 33")  # CDC applies
    caught_up(target_db, migration_id, [t["table"] for t in out["tables"]])

    @flow
    def report_stage() -> dict[str, Any]:
        return revalidate_pending(load_spec(spec_path), migration_id, timeout_seconds=30)

    again = report_stage()
    assert again["status"] == "equal"
    assert load_result(migration_id).status == "equal"  # saved for the report
