"""What the lag measures say on the real stack when nothing is wrong and when the applier is
held: an idle source, and a delay injected by pausing the applier. Run through
`migwatch.watch.watch`, the loop the monitor flow wraps (the flow adds nothing to these checks).

Pausing means the real applier blocks after a committed batch while keeping its place in the
consumer group — a stuck process, not a stopped one — so every lag must grow by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migwatch.lag import END_TO_END_LAG, EVENT_TIME_LAG, Verdict
from migwatch.stack import Stack
from migwatch.watch import Poll, WatchResult, watch
from tests.conftest import PgDatabase
from tests.integration.monitor_helpers import Monitored, monitored_migration

IDLE_SECONDS = 60  # the minute of idle source, watched once
PAUSE_SECONDS = 6


@pytest.fixture
def monitored(stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
              tmp_path: Path) -> Iterator[Monitored]:
    yield from monitored_migration(stack, source_db, target_db, migration_id, tmp_path)


def watch_for(m: Monitored, seconds: float, on_poll: Any = None) -> WatchResult:
    """Watch for `seconds` whatever happens (the gate is made unreachable, so the watch ends on
    its timeout): these tests are about what is measured, not about the gate."""
    monitor = m.spec.monitor.model_copy(update={"timeout_seconds": seconds,
                                                "consecutive_polls": 1_000_000})
    spec = m.spec.model_copy(update={"monitor": monitor})
    result = watch(spec, m.migration_id, on_poll=on_poll, serve_metrics=False)
    assert result.reason is not None and result.reason.startswith("not caught up after")
    return result


def test_d_idle_source_keeps_event_time_lag_near_zero_and_a_paused_applier_lets_it_grow(
        monitored: Monitored) -> None:
    """For a minute nothing writes to the shop tables; only the heartbeats move (Debezium's
    heartbeat query every 0.5 s and the monitor's heartbeat row). Then, the source still idle,
    the applier is paused and the watch goes on."""
    m = monitored
    m.applier.start()
    m.wait_caught_up()
    paused: list[float] = []

    def on_poll(p: Poll) -> None:
        if not paused and p.sample.at - first[0] >= IDLE_SECONDS:
            paused.append(m.applier.pause())

    first: list[float] = []

    def record_first(p: Poll) -> None:
        if not first:
            first.append(p.sample.at)
        on_poll(p)

    result = watch_for(m, IDLE_SECONDS + 12, on_poll=record_first)

    assert paused, "the pause never began"
    idle = [s for s in result.samples if s.at < paused[0]]
    held = [s for s in result.samples if s.at > paused[0]]
    idle_lags = [s.value(EVENT_TIME_LAG) for s in idle]
    assert idle[-1].at - idle[0].at >= IDLE_SECONDS - 1.5 and len(idle) >= 50
    assert None not in idle_lags
    assert max(idle_lags) <= 3.0, idle_lags  # under caught_up on every poll of the minute
    idle_verdicts = {e.verdict for e in result.evaluations if e.at < paused[0]}
    assert idle_verdicts == {Verdict.OK}, [
        (e.verdict.value, e.reasons) for e in result.evaluations if e.verdict is not Verdict.OK]
    # held: the lag is the age of the last applied event, growing with the clock, not clamped
    held_lags = [s.value(EVENT_TIME_LAG) for s in held]
    assert len(held) >= 8 and None not in held_lags
    assert all(b > a for a, b in zip(held_lags, held_lags[1:], strict=False)), held_lags
    last = held[-1]
    since_pause = last.at - paused[0]
    assert since_pause - 1.0 <= held_lags[-1] <= since_pause + max(idle_lags[-5:]) + 1.0
    assert held_lags[-1] > 3 * max(idle_lags)
    print(f"\nidle {len(idle)} polls over {idle[-1].at - idle[0].at:.0f} s: event-time lag "
          f"max {max(idle_lags):.2f} s, mean {sum(idle_lags) / len(idle_lags):.2f} s; "
          f"paused {since_pause:.1f} s: event-time lag {held_lags[0]:.1f} → {held_lags[-1]:.1f} s")


def test_f_end_to_end_lag_is_within_one_poll_of_an_injected_delay(monitored: Monitored) -> None:
    """The delay is injected by pausing the applier for 6 s after the monitor's third poll: the
    heartbeat rows written on the source meanwhile cannot reach the target."""
    m = monitored
    m.applier.start()
    m.wait_caught_up()
    interval = m.spec.monitor.poll_interval_seconds

    def inject() -> None:
        m.applier.pause()
        time.sleep(PAUSE_SECONDS)
        m.applier.resume()

    injector = threading.Thread(target=inject, daemon=True)

    def on_poll(p: Poll) -> None:
        if p.number == 3:
            injector.start()

    result = watch_for(m, 3 + PAUSE_SECONDS + 6, on_poll=on_poll)
    injector.join(10)

    [(began, ended)] = m.applier.pauses
    delay = ended - began
    e2e = [(s.at, s.value(END_TO_END_LAG)) for s in result.samples]
    assert None not in [v for _, v in e2e]
    before = [v for at, v in e2e if at < began]
    peak_at, peak = max(e2e, key=lambda p: p[1] or 0.0)
    assert began <= peak_at <= ended + 2 * interval
    assert abs(peak - delay) <= interval, (peak, delay)
    assert max(before) < interval and e2e[-1][1] is not None and e2e[-1][1] < interval  # recovered
    print(f"\ninjected {delay:.2f} s; end-to-end lag peaked at {peak:.2f} s "
          f"(before the pause ≤ {max(before):.2f} s, after {e2e[-1][1]:.2f} s)")

