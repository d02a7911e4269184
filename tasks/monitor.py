"""Prefect tasks of the monitor stage: one poll of every lag, one notification, one reading of
the tables' sequences on both sides.

All return plain data. A poll records a failing measure in its sample instead of raising, so a
retry only happens when the poll itself could not run (TransientError); notifications never
raise (a failed channel is counted). Neither is cached: every call must really happen.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from migwatch import measures, notifications, sequences
from migwatch.config import MigrationSpec
from migwatch.errors import MigwatchError
from migwatch.lag import Notice
from tasks.capture import retry_on_transient


@task(name="monitor-poll", timeout_seconds=120, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE, log_prints=False)
def poll_lags(spec: MigrationSpec, migration_id: str,
              heartbeat_since: float | None = None) -> dict[str, Any]:
    """Every lag measure once, as a plain `Sample` dict."""
    sample = measures.poll(spec, migration_id, heartbeat_since=heartbeat_since)
    if sample.problems:
        get_run_logger().warning("could not measure: %s", "; ".join(sample.problems))
    return sample.to_dict()


@task(name="monitor-sequences", timeout_seconds=60, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_on_transient, cache_policy=NO_CACHE)
def read_sequences(spec: MigrationSpec, application: str = "migwatch-monitor",
                   ) -> list[dict[str, Any]]:
    """Each sequence the tables use with its last value on the source and the target, as plain
    dicts (`SequenceState.to_dict`): logical decoding does not carry them, the cutover sets
    them."""
    found = sequences.read(spec, application=application)
    behind = [s.sequence for s in found if s.state == sequences.BEHIND]
    get_run_logger().info("%d sequence(s) used by the tables%s", len(found),
                          f"; behind on the target: {', '.join(behind)}" if behind else "")
    return [s.to_dict() for s in found]


def sequences_or_why(spec: MigrationSpec, application: str = "migwatch-monitor",
                     ) -> tuple[list[dict[str, Any]], str | None]:
    """`read_sequences`, or why it could not read them: sequence values only inform (the
    cutover sets them), so failing to read them fails no stage."""
    try:
        return read_sequences(spec, application), None
    except MigwatchError as exc:
        get_run_logger().warning("sequences not read: %s: %s", type(exc).__name__, exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return [], f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@task(name="monitor-notify", timeout_seconds=120, cache_policy=NO_CACHE)
def send_notification(spec: MigrationSpec, notice: Notice,
                      flow_run_url: str | None = None) -> list[dict[str, Any]]:
    """Send one state change to the blocks named for its severity; one dict per channel."""
    logger = get_run_logger()
    deliveries = notifications.send(notice, spec.notifications, flow_run_url=flow_run_url)
    for d in deliveries:
        if d.ok:
            logger.info("%s notice sent through %s (%s)", notice.kind, d.block, d.block_type)
        else:
            logger.warning("%s notice through %s failed: %s", notice.kind, d.block, d.error)
    if not deliveries:
        logger.info("%s notice: no notification block named for it", notice.kind)
    return [{"block": d.block, "block_type": d.block_type, "ok": d.ok, "error": d.error}
            for d in deliveries]
