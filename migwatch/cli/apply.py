"""`migwatch apply SPEC --migration-id ID`: run the CDC applier in the foreground."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from migwatch.cli._app import app, console, handle_errors


@app.command("apply")
@handle_errors
def apply(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    migration_id: str = typer.Option(..., help="The migration run's id ([a-z0-9-], ≤40)."),
    metrics_port: int = typer.Option(0, help="Port for /metrics (0: any free port)."),
) -> None:
    """Apply the migration's change events to the target until stopped (SIGTERM finishes the
    current batch, commits and exits 0). Serves metrics and announces itself to Prometheus."""
    from migwatch.applier import serve
    from migwatch.config import check_migration_id, load_spec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("migwatch.apply")
    try:
        check_migration_id(migration_id)
        s = load_spec(spec)
        stats = serve(s, migration_id, metrics_port=metrics_port,
                      on_ready=lambda port: console.print(
                          f"applier {migration_id}: metrics on 127.0.0.1:{port}"))
    except Exception as exc:
        # the reason goes to the log before the process ends: whoever started it reads it there
        from migwatch.report import scrub

        reason = " ".join(ln.strip() for ln in str(exc).strip().splitlines())
        log.error("applier %s failed: %s: %s", migration_id, type(exc).__name__, scrub(reason))
        raise
    console.print(f"applier {migration_id}: stopped after {stats.events} events "
                  f"in {stats.batches} batches, {stats.dlq} dead-lettered")
