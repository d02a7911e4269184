"""The CI gate's decision, branch by branch (no server: `judge` is pure)."""

from __future__ import annotations

import math

import pytest

from migwatch.errors import ConfigError
from migwatch.gate_check import FAILING, HEALTHY, UNKNOWN, LagReading, _group, check, judge

NOW = 1_800_000_000.0


def run(readings: list[LagReading], error_rate: float | None = 0.0, **kw: float) -> tuple:
    args = {"migration_id": "m-1", "max_lag": 60.0, "freshness": 300.0, **kw}
    status = judge(readings, error_rate, NOW, **args)  # type: ignore[arg-type]
    return status.code, status.reason


def test_live_lag_under_the_limit_is_healthy() -> None:
    code, reason = run([LagReading(12.5)])
    assert code == HEALTHY
    assert reason == "lag 12.5s is within --max-lag 60s, no errors in the last 5m"


def test_lag_equal_to_the_limit_is_still_healthy() -> None:
    assert run([LagReading(60.0)])[0] == HEALTHY


def test_lag_over_the_limit_fails_and_says_by_how_much() -> None:
    code, reason = run([LagReading(61.2)])
    assert (code, reason) == (FAILING, "lag 61.2s is over --max-lag 60s")


def test_the_largest_series_counts() -> None:
    assert run([LagReading(3.0), LagReading(90.0, pushed_at=NOW - 5)])[0] == FAILING


def test_errors_in_the_window_fail_even_with_low_lag() -> None:
    code, reason = run([LagReading(1.0)], error_rate=0.2)
    assert code == FAILING
    assert reason == "0.2 errors/s over the last 5m"


def test_both_problems_are_named() -> None:
    code, reason = run([LagReading(100.0)], error_rate=0.5)
    assert code == FAILING
    assert reason == "lag 100.0s is over --max-lag 60s; 0.5 errors/s over the last 5m"


def test_no_series_cannot_tell() -> None:
    code, reason = run([])
    assert code == UNKNOWN
    assert reason == "no migration_data_lag_seconds for migration_id m-1 in Prometheus"


def test_only_stale_pushed_data_cannot_tell_even_if_it_looked_healthy() -> None:
    code, reason = run([LagReading(1.0, pushed_at=NOW - 900)])
    assert code == UNKNOWN
    assert "900s old (freshness limit 300s)" in reason


def test_fresh_push_is_trusted() -> None:
    assert run([LagReading(1.0, pushed_at=NOW - 299)])[0] == HEALTHY


def test_a_live_series_outweighs_a_stale_push() -> None:
    assert run([LagReading(1.0), LagReading(500.0, pushed_at=NOW - 900)])[0] == HEALTHY


def test_nan_lag_cannot_tell() -> None:
    assert run([LagReading(math.nan)])[0] == UNKNOWN


def test_missing_error_series_is_no_error() -> None:
    assert run([LagReading(1.0)], error_rate=None)[0] == HEALTHY


def test_pushed_series_are_tied_to_their_group_by_job_and_instance() -> None:
    pushed = {"__name__": "migration_data_lag_seconds", "job": "migwatch", "migration_id": "x"}
    live = {**pushed, "job": "monitor", "instance": "127.0.0.1:9464"}
    group = {"__name__": "push_time_seconds", "job": "migwatch", "migration_id": "x"}
    assert _group(pushed) == _group(group) != _group(live)


def test_bad_window_and_bad_id_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="error_window"):
        check(None, "m-1", 60, error_window="5 minutes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="migration_id"):
        check(None, "M_1", 60)  # type: ignore[arg-type]
