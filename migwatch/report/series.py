"""The report's time series: from Prometheus, or from the monitor's own samples when it has none.

The one part of the report that does I/O (`collect_series` queries Prometheus), kept apart so the
rest of the package stays pure and testable without a server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from migwatch.report.model import MEASURE_UNITS, SeriesData, TimeSeries, Unit

if TYPE_CHECKING:
    from migwatch.connectors.prometheus import PrometheusClient


def collect_series(
    client: PrometheusClient, migration_id: str, start: float, end: float, max_points: int = 240
) -> TimeSeries:
    """The run's lag, throughput and progress as Prometheus recorded them between start and end."""
    from migwatch import metrics, promql

    step = max(1.0, math.ceil((end - start) / max_points))
    window = f"{int(max(10, 2 * step))}s"
    mid = migration_id
    lag_queries: list[tuple[str, Unit, str]] = [
        (
            "data_lag_seconds",
            "seconds",
            f"max({promql.selector(metrics.MIGRATION_DATA_LAG, migration_id=mid)})",
        ),
        (
            "event_time_lag_seconds",
            "seconds",
            f"max({promql.selector(metrics.EVENT_TIME_LAG, migration_id=mid)})",
        ),
        (
            "end_to_end_lag_seconds",
            "seconds",
            f"max({promql.selector(metrics.END_TO_END_LAG, migration_id=mid)})",
        ),
        (
            "consumer_lag_messages",
            "messages",
            f"sum({promql.selector(metrics.CDC_CONSUMER_LAG, migration_id=mid)})",
        ),
        (
            "slot_wal_bytes",
            "bytes",
            f"max({promql.selector(metrics.SLOT_RETAINED_WAL, migration_id=mid)})",
        ),
    ]
    out = TimeSeries()
    for name, unit, expr in lag_queries:
        for s in client.query_range(expr, start, end, step):
            if s.points:
                out.lag.append(SeriesData(name=name, unit=unit, points=s.points))
    for name, metric in (
        ("change events applied/s", metrics.CDC_EVENTS),
        ("rows written/s", metrics.MIGRATION_ROWS),
    ):
        expr = f"sum(rate({promql.selector(metric, migration_id=mid)}[{window}]))"
        for s in client.query_range(expr, start, end, step):
            if s.points:
                out.throughput.append(SeriesData(name=name, unit="per_second", points=s.points))
    progress = (
        f"max {promql.by(metrics.SNAPSHOT_PROGRESS, 'table_name')} "
        f"({promql.selector(metrics.SNAPSHOT_PROGRESS, migration_id=mid)})"
    )
    for s in client.query_range(progress, start, end, step):
        if s.points:
            out.progress.append(
                SeriesData(name=s.labels.get("table_name", "?"), unit="ratio", points=s.points)
            )
    return out


def series_from_samples(columns: Mapping[str, Sequence[Any]]) -> TimeSeries:
    """The report's series from the monitor's sampled columns (`migwatch.lag.summarize`): used
    when Prometheus has nothing for the run (it was down, or never scraped the processes)."""
    at = list(columns.get("at") or [])
    out = TimeSeries()
    for name, unit in MEASURE_UNITS.items():
        for t, v in zip(at, columns.get(name) or [], strict=False):
            if v is not None and math.isfinite(float(v)):
                out.record("lag", name, unit, float(t), float(v))
    for t, v in zip(at, columns.get("throughput_msgs_per_second") or [], strict=False):
        if v is not None:
            out.record("throughput", "change events applied/s", "per_second", float(t), float(v))
    return out


def merge_series(primary: TimeSeries, fallback: TimeSeries) -> TimeSeries:
    """`primary`'s series, with any group it lacks taken from `fallback`."""
    return TimeSeries(
        lag=primary.lag or fallback.lag,
        throughput=primary.throughput or fallback.throughput,
        progress=primary.progress or fallback.progress,
    )
