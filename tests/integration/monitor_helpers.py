"""Shared set-up for the monitor scenarios on the real stack: a Debezium connector over a small
shop workload, and a CDC applier in this process that a test can slow down, pause, stop and
start again — the ways a real applier falls behind.

The applier is the real `migwatch.applier.Applier` on the real topics and target; the only
test-side hook is its `on_batch` callback, called after each batch is committed, where a slowed
applier sleeps and a paused one blocks (it stays in its consumer group, as a stuck process does).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from migwatch import capture, metrics, names, workload
from migwatch.applier import Applier
from migwatch.config import MigrationSpec
from migwatch.lag import Verdict
from migwatch.measures import applied_positions, group_lag, migration_topics
from migwatch.stack import Stack
from tests.conftest import PgDatabase, make_spec

SHOP = list(workload.SHOP_TABLES)
GIB = 1 << 30

#: short polls and a small window so a scenario takes seconds; the slot's thresholds are far
#: above anything a test makes, because the source cluster is shared: retained WAL counts every
#: other database's writes too (seen at 170 MiB while this test's source was idle)
MONITOR: dict[str, Any] = {
    "poll_interval_seconds": 1.0,
    "window_size": 5,
    "consecutive_polls": 3,
    "timeout_seconds": 120,
    "thresholds": {
        "consumer_lag_messages": {"warn": 20_000, "critical": 100_000, "caught_up": 20},
        "event_time_lag_seconds": {"warn": 60, "critical": 300, "caught_up": 3},
        "end_to_end_lag_seconds": {"warn": 60, "critical": 300, "caught_up": 3},
        "slot_wal_bytes": {"warn": 8 * GIB, "critical": 16 * GIB, "caught_up": 4 * GIB},
    },
}
#: a Debezium heartbeat every 0.5 s, and batches handed over every 0.1 s instead of 0.5 s
CONNECT: dict[str, Any] = {"heartbeat_interval_ms": 500,
                           "overrides": {"poll.interval.ms": "100"}}


@dataclass
class ControlledApplier:
    """A real applier in a thread, with the knobs a scenario needs.

    `throttle` seconds are slept after each committed batch (with a small `batch_size` that caps
    the apply rate); `pause()` blocks it after its next batch until `resume()`; `stop()` closes
    its consumer, so the group has no member, as when the process is stopped.
    """

    spec: MigrationSpec
    migration_id: str
    batch_size: int | None = None
    throttle: float = 0.0
    pauses: list[tuple[float, float]] = field(default_factory=list)
    _applier: Applier | None = None
    _thread: threading.Thread | None = None
    _pause: threading.Event = field(default_factory=threading.Event)
    _blocked: threading.Event = field(default_factory=threading.Event)
    _errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        assert self._thread is None, "already running"
        self._applier = Applier(self.spec, self.migration_id, batch_size=self.batch_size)

        def run() -> None:
            assert self._applier is not None
            try:
                self._applier.run(on_batch=self._on_batch)
            except BaseException as exc:  # surfaced by `check`
                self._errors.append(exc)

        self._thread = threading.Thread(target=run, name="test-applier", daemon=True)
        self._thread.start()

    def _on_batch(self, batch: Any) -> None:
        if self.throttle:
            time.sleep(self.throttle)
        if self._pause.is_set():
            began = time.time()
            self._blocked.set()
            while self._pause.is_set():
                time.sleep(0.02)
            self.pauses.append((began, time.time()))
            self._blocked.clear()

    def pause(self, timeout: float = 15) -> float:
        """Block the applier after its next batch; returns when it is blocked (epoch seconds)."""
        self._pause.set()
        assert self._blocked.wait(timeout), "the applier did not reach a batch to pause after"
        return time.time()

    def resume(self) -> tuple[float, float]:
        """Let it go on; returns (blocked from, blocked until) as the applier lived it."""
        self._pause.clear()
        deadline = time.monotonic() + 10
        while self._blocked.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pauses[-1]

    def stop(self) -> None:
        self._pause.clear()
        if self._applier is not None:
            self._applier.stop()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the applier did not stop"
        self._applier = None
        self._thread = None
        self.check()

    def check(self) -> None:
        if self._errors:
            raise AssertionError(f"the applier failed: {self._errors[0]!r}") from self._errors[0]

    def where(self) -> str:
        """The applier thread's current stack, to tell a slow applier from a stuck one."""
        frame = sys._current_frames().get(self._thread.ident or 0) if self._thread else None
        return "".join(traceback.format_stack(frame)[-8:]) if frame else "(not running)"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


@dataclass
class Monitored:
    """A migration with a running connector, ready for the monitor to watch."""

    spec: MigrationSpec
    spec_path: Path
    migration_id: str
    source: PgDatabase
    applier: ControlledApplier

    def wait_caught_up(self, timeout: float = 120) -> None:
        """Until the applier has applied everything there is (snapshot included)."""
        deadline = time.monotonic() + timeout
        topics = migration_topics(self.spec, self.migration_id)
        last: Any = None
        while time.monotonic() < deadline:
            self.applier.check()
            lag = group_lag(self.spec.kafka.bootstrap_servers,
                            names.consumer_group(self.migration_id), topics)
            every = applied_positions(self.spec, self.migration_id).get(names.ALL_TABLES)
            last = (lag.total, lag.missing_topics, lag.active_members)
            if every is not None and lag.total == 0 and lag.active_members > 0 and \
                    len(lag.missing_topics) <= 1:  # the heartbeat table's own topic may not exist
                return
            time.sleep(0.5)
        raise AssertionError(f"applier not caught up in {timeout:.0f} s: lag, missing topics, "
                             f"members = {last}; the applier is at:\n{self.applier.where()}")


def write_spec(spec: MigrationSpec, path: Path) -> Path:
    path.write_text(yaml.safe_dump(orjson.loads(spec.model_dump_json(exclude_none=True))))
    return path


def lag_status(migration_id: str) -> str | None:
    """The verdict the monitor in this process last exported (`migwatch_lag_status`)."""
    for v in Verdict:
        if metrics.REGISTRY.get_sample_value(
                "migwatch_lag_status", {"migration_id": migration_id, "status": v.value}) == 1:
            return v.value
    return None


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def monitored_migration(stack: Stack, source_db: PgDatabase, target: PgDatabase | dict[str, Any],
                        migration_id: str, tmp_path: Path, size: int = 300,
                        **extra: Any) -> Iterator[Monitored]:
    """Shop tables of about `size` rows, a spec with the test monitor settings, a RUNNING
    connector, an applier not yet started; everything removed afterwards."""
    workload.init(source_db.dsn, size)
    monitor = {**MONITOR, **extra.pop("monitor", {})}
    monitor["thresholds"] = {**MONITOR["thresholds"], **monitor.get("thresholds", {})}
    spec = make_spec(source_db, target, SHOP, stack, monitor=monitor,
                     connect={**CONNECT, **extra.pop("connect", {})}, **extra)
    path = write_spec(spec, tmp_path / "spec.yaml")
    applier = ControlledApplier(spec, migration_id)
    capture.prepare_source(spec, migration_id)
    capture.prepare_target_schema(spec)
    try:
        capture.ensure_connector(spec, migration_id, timeout=120)
        yield Monitored(spec, path, migration_id, source_db, applier)
    finally:
        applier.stop()
        capture.teardown(spec, migration_id, delete_topics=True, timeout=90)
