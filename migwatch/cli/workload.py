"""`migwatch workload init|run`: the sample shop workload on the source database."""

from __future__ import annotations

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from migwatch.cli._app import app, console, handle_errors, out

workload_app = typer.Typer(help="The sample shop workload on the source database.",
                           no_args_is_help=True)
app.add_typer(workload_app, name="workload")

DSN_HELP = ("libpq connection string of the source; default: the local stack's source cluster "
            "(database 'migwatch')")


def _dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    from migwatch.stack import Stack

    return Stack().pg_dsn("source")


@workload_app.command("init")
@handle_errors
def workload_init(
    size: int = typer.Option(100_000, help="Total rows across all shop tables."),
    dsn: str = typer.Option(None, help=DSN_HELP, envvar="MIGWATCH_WORKLOAD_DSN"),
) -> None:
    """(Re)create the shop schema on the source and fill it with `size` rows in all."""
    from migwatch import workload

    counts = workload.init(_dsn(dsn), size)
    for table, n in counts.items():
        out.print(f"{table:16} {n:>10,} rows")


@workload_app.command("run")
@handle_errors
def workload_run(
    rate: float = typer.Option(50.0, help="Operations per second."),
    duration: float = typer.Option(30.0, help="Seconds to run."),
    dsn: str = typer.Option(None, help=DSN_HELP, envvar="MIGWATCH_WORKLOAD_DSN"),
) -> None:
    """Insert, update (including a primary-key change) and delete on the source at a rate."""
    from migwatch import workload

    with Progress(TextColumn("writing"), BarColumn(), TextColumn("{task.completed:.0f} ops"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("ops", total=rate * duration)
        result = workload.run(_dsn(dsn), rate=rate, duration=duration,
                              on_progress=lambda r: bar.update(task, completed=r.total))
        bar.update(task, completed=result.total)
    for op, n in sorted(result.operations.items()):
        out.print(f"{op:28} {n:>8,}")
    out.print(f"{result.total:,} operations in {result.seconds:.1f}s")
