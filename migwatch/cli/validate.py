"""`migwatch validate SPEC [--migration-id ID]`: does the target hold the source's data?

Exit codes: 0 every table equal; 1 differences (missing, extra or changed rows, a schema
difference, a failed expectation — or differences still pending while CDC runs); 2 could not
compare (bad spec, a server unreachable, a table missing).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from migwatch.cli._app import app, console, handle_errors, out, print_json_doc, print_table

_STATUS_STYLE = {"equal": "green", "pending": "yellow", "different": "bold red",
                 "error": "bold red"}


@app.command("validate")
@handle_errors
def validate(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    migration_id: str | None = typer.Option(
        None, help="The migration whose CDC is running: differences are then pending, and the "
                   "result is saved for --revalidate and the report. Without it: final."),
    table: list[str] = typer.Option(
        [], "--table", "-t", help="Compare only this table (schema.table or name); repeatable."),
    expectations: bool = typer.Option(
        True, "--expectations/--no-expectations",
        help="Also run the Great Expectations suites on a PostgreSQL target (slower start)."),
    revalidate: bool = typer.Option(
        False, help="Re-check only the pending ranges of the saved result whose source "
                    "position the applier has passed (needs --migration-id)."),
    wait: float = typer.Option(
        0.0, min=0, help="With --revalidate: keep re-checking for up to this many seconds "
                         "while ranges are pending."),
    workers: int | None = typer.Option(
        None, min=1, max=64, help="Tables compared at once (default: the spec's "
                                  "validation.workers)."),
    output: Path | None = typer.Option(None, help="Also write the result as JSON to this file."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as one JSON document on stdout (progress goes "
                              "to stderr); same exit codes."),
) -> None:
    """Compare every table of the spec, source against target: row counts, checksums over
    primary-key ranges computed inside PostgreSQL, differing ranges narrowed down to the rows —
    missing, extra or changed, with the changed columns (values are shown only when the spec's
    validation.show_values allows). A MongoDB target is read by _id and compared at
    milliseconds."""
    from migwatch.config import check_migration_id, load_spec
    from migwatch.errors import ConfigError
    from migwatch.validation import run

    s = load_spec(spec)
    if workers is not None:
        s = s.model_copy(update={"validation": s.validation.model_copy(
            update={"workers": workers})})
    if migration_id is not None:
        check_migration_id(migration_id)
    if revalidate:
        if migration_id is None:
            raise ConfigError("--revalidate needs --migration-id", field="--migration-id")
        result = run.load_result(migration_id)
        with console.status("re-checking pending ranges"):
            run.revalidate(s, migration_id, result, timeout_seconds=wait)
    else:
        bars = _Bars(live=console.is_terminal)
        try:
            result = run.validate(s, migration_id, tables=table or None, progress=bars.update,
                                  on_table=bars.done)
        finally:
            bars.stop()
        if expectations:
            from migwatch.validation.expectations import run_expectations

            with console.status("running Great Expectations suites"):
                run_expectations(s, result)
    if as_json:
        print_json_doc(result.to_dict())  # as saved for --revalidate, `status` included
    else:
        _print(result)
    said = console if as_json else out  # stdout holds only the document in JSON mode
    if migration_id is not None:
        said.print(f"result: {run.save_result(result)}", highlight=False)
    if output is not None:
        result.save(output)
        said.print(f"result: {output}", highlight=False)
    raise typer.Exit(result.exit_code)


class _Bars:
    """A progress bar per table on a terminal (rows compared of rows expected); a line per
    finished table otherwise."""

    def __init__(self, live: bool) -> None:
        self.progress: Any = None
        self.ids: dict[str, Any] = {}
        self.lock = threading.Lock()
        if live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                     transient=True)
            self.progress.start()

    def update(self, table: str, done: int, expected: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            if table not in self.ids:
                self.ids[table] = self.progress.add_task(escape(table), total=expected)
            self.progress.update(self.ids[table], completed=done, total=expected)

    def done(self, result: Any) -> None:
        if self.progress is None:
            console.print(f"{result.table}: {result.status} ({result.rows_compared:,} rows, "
                          f"{result.seconds:.1f} s)", highlight=False, markup=False)
            return
        with self.lock:
            if result.table in self.ids:
                self.progress.remove_task(self.ids.pop(result.table))

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _print(result: Any) -> None:
    from migwatch.validation.expectations import failed_names

    status = result.status
    table = Table(title=f"migwatch validate: [{_STATUS_STYLE[status]}]{status}[/]",
                  caption="; ".join(result.notes) or None)
    for col in ("table", "status", "source rows", "target rows", "missing", "extra", "changed",
                "ranges", "seconds"):
        table.add_column(col, justify="left" if col in ("table", "status") else "right")
    for t in result.tables:
        style = _STATUS_STYLE[t.status]
        table.add_row(escape(t.table), f"[{style}]{t.status}[/]", f"{t.source_rows:,}",
                      f"{t.target_rows:,}", str(t.missing), str(t.extra), str(t.changed),
                      str(t.ranges_checked), f"{t.seconds:.1f}")
    print_table(table)
    for t in result.tables:
        if t.error:
            out.print(f"[bold red]{escape(t.table)}[/]: could not compare: {escape(t.error)}",
                      highlight=False)
        for w in t.warnings + t.schema_differences:
            out.print(f"[yellow]{escape(t.table)}[/]: {escape(w)}", highlight=False)
        for d in t.sample:
            cols = f" columns {', '.join(d.columns)}" if d.columns else ""
            values = ""
            if d.source and d.target and d.source != {c: "<redacted>" for c in d.columns}:
                values = f" source {d.source} target {d.target}"
            out.print(f"  {escape(t.table)} {d.kind} {escape(str(d.key))}{escape(cols)}"
                      f"{escape(values)}", highlight=False)
        if t.sample_truncated:
            out.print(f"  … {t.mismatched_rows - len(t.sample)} more differing row(s) in "
                      f"{escape(t.table)} (validation.sample_cap)", highlight=False)
        pending = t.pending_ranges()
        if pending:
            out.print(f"  {escape(t.table)}: {len(pending)} range(s) pending until the applier "
                      f"passes {max(pending, key=lambda r: r.lsn_num).lsn}; re-check with "
                      "--revalidate",
                      highlight=False)
    for name in failed_names(result):
        out.print(f"[bold red]expectation failed[/]: {escape(name)}", highlight=False)
    _print_schema(result.schema)


def _print_schema(check: Any) -> None:
    """The schema check: its figures, then one line per difference (declared ones dimmed)."""
    if check is None:
        return
    style = _STATUS_STYLE.get(check.status, "")
    out.print(f"schema: [{style}]{check.status}[/] — {check.objects} object(s) compared, "
              f"{len(check.differences)} differ, {len(check.declared)} declared by migrations"
              if style else f"schema: {check.status}", highlight=False)
    if check.error:
        out.print(f"  [bold red]could not check[/]: {escape(check.error)}", highlight=False)
    for d in check.differences:
        out.print(f"  [red]{d.kind}[/] {escape(d.object)}", highlight=False)
    for d in check.declared:
        out.print(f"  [dim]{d.kind} {escape(d.object)} (declared by "
                  f"{escape(d.declared_by)})[/]", highlight=False)
    for w in check.warnings:
        out.print(f"  [yellow]{escape(w)}[/]", highlight=False)
