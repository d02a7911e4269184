"""A live view of a migration run in the terminal: the four stages, the writer, lag and rows.

It reads only what the run leaves behind — the run record and the applier's position rows on the
target — from a thread, once a second, so it shows the same truth as the report. On a terminal it
is a live table; elsewhere (CI logs) one line every few seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from migwatch import names, runs
from migwatch.config import MigrationSpec
from migwatch.errors import MigwatchError
from migwatch.load.progress import bar, read_view
from migwatch.runs import STAGES

_STYLE = {"completed": "green", "failed": "bold red", "running": "yellow"}


class PipelineView:
    def __init__(self, console: Any, spec: MigrationSpec, migration_id: str,
                 writer: Any = None, interval: float = 1.0) -> None:
        self.console = console
        self.spec = spec
        self.migration_id = migration_id
        self.writer = writer
        self.interval = interval
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline-view", daemon=True)
        self._live: Live | None = None
        self._last_line = 0.0

    def __enter__(self) -> PipelineView:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._render()
        if self._live is not None:
            self._live.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._render()
            except Exception:  # a display must never break the run it shows
                continue

    def _render(self) -> None:
        state = self._state()
        if self._live is not None:
            self._live.update(self._table(state))
        elif time.monotonic() - self._last_line >= 10:
            self._last_line = time.monotonic()
            self.console.print(self._line(state), highlight=False)

    def _state(self) -> dict[str, Any]:
        try:
            record = runs.load(self.migration_id)
            stages = {n: o.status for n, o in record.stages.items()}
        except MigwatchError:
            stages = {}
        applied = lag = None
        try:
            from migwatch.measures import applied_positions

            every = applied_positions(self.spec, self.migration_id).get(names.ALL_TABLES)
            if every is not None:
                applied = every.events
                if every.source_ts_ms:
                    lag = max(0.0, time.time() - every.source_ts_ms / 1000)
        except MigwatchError:
            pass
        loading = read_view(self.migration_id) if stages.get("migrate") == "running" else None
        return {"stages": stages, "applied": applied, "lag": lag, "load": loading,
                "written": getattr(self.writer, "done_ops", None),
                "writing": getattr(self.writer, "running", False),
                "elapsed": time.monotonic() - self.started}

    def _table(self, st: dict[str, Any]) -> Table:
        table = Table(title=f"migration run {self.migration_id}  "
                            f"({st['elapsed']:.0f} s)", show_header=True)
        table.add_column("stage")
        table.add_column("state")
        for name in STAGES:
            status = st["stages"].get(name, "waiting")
            table.add_row(name, f"[{_STYLE.get(status, 'dim')}]{status}[/]")
        table.add_section()
        if st["load"] is not None:
            view = st["load"]
            table.add_row("initial load", f"{bar(view.ratio)} {view.ratio:.0%}")
            table.add_row("", escape(view.describe()))
        if st["written"] is not None:
            table.add_row("source writes", f"{st['written']:,} ops"
                          + (" (writing)" if st["writing"] else " (stopped)"))
        if st["applied"] is not None:
            table.add_row("events applied", f"{st['applied']:,}")
        if st["lag"] is not None:
            table.add_row("event-time lag", f"{st['lag']:.1f} s")
        return table

    def _line(self, st: dict[str, Any]) -> str:
        stages = " ".join(f"{n}={st['stages'].get(n, 'waiting')}" for n in STAGES)
        extra = []
        if st["load"] is not None:
            extra.append(f"load={st['load'].ratio:.0%} ({st['load'].rows:,} rows)")
        if st["written"] is not None:
            extra.append(f"written={st['written']}")
        if st["applied"] is not None:
            extra.append(f"applied={st['applied']}")
        if st["lag"] is not None:
            extra.append(f"lag={st['lag']:.1f}s")
        return f"[{st['elapsed']:.0f}s] {stages} " + " ".join(extra)
