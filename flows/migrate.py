"""migrate: the first stage — from nothing to a target loaded by the initial snapshot and kept in
sync by change data capture.

    pre-flight → fresh target check → target schema (missing tables and what they need, from
    the source's pg_dump; then the spec's versioned migrations) → heartbeat table on the source
    → (with `snapshot.method: copy`: the load by COPY from the slot's exported snapshot) →
    Debezium connector → CDC applier → follow the snapshot → indexes, constraints, triggers
    and statistics on the target

The target tables are created from the source's definitions *before* the versioned migrations
run: the migrations add to the shop tables (an index, a view over orders, a lookup table), so
they need them to exist; tables a migration already created are left as they are. A MongoDB
target needs no DDL, only its migrations — and, once loaded, the source's unique keys as unique
indexes (docs/types.md, "Schema on a MongoDB target").

Everything is idempotent, so running the stage again for the same `migration_id` resumes it: the
connector is left unchanged, the running applier alone, and a snapshot already done returns at
once. The applier keeps running after the stage (until cutover or `migwatch teardown`).

A table added to the spec of a running migration is added to the connector (Debezium adds it to
the publication), created on the target and loaded by Debezium's incremental snapshot while the
other tables keep streaming — followed like the initial snapshot; the applier restarts to read
it. A table taken out of the spec is no longer captured (its target table stays as it is).

A fresh start (no connector or slot for the id: a first run, or a rerun after teardown) refuses
target tables that already hold rows — loading on top would mix them with the new snapshot —
unless `reset_target` empties them first; a resume ignores `reset_target`.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from migwatch import metrics
from migwatch.config import check_migration_id, load_spec
from migwatch.load.run import by_copy
from tasks.capture import (
    ensure_connector,
    ensure_fresh_target,
    finish_target_schema,
    load_added_tables,
    preflight,
    prepare_source,
    prepare_target_schema,
    table_changes,
)
from tasks.migrate import (
    ensure_applier,
    follow_snapshot,
    load_by_copy,
    push_metrics,
    stop_applier,
)
from tasks.migrations import migrations_up

#: spare time the follow task gets beyond the spec's own snapshot bound
_FOLLOW_MARGIN_SECONDS = 120


@flow(name="migrate")
def migrate(spec_path: str, migration_id: str, reset_target: bool = False) -> dict[str, Any]:
    """Prepare source and target, start CDC, and follow the initial snapshot to its end.

    `reset_target`: on a fresh start, truncate target tables that hold rows instead of
    refusing them (TargetNotEmpty)."""
    check_migration_id(migration_id)
    spec = load_spec(spec_path)
    follow = follow_snapshot.with_options(
        timeout_seconds=spec.snapshot.timeout_seconds + _FOLLOW_MARGIN_SECONDS)

    with metrics.observe_stage(migration_id, "migrate"):
        checks = preflight(spec, migration_id)
        fresh = ensure_fresh_target(spec, migration_id, reset=reset_target)
        schema = prepare_target_schema(spec)
        migrations = migrations_up(spec) if spec.migrations is not None else None
        heartbeat = prepare_source(spec, migration_id)
        loading_since = time.time()
        tables = table_changes(spec, migration_id)
        # by COPY (snapshot.method: copy): every table loaded from the slot's exported
        # snapshot before Debezium streams from that slot without a snapshot of its own
        loaded = load_by_copy(spec, migration_id) if by_copy(spec) else None
        connector = ensure_connector(spec, migration_id)
        if tables["added"] or tables["removed"]:
            stop_applier(spec, migration_id)  # it starts again with the spec's tables
        applier = ensure_applier(spec_path, migration_id)
        if tables["added"]:
            load_added_tables(spec, migration_id, tables["added"])
        resumed = connector["action"] == "unchanged" and applier["action"] != "started"
        snapshot = follow(spec, migration_id, since=None if resumed else loading_since,
                          incremental=tables["added"])
        finished = finish_target_schema(spec, migration_id)
    push_metrics(spec, migration_id)

    get_run_logger().info("migrate %s: snapshot %s (%d rows); connector %s, applier %s (%s)",
                          migration_id, "already complete" if snapshot["already_done"]
                          else "complete", snapshot["rows"], connector["action"],
                          applier["action"], applier["mode"])
    return {
        "migration_id": migration_id,
        "preflight": checks,
        "target": fresh,
        "schema": {**schema, "finished": finished},
        "migrations": migrations,
        "heartbeat_table": heartbeat,
        "connector": connector,
        "tables_added": tables["added"],
        "tables_removed": tables["removed"],
        "applier": applier,
        "snapshot": {k: v for k, v in snapshot.items() if k != "tables"},
        "load_by_copy": loaded,
        "tables": {name: {"rows_loaded": t["rows"], "seconds": t["seconds"],
                          "source_estimate": t["estimate"]}
                   for name, t in snapshot["tables"].items()},
    }
