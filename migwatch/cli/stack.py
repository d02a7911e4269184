"""`migwatch stack up|down|status`: the local stack."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from migwatch.cli._app import app, console, handle_errors, out, print_table

stack_app = typer.Typer(help="Run the local stack (PostgreSQL, Kafka, Connect, FerretDB, "
                        "Prometheus, Prefect) on 127.0.0.1.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")

def _stack() -> Any:
    from migwatch.stack import Stack

    return Stack(echo=lambda m: console.print(f"[dim]stack[/] {m}", highlight=False))


def _print_status(rows: list[Any]) -> None:
    table = Table(title="migwatch stack")
    for col in ("component", "address", "healthy", "pid"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.address, "[green]yes[/]" if r.healthy else "[red]no[/]",
                      str(r.pid or "-"))
    print_table(table)


@stack_app.command("up")
@handle_errors
def stack_up() -> None:
    """Install (once, cached) and start every component; returns when each passed a round trip."""
    _print_status(_stack().up())


@stack_app.command("status")
@handle_errors
def stack_status() -> None:
    """Show each component, its address, whether it answers, and its pid. Exit 1 if any is down."""
    rows = _stack().status()
    _print_status(rows)
    raise typer.Exit(0 if all(r.healthy for r in rows) else 1)


@stack_app.command("down")
@handle_errors
def stack_down() -> None:
    """Stop the processes `stack up` started, after the local appliers and monitors that work
    against them (each finishes its batch and commits first)."""
    from migwatch import processes

    stopped = processes.stop_all() + _stack().down()
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
