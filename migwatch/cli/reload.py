"""`migwatch reload SPEC --migration-id ID --table T [--where COND]`: load a table (or some of
its rows) again while the migration streams."""

from __future__ import annotations

from pathlib import Path

import typer

from migwatch.cli._app import app, console, handle_errors, out


@app.command("reload")
@handle_errors
def reload(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    migration_id: str = typer.Option(
        ..., help="The running migration's id: a-z, 0-9 and -, at most 40 characters."),
    table: str = typer.Option(..., "--table", help="The spec's table to reload."),
    where: str = typer.Option(
        None, "--where",
        help="Reload only the rows this SQL condition selects on the source table (e.g. "
             "\"id BETWEEN 1000 AND 2000\"); checked read-only first. Default: every row."),
    dead_lettered: bool = typer.Option(
        False, "--dead-lettered",
        help="Reload the rows whose events were dead-lettered (by their keys), e.g. once the "
             "cause is fixed: their current state, not the old events."),
    timeout: float = typer.Option(600, help="Seconds to wait for the rows to be applied."),
) -> None:
    """Load a table — or the rows a condition selects — again while the migration streams, by
    Debezium's incremental snapshot (consistent with the changes that keep coming); on a
    PostgreSQL target, rows the target holds within the condition and the source does not
    are deleted first. Exits 0 once the target has applied the reloaded rows, 2 on a bad
    table or condition or a migration that is not streaming."""
    from migwatch.config import check_migration_id, load_spec
    from migwatch.load.reload import reload as run_reload

    mid = check_migration_id(migration_id)
    result = run_reload(load_spec(spec), mid, table, where, timeout,
                        on_wait=lambda m: console.print(m, highlight=False),
                        dead_lettered=dead_lettered)
    out.print(result.describe(), highlight=False)
