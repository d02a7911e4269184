"""The `migwatch` command line: thin commands that parse, call the core, map errors to exit codes.

Exit codes: 0 success/healthy, 1 a finding (differences, over threshold, gate failed),
2 could not tell (bad input, unreachable server). Commands that start flows import them inside
the command, so `migwatch --help` stays fast and the core never imports Prefect.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from migwatch.errors import MigwatchError

app = typer.Typer(help="Observable, zero-downtime database migrations.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

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
            # one line a CI log keeps whole: no wrapping, and the message is never read as markup
            console.print(f"[bold red]error:[/] {escape(f'{type(exc).__name__}: {exc}')}",
                          markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]
