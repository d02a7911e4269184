"""The `migwatch` command line: thin commands that parse, call the core, map errors to exit codes.

Exit codes: 0 success/healthy, 1 a finding (differences, over threshold, gate failed),
2 could not tell (bad input, unreachable server). Commands that start flows import them inside
the command, so `migwatch --help` stays fast and the core never imports Prefect.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from migwatch.errors import MigwatchError


def as_paragraphs(text: str | None) -> str | None:
    """Help text with every paragraph on one line and a blank line between paragraphs.

    typer's rich help keeps a docstring's single newlines (in every paragraph after the first,
    and in a group's list of commands) and then wraps the text again, so hard-wrapped docstrings
    read as ragged fragments. A paragraph opening with click's \\b and anything after \\f stay.
    Square brackets are text, never rich markup (`[a-z0-9-]` vanished as an unknown tag).
    """
    if not text:
        return text
    text, cut, rest = escape(inspect.cleandoc(text)).partition("\f")
    paragraphs = re.split(r"\n(?:[ \t]*\n)+", text.strip())
    return "\n\n".join(p if p.startswith("\b") else re.sub(r"[ \t]*\n[ \t]*", " ", p)
                       for p in paragraphs) + cut + rest


def _help_as_paragraphs(command: Any) -> None:
    """`as_paragraphs` on the help of a command, its parameters and, for a group, every command
    below it."""
    command.help = as_paragraphs(command.help)
    command.short_help = as_paragraphs(command.short_help)
    for param in command.params:
        if isinstance(getattr(param, "help", None), str):
            param.help = as_paragraphs(param.help)
    for sub in getattr(command, "commands", {}).values():
        _help_as_paragraphs(sub)


class _ParagraphHelpGroup(TyperGroup):
    """The root command group: typer builds every command before it, so its help texts and
    those of every command and option below it are made paragraphs here, in one place."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _help_as_paragraphs(self)


app = typer.Typer(help="Observable, zero-downtime database migrations.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=_ParagraphHelpGroup)

console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])

#: the `schema_version` of every `--json` document; raised when a field changes meaning or goes
#: away (new fields keep it)
JSON_SCHEMA_VERSION = 1


def print_json_doc(doc: Mapping[str, Any]) -> None:
    """One `--json` document on one line of stdout, `schema_version` first — nothing else goes
    to stdout in JSON mode, so a pipe can parse it (one line per document: JSON Lines)."""
    typer.echo(json.dumps({"schema_version": JSON_SCHEMA_VERSION, **doc}, ensure_ascii=False,
                          default=str))


def print_table(table: Table, to: Console | None = None) -> None:
    """A rich table on a terminal; elsewhere (CI logs, pipes) the same rows as plain aligned
    text, never cut: rich fits a table to the 80 columns it assumes there, truncating names."""
    to = to or out
    if to.is_terminal:
        to.print(table)
        return

    def plain(cell: Any) -> str:
        if isinstance(cell, str):
            cell = Text.from_markup(cell)
        text = cell.plain if isinstance(cell, Text) else str(cell)
        return " ".join(text.splitlines())

    columns = table.columns
    rows = [[plain(c.header) for c in columns]] if table.show_header else []
    rows += [list(r) for r in zip(*([plain(x) for x in c.cells] for c in columns), strict=True)]
    widths = [max((cell_len(r[i]) for r in rows), default=0) for i in range(len(columns))]

    def pad(text: str, width: int, justify: str) -> str:
        gap = width - cell_len(text)
        if justify == "right":
            return " " * gap + text
        if justify == "center":
            return " " * (gap // 2) + text + " " * (gap - gap // 2)
        return text + " " * gap

    lines = [plain(table.title)] if table.title else []
    lines += ["  ".join(pad(cell, w, c.justify) for cell, w, c in zip(r, widths, columns,
                                                                      strict=True)).rstrip()
              for r in rows]
    if table.caption:
        lines.append(plain(table.caption))
    for line in lines:
        to.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


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
