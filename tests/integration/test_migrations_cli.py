"""`migwatch migrations status|up|down|repair` on the real PostgreSQL target and FerretDB.

Exit codes: 0 done, 1 a migration failed or an edited applied script was refused, 2 bad input or
an unreachable/locked target; every error is one line naming what is wrong, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import MongoClient
from typer.testing import CliRunner

from migwatch.cli import app
from migwatch.config import parse_spec
from migwatch.metrics import REGISTRY
from migwatch.migrations import open_backend
from migwatch.stack import Stack
from tests.conftest import PgDatabase, mongo_endpoint

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Target:
    """One target under test and how to write scripts for it and read what they did."""

    kind: str  # "sql" or "mongodb"
    endpoint: dict[str, Any]
    folder: Path
    spec_path: Path
    log: Any  # () -> list[str]: versions whose script ran, in order

    def write(self, version: str, body: str = "", desc: str = "step") -> Path:
        if self.kind == "sql":
            text = ("CREATE TABLE IF NOT EXISTS applied_log (n serial PRIMARY KEY, v text);\n"
                    f"INSERT INTO applied_log (v) VALUES ('{version}');\n{body}\n")
            path = self.folder / f"V{version}__{desc}.sql"
        else:
            lines = "".join(f"    {line}\n" for line in body.splitlines())
            text = ("def up(db, session, progress):\n"
                    "    n = db.applied_log.count_documents({})\n"
                    f"    db.applied_log.insert_one({{'n': n, 'v': '{version}'}})\n"
                    "    progress('applied_log', 1)\n"
                    f"{lines}\n\ndef down(db, session, progress):\n"
                    f"    db.applied_log.delete_many({{'v': '{version}'}})\n")
            path = self.folder / f"V{version}__{desc}.py"
        path.write_text(text)
        return path

    def failing(self) -> str:
        return "SELECT * FROM no_such_table;" if self.kind == "sql" else \
            "raise ValueError('no such thing')"


def write_spec(path: Path, target: dict[str, Any], folder: Path, **migrations: Any) -> Path:
    data = {"source": {"kind": "postgres", "port": 15432, "database": "unused"},
            "target": target, "tables": ["public.unused"],
            "migrations": {"folder": str(folder), "lock_timeout_seconds": 5, **migrations}}
    path.write_text(yaml.safe_dump(data))
    return path


def _pg_target(db: PgDatabase, tmp_path: Path) -> Target:
    folder = tmp_path / "migrations"
    folder.mkdir()

    def log() -> list[str]:
        with db.connect() as conn:
            if conn.execute("SELECT to_regclass('public.applied_log')").fetchone()[0] is None:
                return []
            return [r[0] for r in conn.execute("SELECT v FROM applied_log ORDER BY n")]

    return Target("sql", db.endpoint(), folder,
                  write_spec(tmp_path / "spec.yaml", db.endpoint(), folder), log)


def _mongo_target(stack: Stack, database: str, tmp_path: Path) -> Target:
    folder = tmp_path / "migrations"
    folder.mkdir()
    db = MongoClient(stack.address("ferretdb"))[database]
    endpoint = mongo_endpoint(stack, database)
    return Target("mongodb", endpoint, folder,
                  write_spec(tmp_path / "spec.yaml", endpoint, folder),
                  lambda: [d["v"] for d in db.applied_log.find().sort("n", 1)])


@pytest.fixture(params=["sql", "mongodb"])
def target(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sql":
        yield _pg_target(request.getfixturevalue("target_db"), tmp_path)
    else:
        yield _mongo_target(stack, request.getfixturevalue("mongo_db"), tmp_path)


@pytest.fixture
def pg(target_db: PgDatabase, tmp_path: Path) -> Target:
    return _pg_target(target_db, tmp_path)


@pytest.fixture
def mongo(stack: Stack, mongo_db: str, tmp_path: Path) -> Target:
    return _mongo_target(stack, mongo_db, tmp_path)


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, ["migrations", *map(str, args)])


def one_error_line(result: Any, *needles: str) -> str:
    """The command failed with exactly one `error:` line on stderr holding every needle."""
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def state_of(result: Any, version: str) -> str:
    """The state column of `version` in `status` output (rows start with the version)."""
    for line in result.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == version:
            return next(c for c in cells if c in
                        {"applied", "pending", "failed", "changed", "missing"})
    raise AssertionError(f"no row for {version} in:\n{result.stdout}")


# ----------------------------------------------------------------------------- both targets


def test_status_dry_run_up_to_a_version_then_the_rest(target: Target) -> None:
    for v in ["2", "1.10", "1", "1.9"]:
        target.write(v)

    status = cli("status", target.spec_path)
    assert status.exit_code == 0, status.output
    assert [state_of(status, v) for v in ["1", "1.9", "1.10", "2"]] == ["pending"] * 4
    assert "4 pending" in status.stdout

    dry = cli("up", target.spec_path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would apply 4 migration(s)" in dry.stdout
    order = [line.split()[0] for line in dry.stdout.splitlines() if line.startswith("  ")]
    assert order == ["1", "1.9", "1.10", "2"]
    assert target.log() == []
    backend = open_backend(parse_spec(yaml.safe_load(target.spec_path.read_text())))
    try:
        assert backend.history() == [] and backend.lock_holder() is None
    finally:
        backend.close()

    first = cli("up", target.spec_path, "--to", "1.9")
    assert first.exit_code == 0, first.output
    assert "✓ [1/2] up 1 step" in first.stdout and "✓ [2/2] up 1.9 step" in first.stdout
    assert "applied 2 migration(s)" in first.stdout
    tx = "in a transaction" if target.kind == "sql" else "no transaction"
    assert tx in first.stdout
    assert target.log() == ["1", "1.9"]

    rest = cli("up", target.spec_path)
    assert rest.exit_code == 0, rest.output
    assert "[1/2] up 1.10" in rest.stdout and "[2/2] up 2" in rest.stdout
    assert target.log() == ["1", "1.9", "1.10", "2"]

    again = cli("up", target.spec_path)
    assert again.exit_code == 0 and "nothing to apply" in again.stdout
    status = cli("status", target.spec_path)
    assert status.exit_code == 0 and "4 applied" in status.stdout
    assert [state_of(status, v) for v in ["1", "1.9", "1.10", "2"]] == ["applied"] * 4
    as_json = cli("status", target.spec_path, "--json")
    assert as_json.exit_code == 0
    rows = json.loads(as_json.stdout)["rows"]
    assert [(r["version"], r["state"], r["in_transaction"]) for r in rows] == \
        [(v, "applied", target.kind == "sql") for v in ["1", "1.9", "1.10", "2"]]


def test_a_failed_migration_and_an_edited_script_exit_1_until_repaired(target: Target) -> None:
    first = target.write("1")
    bad = target.write("2", target.failing(), desc="broken")
    target.write("3")

    failed = cli("up", target.spec_path)
    assert failed.exit_code == 1, failed.output
    one_error_line(failed, "MigrationFailed", "migration 2", bad.name)
    assert "✓ [1/3] up 1 step" in failed.stdout
    assert "✗ [2/3] up 2 broken" in failed.stdout
    assert ("rolled back" if target.kind == "sql" else "may be partly applied") in failed.stdout
    assert "[3/3]" not in failed.stdout  # it stopped at the failure

    status = cli("status", target.spec_path)
    assert status.exit_code == 1
    assert [state_of(status, v) for v in ["1", "2", "3"]] == ["applied", "failed", "pending"]
    assert "version 2" in status.stderr and "Traceback" not in status.output

    bad.write_text(bad.read_text().replace(target.failing(), ""))
    first.write_text(first.read_text() + "\n")  # an applied script edited after it ran
    refused = cli("up", target.spec_path)
    assert refused.exit_code == 1
    one_error_line(refused, "MigrationChanged", "version 1", first.name, "repair")
    status = cli("status", target.spec_path)
    assert status.exit_code == 1 and state_of(status, "1") == "changed"

    dry = cli("repair", target.spec_path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would accept the new checksum of version 1 ({first.name})" in dry.stdout
    assert f"would clear failed version 2 ({bad.name})" in dry.stdout
    assert state_of(cli("status", target.spec_path), "1") == "changed"  # nothing changed

    repaired = cli("repair", target.spec_path)
    assert repaired.exit_code == 0, repaired.output
    assert "accept the new checksum of version 1" in repaired.stdout
    assert "clear failed version 2" in repaired.stdout
    assert cli("repair", target.spec_path).stdout.strip().endswith("nothing to repair")

    done = cli("up", target.spec_path)
    assert done.exit_code == 0, done.output
    assert "applied 2 migration(s)" in done.stdout
    # with a transaction the failed V2 left nothing behind; without one its first insert stayed
    assert target.log() == (["1", "2", "3"] if target.kind == "sql" else ["1", "2", "2", "3"])
    assert cli("status", target.spec_path).exit_code == 0


def test_bad_input_unreachable_and_locked_targets_exit_2(target: Target,
                                                         tmp_path: Path) -> None:
    target.write("1")
    missing = cli("status", tmp_path / "nope.yaml")
    assert missing.exit_code == 2
    one_error_line(missing, "ConfigError", "nope.yaml", "does not exist")

    no_section = tmp_path / "no-migrations.yaml"
    data = yaml.safe_load(target.spec_path.read_text())
    del data["migrations"]
    no_section.write_text(yaml.safe_dump(data))
    one_error_line(cli("up", no_section), "ConfigError", "migrations")
    assert cli("up", no_section).exit_code == 2

    bad_version = cli("up", target.spec_path, "--to", "1.x")
    assert bad_version.exit_code == 2
    one_error_line(bad_version, "--to", "1.x")

    no_folder = write_spec(tmp_path / "no-folder.yaml", target.endpoint, tmp_path / "absent")
    result = cli("up", no_folder)
    assert result.exit_code == 2
    one_error_line(result, "migrations.folder", "absent", "does not exist")

    down_port = {**target.endpoint, "port": 1}  # nothing listens there
    unreachable = cli("status", write_spec(tmp_path / "down.yaml", down_port, target.folder))
    assert unreachable.exit_code == 2
    line = one_error_line(unreachable, "TransientError", "127.0.0.1:1")
    assert "migwatch-local" not in line  # the stack's password never shows

    holder = "ops@other-host:4242:deadbeef"
    backend = open_backend(parse_spec(yaml.safe_load(target.spec_path.read_text())))
    try:
        backend.ensure_storage()
        assert backend.try_lock(holder, 60).acquired
        locked = cli("up", write_spec(tmp_path / "short.yaml", target.endpoint, target.folder,
                                      lock_timeout_seconds=0.5))
        assert locked.exit_code == 2
        one_error_line(locked, "MigrationLocked", holder, "lock_timeout_seconds")
        status = cli("status", target.spec_path)
        assert status.exit_code == 0 and f"lock held by {holder}" in status.stdout
    finally:
        backend.release_lock(holder)
        backend.close()
    assert target.log() == []


# ----------------------------------------------------------------------------- per target


def test_sql_down_needs_an_undo_file(pg: Target) -> None:
    pg.write("1", desc="log")
    (pg.folder / "V2__index.sql").write_text("CREATE INDEX applied_log_v ON applied_log (v);")
    (pg.folder / "U2__index.sql").write_text("DROP INDEX applied_log_v;")
    assert cli("up", pg.spec_path).exit_code == 0

    dry = cli("down", pg.spec_path, "--dry-run")
    assert dry.exit_code == 0 and "would revert 1 migration(s)" in dry.stdout
    assert "U2__index.sql" in dry.stdout

    reverted = cli("down", pg.spec_path)
    assert reverted.exit_code == 0, reverted.output
    assert "✓ [1/1] down 2 index" in reverted.stdout and "reverted 1 migration(s)" in \
        reverted.stdout
    assert state_of(cli("status", pg.spec_path), "2") == "pending"

    refused = cli("down", pg.spec_path)
    assert refused.exit_code == 2
    one_error_line(refused, "PermanentError", "version 1", "no undo script")
    assert pg.log() == ["1"]


def test_mongo_down_to_a_version_and_documents_shown(mongo: Target) -> None:
    for v in ["1", "2", "3"]:
        mongo.write(v)
    before = REGISTRY.get_sample_value("mongodb_migration_documents_total",
                                       {"version": "2", "collection": "applied_log"}) or 0.0
    up = cli("up", mongo.spec_path)
    assert up.exit_code == 0, up.output
    assert "1 applied_log" in up.stdout  # documents touched, per collection
    assert REGISTRY.get_sample_value("mongodb_migration_documents_total",
                                     {"version": "2", "collection": "applied_log"}) == before + 1

    down = cli("down", mongo.spec_path, "--to", "1")
    assert down.exit_code == 0, down.output
    assert "[1/2] down 3" in down.stdout and "[2/2] down 2" in down.stdout
    assert mongo.log() == ["1"]
    status = cli("status", mongo.spec_path)
    assert [state_of(status, v) for v in ["1", "2", "3"]] == ["applied", "pending", "pending"]


def test_two_processes_at_once_one_applies_the_other_waits(pg: Target,
                                                            target_db: PgDatabase) -> None:
    pg.write("1", "SELECT pg_sleep(3);", desc="slow")
    pg.write("2")
    exe = Path(sys.executable).with_name("migwatch")
    env = {**os.environ, "COLUMNS": "200"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([str(exe), "migrations", "up", str(pg.spec_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start()
    try:
        # the second starts once the first holds the lock, so it has to wait for it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with target_db.connect() as conn:
                held = conn.execute("SELECT to_regclass('migwatch.schema_lock') IS NOT NULL"
                                    ).fetchone()[0] and conn.execute(
                    "SELECT EXISTS (SELECT FROM migwatch.schema_lock)").fetchone()[0]
            if held:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the first run never took the lock")
        second = start()
        out_b, err_b = second.communicate(timeout=60)
    finally:
        out_a, err_a = first.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err_a, err_b)
    assert "applied 2 migration(s)" in out_a
    assert "nothing to apply: the target is up to date (waited" in out_b
    waited = float(out_b.split("(waited ")[1].split(" s")[0])
    assert waited >= 0.5
    assert pg.log() == ["1", "2"]  # each applied once


def test_the_installed_command_runs_status_as_json(pg: Target) -> None:
    pg.write("1")
    env = {**os.environ, "COLUMNS": "200"}
    exe = Path(sys.executable).with_name("migwatch")
    done = subprocess.run([str(exe), "migrations", "up", str(pg.spec_path)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    status = subprocess.run([str(exe), "migrations", "status", str(pg.spec_path), "--json"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["kind"] == "sql" and report["lock"] is None
    assert [(r["version"], r["state"]) for r in report["rows"]] == [("1", "applied")]
    assert "migwatch-local" not in status.stdout + status.stderr
