"""`migwatch demo`: the whole product on the local stack, in one command."""

from __future__ import annotations

import os

import typer

from migwatch.cli._app import app, console, handle_errors, out
from migwatch.errors import MigwatchError


@app.command("demo")
@handle_errors
def demo(
    size: int = typer.Option(100_000, help="Rows of the sample shop workload, all tables."),
    target: str = typer.Option("postgres", help="Target kind: postgres or mongodb."),
    rate: float = typer.Option(150.0, help="Source writes per second while the pipeline runs."),
    write_seconds: float = typer.Option(
        60.0, help="How long the source keeps taking writes after the pipeline starts."),
    migration_id: str = typer.Option(None, help="Id of the run (default: demo-<time>)."),
) -> None:
    """Start the local stack, fill the shop workload, and run the pipeline while the source keeps
    taking writes: live progress here, then the verdict, the report files, the dashboard and the
    Prefect UI address. Exit 0 go, 1 no-go."""
    from migwatch import demo as core
    from migwatch.cli._live import PipelineView
    from migwatch.cli.run import print_report_paths, print_summary, use_stack_prefect
    from migwatch.config import check_migration_id, load_spec
    from migwatch.stack import Stack

    if target not in ("postgres", "mongodb"):
        raise typer.BadParameter("must be postgres or mongodb", param_hint="--target")
    mid = check_migration_id(migration_id or "demo-" + _stamp())
    stack = Stack(echo=lambda m: console.print(f"[dim]stack[/] {m}", highlight=False))
    stack.up()
    api = use_stack_prefect()
    console.print(f"filling the shop workload ({size:,} rows) on the source…")
    ready = core.prepare(stack, mid, size, target)  # type: ignore[arg-type]
    if ready.previous:
        console.print(f"[dim]previous demo {ready.previous}: capture ended[/]")
    spec = load_spec(ready.spec_path)
    # the live view replaces Prefect's console log; every log line is in the Prefect UI
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from migwatch.cli.run import run_pipeline

    writer = core.Writer(stack.pg_dsn("source", core.DATABASE), rate, write_seconds).start()
    console.print(f"migration run [bold]{mid}[/]: {spec.source.redacted()} → "
                  f"{spec.target.redacted()}, spec {ready.spec_path}", highlight=False)
    failed: MigwatchError | None = None
    summary = None
    with PipelineView(out, spec, mid, writer=writer):
        try:
            summary = run_pipeline(ready.spec_path, mid)
        except MigwatchError as exc:
            failed = exc
        finally:
            writer.join(timeout=1)
    if writer.error:
        console.print(f"[yellow]the source writer stopped early: {writer.error}[/]")
    if summary is not None:
        print_summary(summary)
    else:
        print_report_paths(mid)
    grafana = stack.s.state_dir / "runs" / mid / "grafana"
    out.print(f"  Grafana dashboard (file provisioning): {grafana}", highlight=False)
    if api:
        out.print(f"  Prefect UI: {api.removesuffix('/api')}/runs", highlight=False)
    out.print(f"  Prometheus: {stack.address('prometheus')}/graph?g0.expr="
              f"migration_data_lag_seconds", highlight=False)
    out.print(f"  the applier keeps the target in sync until: migwatch teardown "
              f"{ready.spec_path} --migration-id {mid}", highlight=False)
    if failed is not None:
        raise failed


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())
