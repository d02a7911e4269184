"""`migwatch validate SPEC [--migration-id ID]` on the real stack: exit 0 equal, 1 differences,
2 could not compare; the located keys on stdout; the saved result re-checked with --revalidate.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from migwatch import workload
from migwatch.cli import app
from migwatch.config import StackSettings
from migwatch.stack import Stack
from migwatch.validation import result_path
from tests.conftest import PgDatabase, make_spec
from tests.integration.test_validation_revalidate import caught_up
from tests.integration.validation_helpers import copy_tables

TABLES = ["public.customers", "public.orders"]


@pytest.fixture
def spec_path(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
              tmp_path: Path) -> Path:
    workload.init(source_db.dsn, 2000)
    copy_tables(source_db.dsn, target_db.dsn, TABLES)
    spec = make_spec(source_db, target_db, TABLES, stack, validation={"chunk_rows": 200})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    return path


@pytest.fixture
def saved(migration_id: str) -> Iterator[Path]:
    path = result_path(StackSettings().state_dir, migration_id)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["validate", *args])


def run_sql(db: PgDatabase, statement: str) -> None:
    with db.connect() as conn:
        conn.execute(statement)


def test_equal_exits_0(spec_path: Path, tmp_path: Path) -> None:
    res = cli(str(spec_path), "--output", str(tmp_path / "r.json"), "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "equal" in res.output and "public.orders" in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["status"] == "equal"
    assert all(t["expectations"]["success"] for t in data["tables"])


def test_differences_exit_1_with_located_keys(spec_path: Path, target_db: PgDatabase) -> None:
    run_sql(target_db, "UPDATE public.orders SET total = 0 WHERE id = 321")
    run_sql(target_db, "DELETE FROM public.customers WHERE id = 12")
    res = cli(str(spec_path), "--no-expectations")
    assert res.exit_code == 1, res.output
    assert "public.orders changed {'id': 321} columns total" in res.output
    assert "public.customers missing {'id': 12}" in res.output
    assert "<redacted>" not in res.output  # nothing to show when values are not allowed


def test_could_not_compare_exits_2(spec_path: Path, target_db: PgDatabase) -> None:
    run_sql(target_db, "DROP TABLE public.orders")
    res = cli(str(spec_path), "--no-expectations", "-t", "orders")
    assert res.exit_code == 2, res.output
    assert "could not compare" in res.output and "does not exist" in res.output
    bad = cli(str(spec_path), "-t", "no_such_table")
    assert bad.exit_code == 2 and "no_such_table" in bad.output
    assert cli(str(spec_path.parent / "missing.yaml")).exit_code == 2


def test_pending_then_revalidated(spec_path: Path, target_db: PgDatabase, migration_id: str,
                                  saved: Path) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'stale' WHERE id = 9")
    res = cli(str(spec_path), "--migration-id", migration_id, "--no-expectations")
    assert res.exit_code == 1, res.output
    assert "pending" in res.output and "--revalidate" in res.output
    assert saved.exists()
    tables = [t["table"] for t in json.loads(saved.read_text())["tables"]]

    run_sql(target_db, "UPDATE public.orders SET status = 'paid' WHERE id = 9")  # CDC catches up
    caught_up(target_db, migration_id, tables)
    res = cli(str(spec_path), "--migration-id", migration_id, "--revalidate")
    assert res.exit_code == 0, res.output
    assert json.loads(saved.read_text())["status"] == "equal"
    assert cli(str(spec_path), "--revalidate").exit_code == 2  # needs --migration-id


def test_json_is_one_document_on_stdout_with_the_same_exit_code(
        spec_path: Path, target_db: PgDatabase) -> None:
    run_sql(target_db, "DELETE FROM public.customers WHERE id = 12")
    res = cli(str(spec_path), "--json", "--workers", "1")  # with the expectations' output
    assert res.exit_code == 1, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout  # progress and the expectations went to stderr
    doc = json.loads(lines[0])
    assert doc["schema_version"] == 1 and doc["status"] == "different"
    tables = {t["table"]: t for t in doc["tables"]}
    assert tables["public.customers"]["missing"] == 1
    assert tables["public.orders"]["status"] == "equal"
    assert tables["public.orders"]["expectations"]["success"]
