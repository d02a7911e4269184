"""`migwatch monitor SPEC --migration-id ID`: watch every lag until caught up, live."""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from migwatch.cli._app import app, console, handle_errors, out, print_json_doc, print_table

_STATE_STYLE = {"caught up": "green", "behind": "cyan", "unknown": "dim", "warn": "yellow",
                "critical": "bold red"}
_VERDICT_STYLE = {"OK": "green", "WARNING": "yellow", "FALLING_BEHIND": "yellow",
                  "STALLED": "bold red", "ERROR": "bold red"}


@app.command("monitor")
@handle_errors
def monitor(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    migration_id: str = typer.Option(
        ..., help="The migration run's id: lowercase letters, digits and dashes, at most 40."),
    notify: bool = typer.Option(
        False, help="Also send state changes through the spec's notification blocks (needs a "
                    "Prefect API). Off by default: the pipeline's monitor flow already does."),
    keep_running: bool = typer.Option(
        False, help="Keep watching (and exporting every lag to Prometheus) after the gate "
                    "passes or fails, until SIGTERM; what `migwatch start` runs for the CI gate."),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON Lines on stdout instead of tables: one line per poll, "
                              "then one with the result; same exit codes."),
) -> None:
    """Poll every lag (consumer, event-time, end-to-end, slot WAL) at the spec's interval and
    show measure, value, threshold, state and ETA. Exits 0 once every lag stayed under its
    caught_up threshold for the spec's consecutive polls, 1 when the gate fails (timeout or a
    hard maximum), 2 when the spec or a server is wrong."""
    from migwatch.config import check_migration_id, load_spec
    from migwatch.measures import poll
    from migwatch.watch import save_samples, watch

    check_migration_id(migration_id)
    s = load_spec(spec)
    poll(s, migration_id, strict=True)  # an unreachable server: exit 2 now, not at the timeout
    notify_fn = None
    if notify:
        from migwatch.notifications import send

        def notify_fn(notice: Any) -> None:
            send(notice, s.notifications)

    stop = _stop_on_sigterm() if keep_running else None
    view = _View(migration_id, live=out.is_terminal and not keep_running and not as_json,
                 as_json=as_json)
    try:
        result = watch(s, migration_id, notify_fn=notify_fn, on_poll=view.update, stop=stop)
    finally:
        view.stop()
    path = save_samples(result)
    if as_json:
        print_json_doc(result_doc(result, path))
        console.print(f"samples: {path}", highlight=False)
    else:
        if result.evaluations:
            print_table(_table(migration_id, result.evaluations[-1], None))
        _print_sequences(s)
        out.print(f"samples: {path}")
    if not result.passed:
        console.print(f"[bold red]gate failed:[/] {escape(result.reason or '')}",
                      highlight=False, soft_wrap=True)  # one line a CI log keeps whole
        raise typer.Exit(1)
    if not as_json:
        out.print(f"[green]caught up[/] after {result.polls} polls ({result.seconds:.0f} s)",
                  highlight=False)


def _print_sequences(spec: Any) -> None:
    """The tables' sequences with their source and target values (logical decoding does not
    carry them; the cutover sets them): a table, or one line saying why they could not be
    read — never a failure of the gate."""
    from migwatch import sequences
    from migwatch.errors import MigwatchError

    try:
        states = sequences.read(spec, "migwatch-monitor")
    except MigwatchError as exc:
        console.print(f"[yellow]sequences not read[/]: {escape(str(exc))}", highlight=False)
        return
    if not states:
        return
    table = Table(title="sequences (the cutover sets the target's)")
    for col in ("sequence", "table", "source value", "target value", "behind by"):
        table.add_column(col, justify="left" if col in ("sequence", "table") else "right")
    for row in sequences.rows(st.to_dict() for st in states):
        table.add_row(*(escape(v) for v in row.values()))
    print_table(table)


def _stop_on_sigterm() -> threading.Event:
    """An event SIGTERM and SIGINT set: the watch ends its poll and returns."""
    stop = threading.Event()

    def _handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def poll_doc(p: Any) -> dict[str, Any]:
    """`--json`: one poll — the sample and evaluation as the samples file keeps them, the gate."""
    return {"kind": "poll", "poll": p.number, "verdict": p.evaluation.verdict.value,
            "caught_up": p.evaluation.caught_up, "gate": asdict(p.gate),
            "sample": p.sample.to_dict(), "evaluation": p.evaluation.to_dict()}


def result_doc(result: Any, samples_path: Path) -> dict[str, Any]:
    """`--json`: the last line — the WatchResult (`passed`, `verdict`, `reason`, the series)."""
    return {"kind": "result", **result.to_dict(), "samples_path": str(samples_path)}


class _View:
    """A live table on a terminal; one line per poll otherwise (logs, CI), or a JSON line."""

    def __init__(self, migration_id: str, live: bool, as_json: bool = False) -> None:
        self.migration_id = migration_id
        self.as_json = as_json
        self.live: Any = None
        if live:
            from rich.live import Live

            self.live = Live(console=out, refresh_per_second=4, transient=True)
            self.live.start()

    def update(self, p: Any) -> None:
        from migwatch.lag import one_line

        if self.live is not None:
            self.live.update(_table(self.migration_id, p.evaluation, p))
        elif self.as_json:
            print_json_doc(poll_doc(p))
        else:
            out.print(f"poll {p.number}: {one_line(p.evaluation, p.gate)}", highlight=False)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def _table(migration_id: str, ev: Any, p: Any) -> Table:
    from migwatch.lag import format_duration, status_rows

    verdict = ev.verdict.value
    title = f"migwatch monitor {migration_id}: [{_VERDICT_STYLE[verdict]}]{verdict}[/]"
    if p is not None:
        title += f"  (poll {p.number}, gate {p.gate.consecutive}/{p.gate.needed})"
    table = Table(title=title, caption="; ".join(ev.reasons) or None)
    for col in ("measure", "value", "threshold", "state", "ETA"):
        table.add_column(col, justify="right" if col in ("value", "ETA") else "left")
    for r in status_rows(ev):
        table.add_row(r["measure"], r["value"], r["threshold"],
                      f"[{_STATE_STYLE.get(r['state'], '')}]{r['state']}[/]", r["eta"])
    eta = "now" if ev.caught_up else format_duration(ev.eta_seconds)
    table.add_row("[bold]overall[/]", "", "", f"[{_VERDICT_STYLE[verdict]}]{verdict}[/]", eta)
    return table
