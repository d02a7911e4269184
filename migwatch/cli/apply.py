"""`migwatch apply SPEC --migration-id ID`: run the CDC applier in the foreground."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from migwatch.cli._app import app, console, handle_errors

if TYPE_CHECKING:
    from migwatch.config import MigrationSpec


@app.command("apply")
@handle_errors
def apply(
    spec: Path = typer.Argument(..., help="Migration spec (YAML)."),
    migration_id: str = typer.Option(..., help="The migration run's id ([a-z0-9-], ≤40)."),
    metrics_port: int = typer.Option(0, help="Port for /metrics (0: any free port)."),
    supervise: bool = typer.Option(
        True, help="Run the applier under a supervisor that starts it again when it dies "
                   "(backoff, restart budget, notifications; see `supervision` in the spec) and "
                   "restarts a connector task that FAILED on a passing fault."),
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
        if supervise:
            code = _supervise(s, spec, migration_id, metrics_port)
            if code:
                raise typer.Exit(code)
            return
        stats = serve(s, migration_id, metrics_port=metrics_port,
                      on_ready=lambda port: console.print(
                          f"applier {migration_id}: metrics on 127.0.0.1:{port}"))
    except typer.Exit:
        raise
    except Exception as exc:
        # the reason goes to the log before the process ends: whoever started it reads it there
        from pydantic import ValidationError

        from migwatch.errors import ConfigError
        from migwatch.report import scrub
        from migwatch.supervision import REFUSED

        reason = " ".join(ln.strip() for ln in str(exc).strip().splitlines())
        log.error("applier %s failed: %s: %s", migration_id, type(exc).__name__, scrub(reason))
        if not supervise and isinstance(exc, ConfigError | ValidationError):
            # a setting that is wrong stays wrong: tell the supervisor not to start it again
            raise typer.Exit(REFUSED) from None
        raise
    console.print(f"applier {migration_id}: stopped after {stats.events} events "
                  f"in {stats.batches} batches, {stats.dlq} dead-lettered")


def _supervise(s: MigrationSpec, spec: Path, migration_id: str, metrics_port: int) -> int:
    """Run this command again without `--supervise`, under a Supervisor; its exit status."""
    import sys

    from migwatch.supervision import Supervisor, worker_argv

    exe = str(Path(sys.executable).parent / "migwatch")
    supervisor = Supervisor(s, migration_id,
                            worker_argv(exe, str(spec.resolve()), migration_id, metrics_port))
    supervisor.install_signal_handlers()
    console.print(f"applier {migration_id}: supervised (restart budget "
                  f"{s.supervision.max_restarts} within {s.supervision.window_seconds:.0f}s)")
    return supervisor.run()
