"""`migwatch dashboard`: the Grafana dashboard and the Prometheus alert rules, as files, pushed
to Grafana, and installed into the local stack's Prometheus."""

from __future__ import annotations

from pathlib import Path

import typer

from migwatch.cli._app import app, console, handle_errors, out


@app.command("dashboard")
@handle_errors
def dashboard(
    spec: Path = typer.Option(
        None, help="Migration spec: its thresholds and Grafana settings (defaults otherwise)."
    ),
    out_dir: Path = typer.Option(
        None, "--out", help="Folder for the files; default: <state dir>/grafana."
    ),
    migration_id: str = typer.Option(
        None, help="Scope the alert rules to one migration (default: every migration)."
    ),
    grafana_url: str = typer.Option(
        None, help="Also push the dashboard to this Grafana (default: the spec's grafana_url)."
    ),
    grafana_folder: str = typer.Option(None, help="Grafana folder uid to push into."),
    grafana_token_env: str = typer.Option(
        "GRAFANA_TOKEN",
        help="Environment variable holding the Grafana token, when the spec names none.",
    ),
    install_rules: bool = typer.Option(
        False, help="Install the alert rules into the local stack's Prometheus and reload it."
    ),
) -> None:
    """Grafana dashboard and Prometheus alert rules, as files, pushed, installed.

    Writes the dashboard JSON (for Grafana's file provisioning), the provisioning YAML and the
    alert rules to a folder; with a Grafana URL also pushes the dashboard (POST
    /api/dashboards/db), and with --install-rules loads the rules into the local stack's
    Prometheus.
    """
    from migwatch import alerts
    from migwatch import dashboard as board
    from migwatch.config import StackSettings, check_migration_id, load_spec

    settings = StackSettings()
    loaded = load_spec(spec) if spec is not None else None
    if migration_id is not None:
        check_migration_id(migration_id)
    paths = board.write_bundle(out_dir or settings.state_dir / "grafana", loaded, migration_id)
    alerts.check_rules_file(paths["rules"])
    for kind, path in paths.items():
        out.print(f"{kind:13} {path}", highlight=False)

    url = grafana_url or (loaded.metrics.grafana_url if loaded is not None else None)
    if url:
        from migwatch.connectors.grafana import grafana_token, push_dashboard

        token = grafana_token(loaded, env=grafana_token_env)
        result = push_dashboard(url, token, board.dashboard_json(loaded), grafana_folder)
        out.print(f"{'grafana':13} {url.rstrip('/')}{result.url} (version {result.version})")
    if install_rules:
        installed = alerts.install_rules(paths["rules"].read_text(), paths["rules"].name, settings)
        console.print(f"[dim]rules installed in {installed}; Prometheus reloaded[/]")
