"""`migwatch start` and `migwatch check`: the CI gate — monitor a migration in the background,
then ask Prometheus whether its data lag is under a limit right now."""

from __future__ import annotations

from pathlib import Path

import typer

from migwatch.cli._app import app, handle_errors, print_json_doc


@app.command("check")
@handle_errors
def check(
    migration_id: str = typer.Option(..., help="The migration to check."),
    max_lag: float = typer.Option(
        ..., min=0, help="Largest acceptable data lag in seconds (migration_data_lag_seconds)."
    ),
    prometheus_url: str = typer.Option(
        None, help="Prometheus to ask; default: the local stack's Prometheus."
    ),
    freshness: float = typer.Option(
        300, min=1, help="Pushed values older than this many seconds count as 'cannot tell'."
    ),
    error_window: str = typer.Option("5m", help="Errors counted over this PromQL window."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the answer as one JSON document instead of the line; "
                              "same exit codes."),
) -> None:
    """The CI gate: is the migration's data lag under --max-lag right now?

    Asks Prometheus for migration_data_lag_seconds and the error rate, prints one line and exits
    0 healthy, 1 over the threshold or failing, 2 cannot tell (no data, stale pushed data,
    Prometheus down).
    """
    from migwatch import gate_check
    from migwatch.config import StackSettings
    from migwatch.connectors.prometheus import PrometheusClient

    if prometheus_url is None:
        s = StackSettings()
        prometheus_url = s.url(s.prometheus_port)
    with PrometheusClient(prometheus_url, timeout=10) as client:
        status = gate_check.check(
            client, migration_id, max_lag, freshness=freshness, error_window=error_window
        )
    if as_json:
        print_json_doc({"migration_id": migration_id, "max_lag_seconds": max_lag,
                        "status": status.label, "code": status.code, "reason": status.reason})
    else:
        typer.echo(f"{status.label}: {status.reason}")
    raise typer.Exit(status.code)


@app.command("start")
@handle_errors
def start(
    migration_id: str = typer.Option(..., help="The migration to monitor."),
    spec: Path = typer.Option(
        None, help="Migration spec; default: the one its run was started with on this machine."),
    prometheus_url: str = typer.Option(
        None, help="Prometheus that must see the monitor; default: the local stack's."),
    wait: float = typer.Option(120, min=1, help="Seconds to wait until Prometheus sees it."),
) -> None:
    """Start monitoring a migration in the background for the CI gate: a `migwatch monitor
    --keep-running` process exports every lag until `migwatch teardown`. Returns once
    Prometheus has its first data lag, so a following `migwatch check` can tell; exit 0 then,
    2 when Prometheus does not see it in time (the monitor keeps running)."""
    import time

    from migwatch import metrics, processes, promql, runs
    from migwatch.config import StackSettings, check_migration_id, load_spec
    from migwatch.connectors.prometheus import PrometheusClient

    check_migration_id(migration_id)
    spec_path = str(spec.resolve()) if spec is not None else runs.load(migration_id).spec_path
    load_spec(spec_path)
    if prometheus_url is None:
        s = StackSettings()
        prometheus_url = s.url(s.prometheus_port)
    already = processes.monitor_pid(migration_id)
    pid = processes.start_monitor(spec_path, migration_id)
    expr = promql.selector(metrics.MIGRATION_DATA_LAG, migration_id=migration_id)
    deadline = time.monotonic() + wait
    with PrometheusClient(prometheus_url, timeout=10) as client:
        while not client.query(expr):
            if processes.monitor_pid(migration_id) is None:
                log = runs.run_dir(migration_id) / "monitor.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() \
                    else []
                typer.echo(f"unknown: the monitor exited: {' '.join(tail)}", err=True)
                raise typer.Exit(2)
            if time.monotonic() >= deadline:
                typer.echo(f"unknown: Prometheus at {prometheus_url} has no data lag for "
                           f"{migration_id} after {wait:.0f}s; the monitor (pid {pid}) keeps "
                           "running", err=True)
                raise typer.Exit(2)
            time.sleep(1)
    typer.echo(f"monitoring {migration_id} ({'already running, ' if already else ''}pid {pid}); "
               f"Prometheus at {prometheus_url} has its data lag")
