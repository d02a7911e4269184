"""The CI gate as a release job uses it, through the installed command on the real stack:
`migwatch start` puts a monitor in the background and returns once Prometheus has its data lag;
`migwatch check` then answers 0 healthy, 1 over the limit, and 2 once the monitor is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migwatch import processes
from migwatch.stack import Stack
from tests.conftest import PgDatabase
from tests.integration.monitor_helpers import Monitored, monitored_migration

MIGWATCH = str(Path(sys.executable).parent / "migwatch")


@pytest.fixture
def migration(stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
              tmp_path: Path) -> Iterator[Monitored]:
    yield from monitored_migration(stack, source_db, target_db, migration_id, tmp_path)
    processes.stop_monitor(migration_id)


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MIGWATCH, *args], capture_output=True, text=True, timeout=timeout)


def check(migration_id: str, max_lag: float) -> subprocess.CompletedProcess[str]:
    return cli("check", "--migration-id", migration_id, "--max-lag", str(max_lag))


def until_exit(migration_id: str, max_lag: float, code: int, timeout: float) -> str:
    """Run `check` until it exits `code`; its one-line answer."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check(migration_id, max_lag)
        if last.returncode == code:
            return last.stdout.strip()
        time.sleep(1)
    raise AssertionError(f"check never exited {code} in {timeout:.0f} s; last: "
                         f"{last.returncode if last else '-'} {last.stdout if last else ''}")


def test_start_then_check_follows_the_lag_until_teardown(migration: Monitored,
                                                         migration_id: str) -> None:
    m = migration
    m.applier.start()
    m.wait_caught_up()
    started = cli("start", "--migration-id", migration_id, "--spec", str(m.spec_path))
    assert started.returncode == 0, started.stderr
    assert "Prometheus at" in started.stdout
    pid = processes.monitor_pid(migration_id)
    assert pid is not None

    healthy = until_exit(migration_id, 30, 0, 60)
    assert healthy.startswith("healthy")

    m.applier.pause()  # the applier stops applying: the heartbeat on the target falls behind
    over = until_exit(migration_id, 3, 1, 60)
    assert over.startswith("failing") and "over --max-lag 3s" in over
    m.applier.resume()
    assert until_exit(migration_id, 3, 0, 60).startswith("healthy")

    again = cli("start", "--migration-id", migration_id, "--spec", str(m.spec_path))
    assert again.returncode == 0 and "already running" in again.stdout
    assert processes.monitor_pid(migration_id) == pid  # one monitor per migration

    m.applier.stop()
    down = cli("teardown", str(m.spec_path), "--migration-id", migration_id)
    assert down.returncode == 0, down.stderr
    assert "background monitor" in down.stdout and processes.monitor_pid(migration_id) is None
    gone = until_exit(migration_id, 30, 2, 60)  # no fresh data any more: cannot tell
    assert gone.startswith("unknown")


def test_start_without_a_run_or_spec_names_what_is_missing() -> None:
    r = cli("start", "--migration-id", "never-ran-here")
    assert r.returncode == 2
    assert "no run record for migration never-ran-here" in r.stderr
    assert "Traceback" not in r.stderr
