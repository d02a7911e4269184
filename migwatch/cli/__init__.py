"""The `migwatch` command line. Each command group lives in its own module and registers itself
on `app`; importing this package wires them all."""

from __future__ import annotations

import migwatch.cli.check  # noqa: F401  (registers `migwatch check`)
import migwatch.cli.cutover  # noqa: F401  (registers `migwatch cutover`)
import migwatch.cli.dashboard  # noqa: F401  (registers `migwatch dashboard`)
import migwatch.cli.demo  # noqa: F401  (registers `migwatch demo`)
import migwatch.cli.migrations  # noqa: F401  (registers `migwatch migrations`)
import migwatch.cli.monitor  # noqa: F401  (registers `migwatch monitor`)
import migwatch.cli.reload  # noqa: F401  (registers `migwatch reload`)
import migwatch.cli.resume  # noqa: F401  (registers `migwatch resume-table`)
import migwatch.cli.run  # noqa: F401  (registers `migwatch run` and `migwatch report`)
import migwatch.cli.teardown  # noqa: F401  (registers `migwatch teardown`)
import migwatch.cli.validate  # noqa: F401  (registers `migwatch validate`)
from migwatch.cli import apply, stack, workload  # noqa: F401  (register command groups)
from migwatch.cli._app import app, handle_errors

__all__ = ["app", "handle_errors", "main"]


def main() -> None:
    app()
