"""`migwatch migrations status|up|down|repair SPEC`: versioned migrations on the spec's target.

Exit codes: 0 done (or nothing to do); 1 a migration failed, or an applied script was edited and
the run was refused (`status`: some version is failed or changed); 2 bad input (spec, folder,
`--to`, no undo script) or the target unreachable or locked by another run past the wait.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from migwatch.cli._app import app, console, out, print_json_doc, print_table
from migwatch.errors import ConfigError, MigrationChanged, MigrationFailed, MigwatchError

migrations_app = typer.Typer(
    help="Versioned migrations on the target: V<version>__<description>.sql files for "
         "PostgreSQL, Python modules with up()/down() for MongoDB. The spec's `migrations` "
         "section names the folder (relative to the working directory).",
    no_args_is_help=True)
app.add_typer(migrations_app, name="migrations")

F = TypeVar("F", bound=Callable[..., Any])

SPEC_ARG = typer.Argument(..., help="Migration spec (YAML) with a `migrations` section.")
DRY_RUN = typer.Option(False, "--dry-run", help="Only show what would run; change nothing "
                       "(no history, no lock, no script).")

_STATE_STYLE = {"applied": "green", "pending": "cyan", "failed": "bold red",
                "changed": "bold yellow", "missing": "yellow"}


def _exit_codes(fn: F) -> F:
    """Every MigwatchError as one unwrapped line on stderr and its exit code: a failed migration
    or an edited applied script is a finding (1), anything else bad input or unreachable (2)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MigwatchError as exc:
            code = 1 if isinstance(exc, MigrationFailed | MigrationChanged) else exc.exit_code
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}",
                          highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _load(spec: Path) -> Any:
    from migwatch.config import load_spec
    from migwatch.migrations import resolve_kind

    s = load_spec(spec)
    resolve_kind(s)  # a spec without a migrations section is bad input, said before connecting
    return s


def _target_version(to: str | None) -> str | None:
    if to is None:
        return None
    from migwatch.migrations import Version

    try:
        return str(Version.parse(to))
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix("version: "), field="--to") from None


