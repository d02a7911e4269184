"""`migwatch teardown SPEC --migration-id ID [--delete-topics]`: end a migration's capture."""

from __future__ import annotations

from pathlib import Path

import typer

from migwatch.cli._app import app, handle_errors, out


@app.command("teardown")
@handle_errors
def teardown(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    migration_id: str = typer.Option(
        ..., help="The migration run's id: a-z, 0-9 and -, at most 40 characters."),
    delete_topics: bool = typer.Option(
        False, "--delete-topics",
        help="Also delete the migration's Kafka topics (migwatch.<id>.* and its heartbeat "
             "topic); a DLQ topic named in the spec is kept."),
) -> None:
    """Stop capturing changes for a migration: stop the applier (a local process, or its
    `cdc-applier` deployment runs through Prefect), delete the Debezium
    connector, drop the replication slot (so WAL stops piling up on the source) and the
    publication, delete the applier's consumer group, and clear the applier's stored positions
    on the target (so a later run with the same id starts clean). Safe to run twice."""
    from migwatch import capture, processes
    from migwatch.config import check_migration_id, load_spec

    check_migration_id(migration_id)
    s = load_spec(spec)
    monitor = processes.stop_monitor(migration_id)
    applier = processes.stop_applier(migration_id)
    if processes.applier_members(s, migration_id):
        # the applier runs as `cdc-applier` deployment runs: cancel them through Prefect
        from migwatch.cli.run import use_stack_prefect

        use_stack_prefect()
        from tasks.migrate import stop_applier

        applier = bool(stop_applier(s, migration_id)["flow_runs_cancelled"]) or applier
    result = capture.teardown(s, migration_id, delete_topics=delete_topics)
    rows = [
        ("background monitor", "stopped" if monitor else "not running"),
        ("applier", "stopped" if applier else "not running"),
        ("connector", "deleted" if result.connector else "absent"),
        ("replication slot", "dropped" if result.slot else "absent"),
        ("publication", "dropped" if result.publication else "absent"),
        ("consumer group", "deleted" if result.consumer_group else "absent"),
        ("applier positions", f"{result.positions} row(s) cleared" if result.positions
         else "none"),
    ]
    if delete_topics:
        rows.append(("topics", f"{len(result.topics)} deleted"))
    for what, outcome in rows:
        out.print(f"{what:18} {outcome}")
