"""`migwatch cutover SPEC --migration-id ID [--yes]`: switch the application to the target."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from migwatch.cli._app import app, console, handle_errors, out


@app.command("cutover")
@handle_errors
def cutover(
    spec: Path = typer.Argument(..., help="Migration spec (YAML); its `cutover:` section."),
    migration_id: str = typer.Option(..., help="The migration to cut over."),
    yes: bool = typer.Option(False, "--yes", help="Approve without asking (CI, scripts)."),
    approver: str = typer.Option(None, help="Who approves (self-declared); default: the "
                                            "local user name."),
    comment: str = typer.Option("", help="Why now: a ticket or change id, for the report."),
    check_only: bool = typer.Option(False, "--check", help="Only check the preconditions: "
                                                           "exit 0 ready, 1 refused."),
    undo_freeze: bool = typer.Option(
        False, "--undo-freeze", help="Put back the source settings a cutover that did not "
                                     "finish left frozen (its process died), from its record."),
) -> None:
    """Check the preconditions, ask for approval, freeze writes on the source, drain to the
    freeze exactly, check the changed tables on the frozen source, set the target's sequences,
    run the switch hook, tear CDC down. Any failure before the end of the switch undoes the
    freeze. Exit 0 switched, 1 refused or aborted (the source writable again), 2 a spec or
    server problem. There is no replication back to the source after the switch."""
    from migwatch.cli.run import use_stack_prefect
    from migwatch.config import check_migration_id, load_spec
    from migwatch.cutover import preconditions
    from migwatch.errors import CutoverRefused
    from migwatch.runs import run_dir

    check_migration_id(migration_id)
    s = load_spec(spec)
    if undo_freeze:
        _undo_freeze(s, migration_id)
        return
    reasons = preconditions.check(s, migration_id, run_dir(migration_id))
    if reasons:
        raise CutoverRefused(reasons)
    out.print(f"preconditions hold for {migration_id}: a recent GO, caught up, schema equal, "
              "freeze ready", highlight=False)
    if check_only:
        return
    how = "--yes"
    if not yes:
        how = "prompt"
        if not typer.confirm(f"Freeze writes on the source of {migration_id} and switch the "
                             "application to the target?", default=False):
            out.print("not approved: nothing was changed")
            raise typer.Exit(1)
    use_stack_prefect()
    from flows.cutover import cutover as cutover_flow
    from migwatch.prefect_adapter import quiet_typed_tracebacks

    quiet_typed_tracebacks()
    with console.status("cutting over…"):
        result = cutover_flow(str(spec.resolve()), migration_id, ask_approval=False,
                              approved_by=approver or getpass.getuser(), comment=comment,
                              approved_how=how)
    out.print(f"switched: write-downtime {result['downtime_seconds']:.2f}s", highlight=False)
    for st in result["steps"]:
        out.print(f"  {st['name']:16} {st['outcome']:8} {st['detail']}", highlight=False)
    for kind in ("json", "html"):
        path = run_dir(migration_id) / f"report.{kind}"
        if path.exists():
            out.print(f"  report ({kind}): {path}", highlight=False)



def _undo_freeze(spec: object, migration_id: str) -> None:
    """The freeze a dead cutover process left, undone from its `cutover.json`."""
    from migwatch.config import MigrationSpec
    from migwatch.cutover.timeline import undo_recorded_freeze
    from migwatch.errors import CutoverError
    from migwatch.runs import run_dir

    assert isinstance(spec, MigrationSpec)
    if not undo_recorded_freeze(spec, run_dir(migration_id), "migwatch cutover --undo-freeze"):
        raise CutoverError(f"no freeze of {migration_id} is recorded as holding: nothing to undo")
    out.print(f"the source of {migration_id} is writable again: default_transaction_read_only "
              "put back as it was", highlight=False)
