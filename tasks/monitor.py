"""Prefect tasks of the monitor stage: one poll of every lag, one notification.

Both return plain data. A poll records a failing measure in its sample instead of raising, so a
retry only happens when the poll itself could not run (TransientError); notifications never
raise (a failed channel is counted). Neither is cached: every call must really happen.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from migwatch import measures, notifications
from migwatch.config import MigrationSpec
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
