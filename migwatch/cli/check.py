"""`migwatch check`: the CI gate — is this migration's data lag under a limit right now?"""

from __future__ import annotations

import typer

from migwatch.cli._app import app, handle_errors


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
    typer.echo(f"{status.label}: {status.reason}")
    raise typer.Exit(status.code)
