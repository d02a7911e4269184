"""The `migwatch` command line: thin commands that parse, call the core and map errors to exit codes.

Exit codes: 0 success/healthy, 1 a finding (differences, over threshold, gate failed),
2 could not tell (bad input, unreachable server). Commands that start flows import them inside
the command, so `migwatch --help` stays fast and the core never imports Prefect.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from migwatch.errors import MigwatchError

app = typer.Typer(help="Observable, zero-downtime database migrations.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="Run the local stack (PostgreSQL, Kafka, Connect, FerretDB, "
                        "Prometheus, Prefect) on 127.0.0.1.", no_args_is_help=True)
workload_app = typer.Typer(help="The sample shop workload on the source database.",
                           no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(workload_app, name="workload")

console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn a MigwatchError into one clear line on stderr and its exit code — no traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MigwatchError as exc:
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", markup=True,
                          highlight=False)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- stack
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
    out.print(table)


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
    """Stop the processes `stack up` started (and nothing else)."""
    stopped = _stack().down()
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
