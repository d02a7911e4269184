"""The migrations tasks under a real Prefect API: plain data, retries on TransientError only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.states import Completed, Failed

from migwatch.config import MigrationSpec, parse_spec
from migwatch.errors import MigrationChanged, MigrationLocked
from migwatch.migrations import open_backend
from migwatch.stack import Stack
from tasks.capture import retry_on_transient as shared_predicate
from tasks.migrations import (
    migrations_down,
    migrations_repair,
    migrations_status,
    migrations_up,
    retry_on_transient,
)
from tests.conftest import mongo_endpoint

pytestmark = pytest.mark.usefixtures("prefect_harness")

MODULE = """
def up(db, session, progress):
    db.notes.insert_one({"_id": "%(v)s"}, session=session)
    progress("notes", 1)


def down(db, session, progress):
    db.notes.delete_one({"_id": "%(v)s"}, session=session)
    progress("notes", 1)
"""


@pytest.fixture
def spec(stack: Stack, mongo_db: str, tmp_path: Path) -> MigrationSpec:
    for v in ["1", "2"]:
        (tmp_path / f"V{v}__note_{v}.py").write_text(MODULE % {"v": v})
    return parse_spec({
        "source": {"kind": "postgres", "port": 15432, "database": "unused"},
        "target": mongo_endpoint(stack, mongo_db), "tables": ["unused"],
        "migrations": {"folder": str(tmp_path), "lock_timeout_seconds": 0.3},
    })


def test_retry_condition_accepts_only_transient_failures() -> None:
    assert retry_on_transient is shared_predicate  # one predicate for every task module
    assert retry_on_transient(None, None, Failed(data=MigrationLocked("x", None, 1.0)))
    assert not retry_on_transient(None, None, Failed(data=MigrationChanged([("1", "V1.py")])))
    assert not retry_on_transient(None, None, Failed(data=ValueError("bad")))
    assert not retry_on_transient(None, None, Completed(data=1))


def test_tasks_return_plain_data_in_a_flow(spec: MigrationSpec) -> None:
    @flow
    def run() -> dict[str, Any]:
        return {"dry": migrations_up(spec, dry_run=True), "up": migrations_up(spec),
                "down": migrations_down(spec), "status": migrations_status(spec)}

    out = run()
    assert [s["version"] for s in out["dry"]["planned"]] == ["1", "2"]
    assert out["dry"]["outcomes"] == []
    assert [o["version"] for o in out["up"]["outcomes"]] == ["1", "2"]
    assert out["up"]["outcomes"][0]["documents"] == {"notes": 1}
    assert out["down"]["outcomes"][0]["version"] == "2"
    assert [(r["version"], r["state"]) for r in out["status"]["rows"]] == \
        [("1", "applied"), ("2", "pending")]


class _ReleaseOnLockedRetry(logging.Handler):
    """Releases the held lock as soon as Prefect reports the first attempt's MigrationLocked."""

    def __init__(self, release: Any) -> None:
        super().__init__()
        self.release = release
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "MigrationLocked" in message and "Retry" in message:
            self.retries += 1
            self.release()


def test_a_held_lock_is_retried_and_an_edited_script_is_not(spec: MigrationSpec) -> None:
    quick = migrations_up.with_options(retries=3, retry_delay_seconds=0.2,
                                       retry_jitter_factor=None)
    backend = open_backend(spec)
    assert backend.try_lock("other-run", 60).acquired
    watcher = _ReleaseOnLockedRetry(lambda: backend.release_lock("other-run"))
    task_logger = logging.getLogger("prefect.task_runs")
    task_logger.addHandler(watcher)

    @flow
    def run() -> Any:
        return quick(spec, return_state=True)

    try:
        state = run()
        assert state.is_completed()
        assert [o["version"] for o in state.result()["outcomes"]] == ["1", "2"]
        assert watcher.retries == 1  # the first attempt met the held lock and was retried

        script = Path(spec.migrations.folder) / "V1__note_1.py"
        script.write_text(script.read_text() + "# edited\n")
        with pytest.raises(MigrationChanged):
            run()
        assert watcher.retries == 1  # no retry for a permanent error
    finally:
        task_logger.removeHandler(watcher)
        backend.release_lock("other-run")
        backend.close()


def test_repair_task_accepts_an_edited_script_deliberately(spec: MigrationSpec) -> None:
    script = Path(spec.migrations.folder) / "V1__note_1.py"

    @flow
    def edit_then_repair() -> dict[str, Any]:
        migrations_up(spec)
        script.write_text(script.read_text() + "# edited\n")
        return {"dry": migrations_repair(spec, dry_run=True),
                "before": migrations_status(spec), "repair": migrations_repair(spec),
                "after": migrations_status(spec)}

    out = edit_then_repair()
    assert out["dry"] == {"kind": "mongodb", "dry_run": True, "checksums_accepted": ["1"],
                          "failed_cleared": []}
    assert [r["state"] for r in out["before"]["rows"]] == ["changed", "applied"]
    assert out["repair"]["dry_run"] is False and out["repair"]["checksums_accepted"] == ["1"]
    assert [r["state"] for r in out["after"]["rows"]] == ["applied", "applied"]
