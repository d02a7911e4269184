"""`migwatch monitor SPEC` against the real stack, run as a user runs it (a subprocess): the
verdicts per poll and a final status table; exit 0 once caught up, 1 when the gate fails, 2 for
a bad spec or a server it cannot reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from migwatch.config import StackSettings
from migwatch.stack import Stack
from migwatch.watch import samples_path
from tests.conftest import PgDatabase
from tests.integration.monitor_helpers import Monitored, monitored_migration, write_spec
from tests.receivers import free_port


@pytest.fixture
def monitored(stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
              tmp_path: Path) -> Iterator[Monitored]:
    yield from monitored_migration(stack, source_db, target_db, migration_id, tmp_path)
    shutil.rmtree(samples_path(migration_id, StackSettings()).parent, ignore_errors=True)


def monitor_cli(spec: Path, migration_id: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "migwatch"
    return subprocess.run([str(exe), "monitor", str(spec), "--migration-id", migration_id],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "COLUMNS": "200"})


def test_exit_1_when_the_gate_fails_then_0_once_the_applier_catches_up(
        monitored: Monitored, migration_id: str, tmp_path: Path) -> None:
    """First no applier runs and the spec allows 5 s: the gate times out. Then the applier runs
    and the same migration is watched again until caught up."""
    m = monitored
    short = m.spec.model_copy(update={"monitor": m.spec.monitor.model_copy(
        update={"timeout_seconds": 5})})

    failed = monitor_cli(write_spec(short, tmp_path / "short.yaml"), migration_id)

    assert failed.returncode == 1, failed.stderr
    assert "poll 1: STALLED" in failed.stdout  # the same verdicts as the flow
    [reason] = [line for line in failed.stderr.splitlines() if line.startswith("gate failed:")]
    assert "not caught up after" in reason and "consumer_lag_messages" in reason  # one line
    assert "no applier in the consumer group" in reason or "applier down" in reason
    assert "behind" in failed.stdout  # the final table: the consumer lag is not caught up

    # a sequence a default of a migrated table calls: listed with both values at the end
    with m.source.connect() as conn:
        conn.execute("CREATE SEQUENCE public.note_no START 5; SELECT nextval('public.note_no');"
                     "ALTER TABLE public.orders ALTER COLUMN note SET DEFAULT "
                     "nextval('public.note_no')::text")
    m.applier.start()
    m.wait_caught_up()
    caught_up = monitor_cli(m.spec_path, migration_id)

    assert caught_up.returncode == 0, caught_up.stdout + caught_up.stderr
    out = caught_up.stdout
    assert "gate passed 3/3" in out and "caught up after" in out
    for column in ("measure", "value", "threshold", "state", "ETA"):
        assert column in out
    assert "consumer_lag_messages" in out and "overall" in out
    [seq] = [ln for ln in out.splitlines() if "public.note_no" in ln]
    assert "public.orders" in seq and "5" in seq and "missing" in seq, seq
    print(f"\n--- gate failed (exit 1) ---\n{failed.stdout}{failed.stderr}"
          f"--- caught up (exit 0) ---\n{out}")


def test_exit_2_for_a_bad_spec(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "source": {"kind": "postgres", "port": 15432, "database": "x"},
        "target": {"kind": "postgres", "port": 15433, "database": "y"},
        "tables": ["public.t"], "monitor": {"window_size": 1}}))
    result = monitor_cli(bad, "t-bad-spec")
    assert result.returncode == 2
    assert "monitor.window_size" in result.stderr


def test_exit_2_when_a_server_cannot_be_reached(tmp_path: Path) -> None:
    closed = free_port()
    spec = tmp_path / "unreachable.yaml"
    spec.write_text(yaml.safe_dump({
        "source": {"kind": "postgres", "port": closed, "database": "x"},
        "target": {"kind": "postgres", "port": closed, "database": "y"},
        "tables": ["public.t"], "kafka": {"bootstrap_servers": f"127.0.0.1:{closed}"},
        "connect": {"url": f"http://127.0.0.1:{closed}"}}))
    result = monitor_cli(spec, "t-unreachable")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TransientError" in result.stderr and "Kafka" in result.stderr
    assert "poll 1" not in result.stdout  # it said so at once instead of watching
