"""Every command's `--help` reads as paragraphs at 80 and 120 columns: no line broken where the
source had a newline while the next word would still have fitted (the ragged "delete the /
Debezium / connector" look)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from migwatch.cli import app

WIDTHS = (80, 120)


def _paths(cmd: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(cmd, TyperGroup):
        for name, sub in cmd.commands.items():
            yield from _paths(sub, (*path, name))


#: every command and subcommand, read from the app so new ones are covered without a change here
COMMANDS = list(_paths(typer.main.get_command(app)))


def _layout(line: str) -> tuple[str, int]:
    """The line with box borders blanked, and where its text may end (exclusive): boxes and the
    description both keep one column of padding before their right edge."""
    if line.startswith("│") and line.rstrip().endswith("│"):
        line = line.rstrip()
        return " " + line[1:-1] + " ", len(line) - 2
    return line, len(line) - 1


def _cell_start(s: str) -> int:
    """Where the line's last cell begins: after its last gap of two or more spaces (table columns
    are two apart; wrapped prose is one apart), else at its first character."""
    end = len(s.rstrip())
    gaps = [m.end() for m in re.finditer(r"(?<=\S) {2,}(?=\S)", s[:end])]
    return gaps[-1] if gaps else len(s) - len(s.lstrip())


def ragged_breaks(text: str) -> list[str]:
    """Each pair of lines of one paragraph where the second line's first word would have fitted
    on the first: a newline kept from the source, not a wrap (a wrap is greedy). typer's own
    `[default: …]`/`[required]` annotations go on their own line and are not prose."""
    found = []
    lines = [ln.rstrip("\n") for ln in click.unstyle(text).splitlines()]
    width = max((len(ln) for ln in lines), default=0)
    lines = [ln.ljust(width) for ln in lines]
    for a, b in zip(lines, lines[1:], strict=False):
        (sa, limit), (sb, _) = _layout(a), _layout(b)
        if not sa.strip() or not sb.strip() or (a[:1] == "│") != (b[:1] == "│"):
            continue
        first_b = len(sb) - len(sb.lstrip())
        if _cell_start(sb) != first_b or _cell_start(sa) != first_b:
            continue  # b starts a new row (or a cell of another column), not a continuation
        word = sb.split()[0]
        if word.startswith("["):
            continue
        if len(sa.rstrip()) + 1 + len(word) <= limit:
            found.append(f"{a.rstrip()}\n{b.rstrip()}")
    return found


def render_help(path: tuple[str, ...], width: int) -> str:
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(width)},
                             terminal_width=width)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_every_command_is_enumerated() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert len(COMMANDS) > 10
    assert {"", "validate", "monitor", "check", "report", "stack", "stack up",
            "migrations status", "workload run"} <= names


def test_the_check_finds_a_kept_newline() -> None:
    """The detector on typer's rendering of a hard-wrapped docstring (before the fix)."""
    ragged = (
        "│ teardown    Stop capturing changes for a migration: stop the applier (a      │\n"
        "│             local process, or its                                            │\n"
        "│             `cdc-applier` deployment runs through Prefect), delete the       │\n"
        "│             Debezium                                                         │\n"
        "│             connector, drop the replication slot (so WAL stops piling up on  │\n"
    )
    assert len(ragged_breaks(ragged)) == 2
    wrapped = (
        " Stop capturing changes for a migration: stop the applier (a local process, or  \n"
        " its `cdc-applier` deployment runs through Prefect), delete the Debezium        \n"
        "│ --install-completion        <bool>  Install completion for the current       │\n"
        "│                                     shell.                                   │\n"
        "│ --help                      <bool>  Show this message and exit               │\n"
        "│ --json                      <bool>  Print JSON                               │\n"
    )
    assert ragged_breaks(wrapped) == []


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "migwatch")
def test_help_reads_as_paragraphs(path: tuple[str, ...], width: int) -> None:
    text = render_help(path, width)
    assert max(len(ln) for ln in text.splitlines()) == width  # rendered at the asked width
    breaks = ragged_breaks(text)
    assert not breaks, f"`migwatch {' '.join(path)} --help` at {width} columns:\n" + \
        "\n---\n".join(breaks)


def test_square_brackets_in_help_are_text_not_markup() -> None:
    from typer.testing import CliRunner

    from migwatch.cli import app

    out = CliRunner().invoke(app, ["apply", "--help"], env={"COLUMNS": "120"}).output
    assert "[a-z0-9-]" in out
