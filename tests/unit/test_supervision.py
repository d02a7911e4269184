"""The supervisor's arithmetic and judgement, without processes: backoff, restart budget, and
which FAILED connector traces are worth a restart."""

from __future__ import annotations

import pytest

from migwatch.supervision import RestartBudget, backoff, is_retriable


def test_backoff_doubles_to_its_cap_with_equal_jitter() -> None:
    lows = [backoff(n, 1, 60, rand=lambda: 0.0) for n in range(10)]
    highs = [backoff(n, 1, 60, rand=lambda: 1.0) for n in range(10)]
    assert highs == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert lows == [h / 2 for h in highs]
    assert backoff(10_000, 1, 60, rand=lambda: 1.0) == 60  # no overflow on a long crash loop


def test_the_budget_allows_max_restarts_per_window_and_recovers_as_they_age() -> None:
    budget = RestartBudget(max_restarts=3, window_seconds=60)
    assert [budget.spend(t) for t in (0, 10, 20)] == [True, True, True]
    assert not budget.spend(30)  # a fourth within 60 s
    assert not budget.spend(59)
    assert budget.spend(61)  # the first has aged out
    assert budget.recent == 3


def test_a_zero_budget_never_restarts() -> None:
    assert not RestartBudget(0, 60).spend(0)


@pytest.mark.parametrize("trace", [
    "org.apache.kafka.connect.errors.RetriableException: An exception occurred in the change "
    "event producer. This connector will be restarted.\n\tat io.debezium...",
    "org.postgresql.util.PSQLException: Connection to 127.0.0.1:15432 refused. Check that the "
    "hostname and port are correct. Caused by: java.net.ConnectException: Connection refused",
    "org.postgresql.util.PSQLException: FATAL: terminating connection due to administrator "
    "command",
    "org.postgresql.util.PSQLException: FATAL: the database system is starting up",
    "org.postgresql.util.PSQLException: ERROR: replication slot \"migwatch_x\" is active for "
    "PID 4242",
    "org.apache.kafka.common.errors.TimeoutException: Topic t not present in metadata",
])
def test_passing_causes_are_retriable(trace: str) -> None:
    assert is_retriable(trace)


@pytest.mark.parametrize("trace", [
    None, "",
    "org.postgresql.util.PSQLException: FATAL: password authentication failed for user \"x\"",
    "io.debezium.DebeziumException: Creation of replication slot failed; when setting up "
    "multiple connectors for the same database host, please make sure to use a distinct "
    "replication slot name for each.",
    "org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in error handler",
])
def test_permanent_causes_are_not(trace: str | None) -> None:
    assert not is_retriable(trace)