def _header(s: Any, what: str) -> None:
    from migwatch.targets import engine_for

    kind = engine_for(s).migrations_label
    out.print(f"{kind} migrations {what} [bold]{escape(s.target.redacted())}[/] "
              f"[dim](folder {escape(s.migrations.folder)})[/]", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- status


@migrations_app.command("status")
@_exit_codes
def status(
    spec: Path = SPEC_ARG,
    as_json: bool = typer.Option(
        False, "--json", help="Print the status as one JSON document on stdout; same exit "
                              "codes."),
) -> None:
    """Show each version: applied, pending, failed, changed or missing.

    Every version in the folder or the target's history: applied, pending, failed, changed
    (applied, but its file was edited since) or missing (applied, file gone), and who holds the
    lock. Exits 1 when a version is failed or changed, else 0.
    """
    from migwatch.migrations import run_status

    s = _load(spec)
    report = run_status(s)
    if as_json:
        print_json_doc(report.to_dict())
    else:
        _header(s, "on")
        print_table(_status_table(report.rows))
        counts: dict[str, int] = {}
        for row in report.rows:
            counts[row.state.value] = counts.get(row.state.value, 0) + 1
        summary = ", ".join(f"[{_STATE_STYLE[k]}]{n} {k}[/]" for k, n in counts.items())
        out.print(summary or "no migrations in the folder and no history on the target")
        if report.lock is not None:
            out.print(f"lock held by {escape(report.lock.owner)} until {report.lock.expires_at}",
                      highlight=False, soft_wrap=True)
    bad = [r for r in report.rows if r.state.value in ("failed", "changed")]
    for row in bad:
        hint = ("its file was edited after it ran: restore it, or accept it with `migwatch "
                "migrations repair`" if row.state.value == "changed" else
                "it failed: fix it; `migwatch migrations repair` clears the failed row")
        console.print(f"[bold red]version {row.version}[/] ({escape(row.script)}): {hint}",
                      highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(1)


def _status_table(rows: list[Any]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("version", no_wrap=True)
    table.add_column("description")
    table.add_column("state", no_wrap=True)
    table.add_column("applied at (UTC)", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("by")
    table.add_column("tx", no_wrap=True)
    for r in rows:
        style = _STATE_STYLE.get(r.state.value, "")
        table.add_row(
            r.version, r.description, f"[{style}]{r.state.value}[/]",
            r.applied_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if r.applied_at
            else "",
            "" if r.duration_ms is None else str(r.duration_ms), r.applied_by or "",
            "" if r.in_transaction is None else ("yes" if r.in_transaction else "no"))
    return table


# --------------------------------------------------------------------------- up / down


class _StepView:
    """One line per finished step; a spinner on the running one when stdout is a terminal."""

    def __init__(self) -> None:
        self._status: Any = None

    def __call__(self, event: Any) -> None:
        step = event.step
        name = escape(f"[{event.index}/{event.total}] {step.direction} {step.version} "
                      f"{step.migration.description}")
        if event.outcome is None:
            if out.is_terminal:
                self._status = out.status(f"{name} …")
                self._status.start()
            return
        self.stop()
        o = event.outcome
        tx = "in a transaction" if o.in_transaction else "no transaction"
        docs = ""
        if o.documents:
            docs = ", " + ", ".join(f"{n} {c}" for c, n in sorted(o.documents.items()))
        if o.status == "success":
            out.print(f"[green]✓[/] {name}  [dim]{o.duration_ms} ms, {tx}{docs}[/]",
                      highlight=False, soft_wrap=True)
        else:
            undone = "rolled back" if o.in_transaction else "may be partly applied"
            out.print(f"[bold red]✗[/] {name}  [red]{o.error_type}[/] [dim]after "
                      f"{o.duration_ms} ms, {undone}{docs}[/]", highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _run(spec: Path, direction: str, to: str | None, dry_run: bool) -> None:
    from migwatch.migrations import run_down, run_up

    s = _load(spec)
    target = _target_version(to)
    _header(s, "on")
    view = _StepView()
    run = run_up if direction == "up" else run_down
    try:
        result = run(s, target_version=target, dry_run=dry_run, on_step=view)
    finally:
        view.stop()
    verb = "apply" if direction == "up" else "revert"
    if dry_run:
        if not result.planned:
            out.print(f"dry run: nothing to {verb}", soft_wrap=True)
            return
        out.print(f"dry run: would {verb} {len(result.planned)} migration(s), in this order:")
        width = max(len(st.migration.description) for st in result.planned)
        for st in result.planned:
            script = st.to_dict()["script"]
            out.print(f"  {st.version:<8}  {escape(st.migration.description):<{width}}  "
                      f"[dim]{escape(script)}[/]", highlight=False, soft_wrap=True)
        return
    if result.lock_taken_over_from:
        console.print("[yellow]took over an expired migrations lock from "
                      f"{escape(result.lock_taken_over_from)}[/]", highlight=False,
                      soft_wrap=True)
    if not result.outcomes:
        waited = f" (waited {result.lock_wait_seconds:.1f} s for the lock)" \
            if result.lock_wait_seconds >= 0.1 else ""
        out.print((f"nothing to {verb}: the target is up to date" if direction == "up"
                   else "nothing to revert") + waited, highlight=False, soft_wrap=True)
        return
    done = "applied" if direction == "up" else "reverted"
    seconds = sum(o.duration_ms for o in result.outcomes) / 1000
    out.print(f"[green]{done} {len(result.outcomes)} migration(s)[/] in {seconds:.1f} s "
              f"(waited {result.lock_wait_seconds:.1f} s for the lock)", highlight=False,
              soft_wrap=True)


@migrations_app.command("up")
@_exit_codes
def up(
    spec: Path = SPEC_ARG,
    to: str = typer.Option(None, "--to", metavar="VERSION",
                           help="Apply pending migrations up to and including this version "
                                "(e.g. 1.10); default: all pending."),
    dry_run: bool = DRY_RUN,
) -> None:
    """Apply pending migrations in version order, or up to --to.

    Versions compare as numbers (1.9 before 1.10); each runs in its own transaction where the
    server has them, under the target's migrations lock. Refused (exit 1) when an applied script
    was edited; stops at the first failure (exit 1), earlier ones stay applied.
    """
    _run(spec, "up", to, dry_run)


@migrations_app.command("down")
@_exit_codes
def down(
    spec: Path = SPEC_ARG,
    to: str = typer.Option(None, "--to", metavar="VERSION",
                           help="Revert every applied migration above this version, newest "
                                "first; default: only the newest."),
    dry_run: bool = DRY_RUN,
) -> None:
    """Revert the newest applied migration, or every one above --to.

    Newest first: MongoDB modules' down(); for SQL only where an undo file
    U<version>__<description>.sql exists (otherwise refused before anything runs).
    """
    _run(spec, "down", to, dry_run)


# --------------------------------------------------------------------------- repair


@migrations_app.command("repair")
@_exit_codes
def repair(spec: Path = SPEC_ARG, dry_run: bool = DRY_RUN) -> None:
    """Accept edited scripts' new checksums; clear failed rows.

    Deliberately accepts the new checksum of applied scripts that were edited, and clears failed
    rows so those versions run again on the next `up`. No script is run.
    """
    from migwatch.migrations import run_repair

    s = _load(spec)
    _header(s, "on")
    result = run_repair(s, dry_run=dry_run)
    plan = result.plan
    would = "would " if dry_run else ""
    for mig in plan.accept_checksums:
        out.print(f"{would}accept the new checksum of version {mig.version} "
                  f"({escape(mig.script)})", highlight=False, soft_wrap=True)
    for row in plan.clear_failed:
        out.print(f"{would}clear failed version {row.version} ({escape(row.script)}); it runs "
                  "again on the next `up`", highlight=False, soft_wrap=True)
    if not plan.accept_checksums and not plan.clear_failed:
        out.print("nothing to repair")
    elif dry_run:
        out.print("dry run: nothing changed")
