"""The CI gate behind `migwatch check`: is this migration's data lag under a limit, right now?

It asks the real Prometheus, so it sees what dashboards and alerts see. Three answers, each with
one line a person can act on:

    0 HEALTHY   lag at or under the limit and no errors in the error window
    1 FAILING   lag over the limit, or errors counted in the window
    2 UNKNOWN   cannot tell: no data, only stale pushed data, or Prometheus unreachable

Values a batch stage pushed to the Pushgateway stay exposed after the process exits; the
Pushgateway's `push_time_seconds` of that group says how old they are, and an older value than
`freshness` is "cannot tell", never "healthy".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from migwatch import metrics, promql
from migwatch.config import check_migration_id
from migwatch.connectors.prometheus import PrometheusClient
from migwatch.errors import ConfigError, MigwatchError

HEALTHY, FAILING, UNKNOWN = 0, 1, 2

#: the Pushgateway's own metric: when each group was last pushed (not one of migwatch's)
PUSH_TIME = "push_time_seconds"


@dataclass(frozen=True)
class GateStatus:
    code: int
    reason: str

    @property
    def label(self) -> str:
        return {HEALTHY: "healthy", FAILING: "failing", UNKNOWN: "unknown"}[self.code]


@dataclass(frozen=True)
class LagReading:
    """One series of `migration_data_lag_seconds`; `pushed_at` is None for a live scrape."""

    value: float
    pushed_at: float | None = None


def judge(
    readings: Sequence[LagReading],
    error_rate: float | None,
    now: float,
    *,
    migration_id: str,
    max_lag: float,
    freshness: float,
    error_window: str = "5m",
    max_error_rate: float = 0.0,
) -> GateStatus:
    """The gate's decision from what Prometheus said (pure: every branch is unit-tested)."""
    lag_name = promql.name(metrics.MIGRATION_DATA_LAG)
    if not readings:
        return GateStatus(UNKNOWN, f"no {lag_name} for migration_id {migration_id} in Prometheus")
    fresh = [r for r in readings if r.pushed_at is None or now - r.pushed_at <= freshness]
    if not fresh:
        newest = max(r.pushed_at or 0.0 for r in readings)
        return GateStatus(
            UNKNOWN,
            f"the newest pushed {lag_name} is {now - newest:.0f}s old "
            f"(freshness limit {freshness:g}s): the stage pushing it "
            "stopped",
        )
    values = [r.value for r in fresh if not math.isnan(r.value)]
    if not values:
        return GateStatus(UNKNOWN, f"{lag_name} is NaN for migration_id {migration_id}")
    lag = max(values)
    problems = []
    if lag > max_lag:
        problems.append(f"lag {lag:.1f}s is over --max-lag {max_lag:g}s")
    if error_rate is not None and not math.isnan(error_rate) and error_rate > max_error_rate:
        problems.append(f"{error_rate:.3g} errors/s over the last {error_window}")
    if problems:
        return GateStatus(FAILING, "; ".join(problems))
    return GateStatus(
        HEALTHY,
        f"lag {lag:.1f}s is within --max-lag {max_lag:g}s, no errors in the last {error_window}",
    )


def check(
    client: PrometheusClient,
    migration_id: str,
    max_lag: float,
    freshness: float = 300,
    error_window: str = "5m",
    max_error_rate: float = 0.0,
) -> GateStatus:
    """Ask Prometheus and judge; an unreachable Prometheus is UNKNOWN, not an exception."""
    check_migration_id(migration_id)
    if not re.fullmatch(r"(\d+(ms|s|m|h|d))+", error_window):
        raise ConfigError(f"{error_window!r} is not a PromQL duration (e.g. 5m)", "error_window")
    try:
        lag = client.query(promql.selector(metrics.MIGRATION_DATA_LAG, migration_id=migration_id))
        pushes = client.query(f"{PUSH_TIME}{{migration_id={promql.quote(migration_id)}}}")
        errors = client.query(
            f"sum(rate({promql.selector(metrics.MIGRATION_ERRORS, migration_id=migration_id)}"
            f"[{error_window}]))"
        )
    except MigwatchError as exc:
        return GateStatus(UNKNOWN, f"cannot ask Prometheus: {exc}")
    pushed_at = {_group(p.labels): p.value for p in pushes}
    readings = [LagReading(s.value, pushed_at.get(_group(s.labels))) for s in lag]
    now = max((s.timestamp for s in lag), default=0.0)
    error_rate = errors[0].value if errors else None
    return judge(
        readings,
        error_rate,
        now,
        migration_id=migration_id,
        max_lag=max_lag,
        freshness=freshness,
        error_window=error_window,
        max_error_rate=max_error_rate,
    )


def _group(labels: dict[str, str]) -> tuple[str, str]:
    """What ties a pushed series to its group's push time: job and instance (empty if pushed)."""
    return labels.get("job", ""), labels.get("instance", "")
