"""cdc-applier: the CDC applier as a long-running flow run — what a `cdc-applier` deployment runs
under a Prefect worker, started by the migrate stage's `ensure-applier`.

It applies change events until it is stopped, serving metrics and announcing itself to
Prometheus exactly as `migwatch apply` does (both call `migwatch.applier.serve`), and — as the
local supervisor does — restarts a connector task that FAILED on a passing fault. A crashed or
failed run is run again by a Prefect automation (`guard-applier-restarts` makes sure it exists,
and counts, notifies and bounds the restarts). The applier works in a
thread so that Prefect keeps its own SIGTERM handling in the main thread: when the run is
cancelled (or the process gets SIGTERM / Ctrl-C), the applier finishes its batch, commits the
target transaction and the Kafka offsets, removes its target file, and only then is the signal
handed back to Prefect — which records a cancellation as Cancelled.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import TerminationSignal

from migwatch import supervision
from migwatch.applier import Applier, ApplierStats, serve
from migwatch.config import MigrationSpec, check_migration_id, load_spec
from migwatch.supervision import ConnectorWatch
from tasks.migrate import APPLIER_FLOW, guard_applier_restarts

#: how long a stopping applier may take to finish its batch before the signal goes on anyway
STOP_GRACE_SECONDS = 25.0


@flow(name=APPLIER_FLOW)
def cdc_applier(spec_path: str, migration_id: str, metrics_port: int = 0) -> dict[str, Any]:
    """Apply the migration's change events to the target until this run is stopped."""
    check_migration_id(migration_id)
    spec = load_spec(spec_path)
    guard = guard_applier_restarts(spec, migration_id)
    if guard["gave_up"]:
        return {"migration_id": migration_id, "gave_up": True,
                "recent_failures": guard["recent_failures"]}
    stats = _apply_until_stopped(spec, migration_id, metrics_port)
    get_run_logger().info("applier %s stopped: %d events in %d batches, %d dead-lettered",
                          migration_id, stats.events, stats.batches, stats.dlq)
    return {"migration_id": migration_id, "events": stats.events, "batches": stats.batches,
            "dead_lettered": stats.dlq}


def _apply_until_stopped(spec: MigrationSpec, migration_id: str,
                         metrics_port: int) -> ApplierStats:
    """`serve` in a thread; a termination reaching the main thread stops it cleanly first."""
    logger = get_run_logger()
    applier = Applier(spec, migration_id)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["stats"] = serve(
                spec, migration_id, applier=applier, metrics_port=metrics_port,
                handle_signals=False,
                on_ready=lambda port: logger.info("applier %s: metrics on 127.0.0.1:%d",
                                                  migration_id, port))
        except BaseException as exc:  # handed to the flow below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"applier-{migration_id}", daemon=True)
    worker.start()
    # as the local supervisor does: a connector task FAILED on a passing fault is restarted
    connector = ConnectorWatch(spec, migration_id,
                               lambda kind, reason: supervision.notify(spec, migration_id, kind,
                                                                       reason))
    next_check = time.monotonic() + spec.supervision.check_interval_seconds
    try:
        while worker.is_alive():
            worker.join(1.0)
            if time.monotonic() >= next_check:
                if connector.check() == "restarted":
                    logger.warning("applier %s: a FAILED connector task was restarted",
                                   migration_id)
                    supervision.push(spec, migration_id)
                next_check = time.monotonic() + spec.supervision.check_interval_seconds
    except (TerminationSignal, KeyboardInterrupt):
        logger.info("applier %s: stop requested, finishing the current batch", migration_id)
        applier.stop()
        worker.join(STOP_GRACE_SECONDS)
        if worker.is_alive():
            logger.warning("applier %s did not stop within %.0fs", migration_id,
                           STOP_GRACE_SECONDS)
        else:
            logger.info("applier %s: batch committed, stopped cleanly", migration_id)
        raise
    if "error" in outcome:
        raise outcome["error"]
    stats: ApplierStats = outcome["stats"]
    return stats
