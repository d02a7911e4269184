"""The monitor loop's control flow with polls given in advance (the loop's own seam, `poll_fn`):
it stops at the gate, or — told to keep running — keeps polling past it until stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from migwatch.config import parse_spec
from migwatch.lag import CONSUMER_LAG, END_TO_END_LAG, EVENT_TIME_LAG, SLOT_WAL, Sample
from migwatch.watch import watch

SPEC = parse_spec({
    "source": {"kind": "postgres", "port": 15432, "database": "s"},
    "target": {"kind": "postgres", "port": 15433, "database": "t"},
    "tables": ["orders"],
    "monitor": {"poll_interval_seconds": 1, "consecutive_polls": 2, "window_size": 3,
                "timeout_seconds": 1000},
})


def samples(lags: list[float]) -> Iterator[Sample]:
    for i, lag in enumerate(lags):
        yield Sample(at=float(i + 1), values={CONSUMER_LAG: 0.0, EVENT_TIME_LAG: lag,
                                            END_TO_END_LAG: lag, SLOT_WAL: 0.0},
                     committed_offsets=100 + i, dlq_messages=0, applied_events=100 + i,
                     applier_alive=True, connector_state="RUNNING")


def run(lags: list[float], stop: threading.Event | None = None, stop_after: int = 0) -> object:
    feed = samples(lags)
    clock = iter(range(10_000))
    seen: list[int] = []

    def poll_fn(spec: object, mid: str, since: float | None) -> Sample:
        sample = next(feed)
        seen.append(1)
        if stop is not None and len(seen) >= stop_after:
            stop.set()
        return sample

    return watch(SPEC, "w-1", poll_fn=poll_fn, serve_metrics=False, heartbeat=False,
                 sleep=lambda s: None, clock=lambda: float(next(clock)), stop=stop)


def test_the_loop_stops_when_the_gate_passes() -> None:
    result = run([30.0, 12.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    assert result.passed and result.polls == 4  # two polls in a row under caught_up (5 s)


def test_told_to_keep_running_it_polls_past_the_gate_until_stopped() -> None:
    stop = threading.Event()
    result = run([30.0, 12.0, 1.0, 0.5, 0.5, 40.0, 0.5, 0.5], stop=stop, stop_after=7)
    assert result.passed and result.polls == 7  # went on after passing at poll 4
    assert result.evaluations[-1].caught_up
