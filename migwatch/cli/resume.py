"""`migwatch resume-table SPEC TABLE --migration-id ID [--accept]`: continue a table the applier
stopped at a source schema change its target does not follow by itself."""

from __future__ import annotations

from pathlib import Path

import typer

from migwatch.cli._app import app, handle_errors, out


@app.command("resume-table")
@handle_errors
def resume_table(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    table: str = typer.Argument(..., help="The stopped source table, schema.table."),
    migration_id: str = typer.Option(
        ..., help="The migration run's id: a-z, 0-9 and -, at most 40 characters."),
    accept: bool = typer.Option(
        False, "--accept",
        help="Accept the source's definition: remove the target's copy of every column the "
             "change made stale; the applier then follows the source, filling a column the "
             "source still has from its current values."),
    wait: float = typer.Option(
        60.0, help="With --accept: seconds to wait for the applier to continue the table "
                   "(0: do not wait)."),
) -> None:
    """Show why a table stopped at a source schema change and what accepting it does; with
    --accept, do it. The alternative is a versioned migration that makes the same change on the
    target: the applier notices it within seconds and the table continues by itself.

    Exit codes: 0 shown, or accepted and continued; 1 accepted but the applier did not continue
    the table within --wait (is it running?); 2 the table is not stopped, or bad input."""
    from migwatch.config import check_migration_id, load_spec
    from migwatch.resuming import resume

    check_migration_id(migration_id)
    found = resume(load_spec(spec), migration_id, table, accept=accept, wait_seconds=wait)
    out.print(f"stopped      {found.stopped.describe()}", highlight=False, soft_wrap=True)
    stale = ", ".join(found.stale) or "none"
    if not found.accepted:
        out.print(f"--accept     removes from the target: {stale}; the applier then follows "
                  "the source's definition (a column the source still has is filled from its "
                  "current values)", highlight=False, soft_wrap=True)
        return
    out.print(f"accepted     removed from the target: {', '.join(found.removed) or 'nothing'}",
              highlight=False, soft_wrap=True)
    if found.continued is None:
        out.print("applier      continues the table at its next check (every 5 s)",
                  soft_wrap=True)
    elif found.continued:
        out.print("applier      continued the table")
    else:
        out.print(f"applier      has not continued the table within {wait:.0f} s: is it "
                  "running?", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
