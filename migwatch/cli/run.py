"""`migwatch run SPEC` (the pipeline, locally) and `migwatch report --migration-id ID`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from migwatch.cli._app import app, console, handle_errors, out, print_json_doc
from migwatch.errors import MigwatchError


def use_stack_prefect() -> str | None:
    """Point Prefect at the local stack's server when nothing else is configured and it answers,
    so runs show in its UI; returns the API URL in use (None: Prefect's own default)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    import requests

    from migwatch.stack import Stack

    stack = Stack(echo=lambda _m: None)
    api = stack.address("prefect-server")
    try:
        if requests.get(api + "/health", timeout=2).status_code != 200:
            return None
    except requests.RequestException:
        return None
    os.environ["PREFECT_API_URL"] = api
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return api


def default_migration_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S", time.gmtime())


@app.command("run")
@handle_errors
def run(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    migration_id: str = typer.Option(
        None, help="The migration run's id ([a-z0-9-], at most 40; a commit SHA fits). "
                   "Default: run-<UTC date>-<time>. The same id again resumes that run."),
    reset_target: bool = typer.Option(
        False, "--reset-target",
        help="When the run starts afresh (no connector for the id yet, e.g. after teardown), "
             "empty the spec's target tables first. Without it, a fresh run onto target tables "
             "that hold rows is refused, naming them. A resumed run ignores it."),
) -> None:
    """Run the pipeline locally: migrate → validate → monitor-until-caught-up → report.

    Exits 0 when the report's verdict is go, 1 when it is no-go (gate failed, data differs,
    events dead-lettered...), 2 when the spec or a server is wrong. The applier keeps running
    after the report, until `migwatch teardown`."""
    from migwatch.config import check_migration_id, load_spec

    mid = check_migration_id(migration_id or default_migration_id())
    load_spec(spec)
    api = use_stack_prefect()
    console.print(f"migration run [bold]{mid}[/]" + (f" (Prefect API {api})" if api else ""),
                  highlight=False)
    from migwatch.cli._live import PipelineView

    try:
        with PipelineView(console, load_spec(spec), mid):  # stages, the load's bar, lag
            summary = run_pipeline(spec, mid, reset_target=reset_target)
    except MigwatchError:
        print_report_paths(mid)  # a no-go run has its report too: say where
        raise
    print_summary(summary)


def print_report_paths(migration_id: str) -> None:
    from migwatch.runs import run_dir

    for kind in ("json", "html"):
        path = run_dir(migration_id) / f"report.{kind}"
        if path.exists():
            out.print(f"  report ({kind}): {path}", highlight=False)


def run_pipeline(spec: Path, migration_id: str, reset_target: bool = False) -> dict[str, Any]:
    """The pipeline flow in this process; its summary, or the error that made it fail."""
    from flows.pipeline import migration_pipeline
    from migwatch.prefect_adapter import quiet_typed_tracebacks

    quiet_typed_tracebacks()
    result: dict[str, Any] = migration_pipeline(str(spec.resolve()), migration_id,
                                                reset_target=reset_target)
    return result


def print_summary(summary: dict[str, Any]) -> None:
    out.print(f"verdict: [bold green]GO[/] for {summary['migration_id']}", highlight=False)
    for w in summary.get("warnings") or []:
        out.print(f"  warning: {w}", highlight=False)
    for kind, path in (summary.get("paths") or {}).items():
        out.print(f"  report ({kind}): {path}", highlight=False)


@app.command("report")
@handle_errors
def report(
    migration_id: str = typer.Option(..., help="The migration run to report on."),
    spec: Path = typer.Option(
        None, help="Migration spec; default: the one the run was started with."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the verdict as one JSON document on stdout (the report "
                              "flow's summary); same exit codes."),
) -> None:
    """Rebuild the report of a run (verdict, JSON, HTML, artifacts, dashboard) from what the run
    left in its folder and the live state of source, target and Kafka. Exit 0 go, 1 no-go."""
    from migwatch import runs
    from migwatch.config import check_migration_id

    check_migration_id(migration_id)
    spec_path = str(spec.resolve()) if spec is not None else runs.load(migration_id).spec_path
    use_stack_prefect()
    from flows.report import report as report_flow
    from migwatch.prefect_adapter import quiet_typed_tracebacks

    quiet_typed_tracebacks()

    summary = report_flow(spec_path, migration_id)
    if as_json:
        print_json_doc(summary)
        raise typer.Exit(0 if summary["go"] else 1)
    if summary["go"]:
        print_summary(summary)
        return
    out.print(f"verdict: [bold red]NO-GO[/] for {migration_id}", highlight=False)
    for r in summary["reasons"]:
        out.print(f"  - {r}", highlight=False)
    for kind, path in summary["paths"].items():
        out.print(f"  report ({kind}): {path}", highlight=False)
    raise typer.Exit(1)
