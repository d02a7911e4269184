"""Versioned migrations on the real PostgreSQL target and the MongoDB-wire server (FerretDB).

Every test builds its own migrations folder in tmp_path and its own database; the tests that hold
for both backends run once per backend through the `env` fixture.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from migwatch.config import MigrationSpec, parse_spec
from migwatch.errors import MigrationChanged, MigrationFailed, MigrationLocked, PermanentError
from migwatch.metrics import REGISTRY
from migwatch.migrations import (
    RunResult,
    State,
    StepEvent,
    open_backend,
    run_down,
    run_repair,
    run_status,
    run_up,
)
from migwatch.stack import Stack
from tests.conftest import PgDatabase, mongo_endpoint


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Env:
    """One backend under test: how to write scripts for it and read what they did."""

    kind: str  # "sql" or "mongodb"
    target: dict[str, Any]
    folder: Path
    read_log: Callable[[], list[str]]
    storage: Callable[[], set[str]]  # history/lock tables or collections that exist

    @property
    def metric(self) -> str:
        return "sql_migration" if self.kind == "sql" else "mongodb_migration"

    def spec(self, **migrations: Any) -> MigrationSpec:
        return parse_spec({
            "source": {"kind": "postgres", "port": 15432, "database": "unused"},
            "target": self.target,
            "tables": ["public.unused"],
            "migrations": {"folder": str(self.folder), **migrations},
        })

    def write(self, version: str, body: str = "", desc: str = "step") -> Path:
        """A script that appends `version` to a log, then runs `body` (SQL or Python lines)."""
        if self.kind == "sql":
            text = ("CREATE TABLE IF NOT EXISTS applied_log (n serial PRIMARY KEY, v text);\n"
                    f"INSERT INTO applied_log (v) VALUES ('{version}');\n{body}\n")
            path = self.folder / f"V{version}__{desc}.sql"
        else:
            lines = "".join(f"    {line}\n" for line in body.splitlines())
            text = ("import time\n\n\ndef up(db, session, progress):\n"
                    "    n = db.applied_log.count_documents({})\n"
                    f"    db.applied_log.insert_one({{'n': n, 'v': '{version}'}})\n"
                    f"{lines}\n\ndef down(db, session, progress):\n"
                    f"    db.applied_log.delete_many({{'v': '{version}'}})\n")
            path = self.folder / f"V{version}__{desc}.py"
        path.write_text(text)
        return path

    def slow(self, seconds: float) -> str:
        return f"SELECT pg_sleep({seconds});" if self.kind == "sql" else f"time.sleep({seconds})"

    def failing(self) -> str:
        return "SELECT * FROM no_such_table;" if self.kind == "sql" else \
            "raise ValueError('no such thing')"

    @property
    def error_type(self) -> str:
        return "UndefinedTable" if self.kind == "sql" else "ValueError"


def _pg_env(target_db: PgDatabase, folder: Path) -> Env:
    def read_log() -> list[str]:
        with target_db.connect() as conn:
            if conn.execute("SELECT to_regclass('public.applied_log')").fetchone()[0] is None:
                return []
            return [r[0] for r in conn.execute("SELECT v FROM applied_log ORDER BY n")]

    def storage() -> set[str]:
        with target_db.connect() as conn:
            return {r[0] for r in conn.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_schema = 'migwatch'")}

    return Env("sql", target_db.endpoint(), folder, read_log, storage)


def _mongo_env(stack: Stack, database: str, folder: Path) -> Env:
    client: MongoClient = MongoClient(stack.address("ferretdb"))
    db = client[database]

    def read_log() -> list[str]:
        return [d["v"] for d in db.applied_log.find().sort("n", 1)]

    def storage() -> set[str]:
        return {n for n in db.list_collection_names() if n.startswith("migwatch_")}

    return Env("mongodb", mongo_endpoint(stack, database), folder, read_log, storage)


@pytest.fixture(params=["sql", "mongodb"])
def env(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Iterator[Env]:
    folder = tmp_path / "migrations"
    folder.mkdir()
    if request.param == "sql":
        yield _pg_env(request.getfixturevalue("target_db"), folder)
    else:
        yield _mongo_env(stack, request.getfixturevalue("mongo_db"), folder)


# ----------------------------------------------------------------------------- both backends


def test_versions_run_in_numeric_order_and_up_stops_at_target(env: Env) -> None:
    for v in ["2", "1.10", "1", "1.9", "1.2"]:
        env.write(v)
    spec = env.spec()
    first = run_up(spec, target_version="1.9")
    assert first.versions_done == ["1", "1.2", "1.9"]
    assert env.read_log() == ["1", "1.2", "1.9"]
    rest = run_up(spec)
    assert rest.versions_done == ["1.10", "2"]
    assert env.read_log() == ["1", "1.2", "1.9", "1.10", "2"]
    states = [(r.version, r.state) for r in run_status(spec).rows]
    assert states == [(v, State.APPLIED) for v in ["1", "1.2", "1.9", "1.10", "2"]]
    assert run_up(spec).planned == []


def test_history_rows_carry_checksum_timing_and_transaction_flag(env: Env) -> None:
    path = env.write("1", desc="create_log")
    run_up(env.spec())
    backend = open_backend(env.spec())
    try:
        (row,) = backend.history()
    finally:
        backend.close()
    import hashlib

    assert row.version == "1" and row.description == "create log" and row.status == "success"
    assert row.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row.duration_ms >= 0 and row.applied_at is not None and "@" in row.applied_by
    # PostgreSQL always uses a transaction; FerretDB has none, and the history says so
    assert row.in_transaction is (env.kind == "sql")


def test_a_failing_migration_is_recorded_counted_and_leaves_earlier_ones(env: Env) -> None:
    env.write("1")
    bad = env.write("2", env.failing(), desc="broken")
    env.write("3")
    spec = env.spec()
    errors = f"{env.metric}_errors_total"
    failed_runs = f"{env.metric}_duration_seconds_count"
    before = sample(errors, version="2", error_type=env.error_type)
    before_runs = sample(failed_runs, version="2", status="failed")

    with pytest.raises(MigrationFailed) as err:
        run_up(spec)
    assert err.value.version == "2" and "V2__broken" in str(err.value)
    assert sample(errors, version="2", error_type=env.error_type) == before + 1
    assert sample(failed_runs, version="2", status="failed") == before_runs + 1
    states = {r.version: r.state for r in run_status(spec).rows}
    assert states == {"1": State.APPLIED, "2": State.FAILED, "3": State.PENDING}

    bad.write_text(bad.read_text().replace(env.failing(), ""))
    if env.kind == "sql":
        # its transaction rolled back: its own insert is gone, and `up` may simply retry
        assert env.read_log() == ["1"]
        assert run_up(spec).versions_done == ["2", "3"]
    else:
        # no transaction: its insert stayed, so `up` refuses until someone repairs
        assert env.read_log() == ["1", "2"]
        with pytest.raises(PermanentError, match="outside a transaction"):
            run_up(spec)
        assert run_repair(spec).plan.to_dict()["failed_cleared"] == ["2"]
        assert run_up(spec).versions_done == ["2", "3"]
    assert {r.state for r in run_status(spec).rows} == {State.APPLIED}


def test_durations_are_counted_per_version_and_status(env: Env) -> None:
    env.write("1")
    env.write("1.1")
    spec = env.spec()
    name = f"{env.metric}_duration_seconds_count"
    before = {(v, st): sample(name, version=v, status=st)
              for v in ["1", "1.1"] for st in ["success", "failed", "reverted"]}

    def grown() -> dict[tuple[str, str], float]:
        return {k: sample(name, version=k[0], status=k[1]) - n for k, n in before.items()
                if sample(name, version=k[0], status=k[1]) != n}

    run_up(spec)
    assert grown() == {("1", "success"): 1, ("1.1", "success"): 1}
    run_up(spec, dry_run=True)
    run_up(spec)  # nothing pending: nothing timed
    assert grown() == {("1", "success"): 1, ("1.1", "success"): 1}
    if env.kind == "mongodb":
        run_down(spec)
        assert grown() == {("1", "success"): 1, ("1.1", "success"): 1, ("1.1", "reverted"): 1}


def test_each_step_is_reported_as_it_starts_and_ends(env: Env) -> None:
    env.write("1")
    env.write("2", env.failing(), desc="broken")
    events: list[StepEvent] = []
    with pytest.raises(MigrationFailed):
        run_up(env.spec(), on_step=events.append)
    assert [(e.phase, e.step.version, e.index, e.total) for e in events] == [
        ("start", "1", 1, 2), ("end", "1", 1, 2), ("start", "2", 2, 2), ("end", "2", 2, 2)]
    ok, failed = events[1].outcome, events[3].outcome
    assert ok is not None and ok.status == "success" and ok.error_type is None
    assert failed is not None and failed.status == "failed"
    assert failed.error_type == env.error_type
    assert failed.in_transaction is (env.kind == "sql")


def test_an_edited_applied_script_is_refused_until_repaired(env: Env) -> None:
    first = env.write("1")
    spec = env.spec()
    run_up(spec)
    first.write_text(first.read_text() + "\n")  # one byte more
    env.write("2")

    with pytest.raises(MigrationChanged) as err:
        run_up(spec)
    assert err.value.changed == [("1", str(first))]
    assert first.name in str(err.value)
    assert [r.state for r in run_status(spec).rows] == [State.CHANGED, State.PENDING]
    assert env.read_log() == ["1"]

    repaired = run_repair(spec)
    assert repaired.plan.to_dict() == {"checksums_accepted": ["1"], "failed_cleared": []}
    assert run_up(spec).versions_done == ["2"]
    assert env.read_log() == ["1", "2"]


def _in_threads(*calls: Callable[[], RunResult]) -> list[RunResult | BaseException]:
    results: list[RunResult | BaseException] = [RuntimeError("did not run")] * len(calls)
    gate = threading.Barrier(len(calls))

    def run(i: int) -> None:
        gate.wait()
        if i:
            time.sleep(0.3)  # let the first one take the lock
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_concurrent_runs_one_applies_the_other_waits_and_finds_nothing(env: Env) -> None:
    env.write("1", env.slow(1.5))
    env.write("2")
    spec = env.spec(lock_timeout_seconds=30)
    a, b = _in_threads(lambda: run_up(spec, owner="runner-a"),
                       lambda: run_up(spec, owner="runner-b"))
    assert isinstance(a, RunResult) and isinstance(b, RunResult), (a, b)
    assert a.versions_done == ["1", "2"]
    assert b.versions_done == [] and b.planned == []
    assert b.lock_wait_seconds > 0.5
    assert env.read_log() == ["1", "2"]  # each applied exactly once
    assert run_status(spec).lock is None  # released


def test_the_holder_renews_its_lock_during_a_long_migration(env: Env) -> None:
    env.write("1", env.slow(2.0))
    spec = env.spec(lock_timeout_seconds=30)
    # a 0.6 s lock would expire three times over while V1 runs, unless it is renewed
    a, b = _in_threads(lambda: run_up(spec, owner="runner-a", lock_ttl_seconds=0.6),
                       lambda: run_up(spec, owner="runner-b"))
    assert isinstance(a, RunResult) and isinstance(b, RunResult), (a, b)
    assert a.versions_done == ["1"] and b.versions_done == []
    assert b.lock_wait_seconds > 1.2
    assert env.read_log() == ["1"]


def test_a_short_lock_timeout_fails_naming_the_holder(env: Env) -> None:
    env.write("1")
    spec = env.spec(lock_timeout_seconds=0.5)
    backend = open_backend(spec)
    try:
        backend.ensure_storage()
        assert backend.try_lock("ops@other-host:4242:deadbeef", 60).acquired
        started = time.monotonic()
        with pytest.raises(MigrationLocked) as err:
            run_up(spec)
        assert 0.5 <= time.monotonic() - started < 5
        assert err.value.holder == "ops@other-host:4242:deadbeef"
        assert "ops@other-host:4242:deadbeef" in str(err.value)
        assert env.read_log() == []
        assert run_status(spec).lock.owner == "ops@other-host:4242:deadbeef"
    finally:
        backend.release_lock("ops@other-host:4242:deadbeef")
        backend.close()


def test_a_stale_lock_past_its_expiry_is_taken_over(env: Env,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    env.write("1")
    spec = env.spec(lock_timeout_seconds=5)
    backend = open_backend(spec)
    try:
        backend.ensure_storage()
        assert backend.try_lock("crashed@host:1:cafe", 0.2).acquired
    finally:
        backend.close()
    time.sleep(0.5)
    with caplog.at_level(logging.WARNING, logger="migwatch.migrations"):
        result = run_up(spec)
    assert result.versions_done == ["1"]
    assert result.lock_wait_seconds < 2
    assert result.lock_taken_over_from == "crashed@host:1:cafe"
    assert any("taken over from crashed@host:1:cafe" in r.getMessage() for r in caplog.records)
    assert run_status(spec).lock is None


def test_dry_run_changes_nothing(env: Env) -> None:
    env.write("1")
    env.write("2")
    spec = env.spec()
    result = run_up(spec, dry_run=True)
    assert [s.version for s in result.planned] == ["1", "2"] and result.outcomes == []
    assert env.read_log() == [] and env.storage() == set()  # no history, no lock
    assert [r.state for r in run_status(spec).rows] == [State.PENDING, State.PENDING]

    run_up(spec, target_version="1")
    before = env.storage()
    assert [s.version for s in run_up(spec, dry_run=True).planned] == ["2"]
    if env.kind == "mongodb":
        assert [s.version for s in run_down(spec, dry_run=True).planned] == ["1"]
    else:
        with pytest.raises(PermanentError, match="no undo script"):
            run_down(spec, dry_run=True)
    assert env.read_log() == ["1"] and env.storage() == before
    assert run_status(spec).lock is None


def test_start_and_end_are_logged_once_per_step_without_secrets(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.write("1")
    env.write("1.1")
    with caplog.at_level(logging.INFO, logger="migwatch.migrations"):
        run_up(env.spec())
    lines = [r.getMessage() for r in caplog.records if r.name == "migwatch.migrations"]
    assert [line.split()[0] for line in lines] == ["migration.start", "migration.end"] * 2
    assert "version=1.1" in lines[2] and "status=success" in lines[3]
    assert all("migwatch-local" not in line for line in lines)  # the stack's password
    ends = [r.migration for r in caplog.records if r.getMessage().startswith("migration.end")]
    assert {e["version"] for e in ends} == {"1", "1.1"}


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(target_db: PgDatabase, tmp_path: Path) -> Env:
    folder = tmp_path / "migrations"
    folder.mkdir()
    return _pg_env(target_db, folder)


def _pg_exists(db: PgDatabase, name: str) -> bool:
    with db.connect() as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()[0]


def test_sql_failure_rolls_back_its_own_ddl(pg: Env, target_db: PgDatabase) -> None:
    pg.write("1")
    pg.write("2", "CREATE TABLE half_done (id int);\nALTER TABLE nope ADD COLUMN x int;")
    with pytest.raises(MigrationFailed, match="UndefinedTable"):
        run_up(pg.spec())
    assert not _pg_exists(target_db, "public.half_done")
    assert _pg_exists(target_db, "public.applied_log")


def test_sql_down_uses_the_undo_script_and_refuses_without_one(pg: Env,
                                                               target_db: PgDatabase) -> None:
    pg.write("1", desc="log")
    (pg.folder / "V1.1__add_index.sql").write_text(
        "CREATE INDEX applied_log_v ON applied_log (v);")
    (pg.folder / "U1.1__add_index.sql").write_text("DROP INDEX applied_log_v;")
    spec = pg.spec()
    run_up(spec)
    assert _pg_exists(target_db, "public.applied_log_v")

    reverted = run_down(spec)
    assert reverted.versions_done == ["1.1"]
    assert not _pg_exists(target_db, "public.applied_log_v")
    assert [(r.version, r.state) for r in run_status(spec).rows] == \
        [("1", State.APPLIED), ("1.1", State.PENDING)]

    with pytest.raises(PermanentError, match="version 1 .*no undo script"):
        run_down(spec)
    assert pg.read_log() == ["1"]  # refused before anything ran
    assert run_up(spec).versions_done == ["1.1"]


# ----------------------------------------------------------------------------- MongoDB


BACKFILL = '''
def up(db, session, progress):
    result = db.customers.update_many({"tier": {"$exists": False}}, {"$set": {"tier": "basic"}},
                                      session=session)
    progress("customers", result.modified_count)


def down(db, session, progress):
    result = db.customers.update_many({"tier": "basic"}, {"$unset": {"tier": ""}},
                                      session=session)
    progress("customers", result.modified_count)
'''


@pytest.fixture
def mongo(stack: Stack, mongo_db: str, tmp_path: Path) -> Env:
    folder = tmp_path / "migrations"
    folder.mkdir()
    return _mongo_env(stack, mongo_db, folder)


def test_documents_counter_equals_documents_touched_and_down_reverts(
        mongo: Env, stack: Stack, mongo_db: str) -> None:
    db = MongoClient(stack.address("ferretdb"))[mongo_db]
    db.customers.insert_many([{"_id": i, "tier": "gold"} if i < 2 else {"_id": i}
                              for i in range(7)])
    (mongo.folder / "V3__backfill_tier.py").write_text(BACKFILL)
    spec = mongo.spec()
    name = "mongodb_migration_documents_total"
    before = sample(name, version="3", collection="customers")

    result = run_up(spec)
    assert result.outcomes[0].documents == {"customers": 5}
    assert sample(name, version="3", collection="customers") == before + 5
    assert db.customers.count_documents({"tier": "basic"}) == 5
    assert db.customers.count_documents({"tier": "gold"}) == 2

    reverted = run_down(spec)
    assert reverted.versions_done == ["3"]
    assert db.customers.count_documents({"tier": {"$exists": True}}) == 2
    assert sample(name, version="3", collection="customers") == before + 10
    assert [r.state for r in run_status(spec).rows] == [State.PENDING]


def test_mongo_down_to_a_target_reverts_newest_first(mongo: Env) -> None:
    for v in ["1", "2", "3"]:
        mongo.write(v)
    spec = mongo.spec()
    run_up(spec)
    assert run_down(spec, target_version="1").versions_done == ["3", "2"]
    assert mongo.read_log() == ["1"]
    assert [r.state for r in run_status(spec).rows] == \
        [State.APPLIED, State.PENDING, State.PENDING]


def test_mongo_module_without_down_fails_naming_it(mongo: Env) -> None:
    (mongo.folder / "V1__no_down.py").write_text("def up(db, session, progress):\n    pass\n")
    with pytest.raises(MigrationFailed, match=r"V1__no_down\.py.*down"):
        run_up(mongo.spec())
