"""How far the load got: rows and bytes per table as they stream, against the source's row
estimates; rows per second and an ETA overall. Workers add to it from their threads; the
caller reads a `LoadView` once a second (Prefect artifacts and metrics from its own thread)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TableView:
    table: str
    rows: int
    bytes: int
    estimate: int
    done: bool
    seconds: float

    @property
    def ratio(self) -> float:
        if self.done:
            return 1.0
        return min(0.99, self.rows / self.estimate) if self.estimate > 0 else 0.0


@dataclass(frozen=True)
class LoadView:
    tables: tuple[TableView, ...]
    seconds: float
    #: what the load holds on the source (`estimate.SourceHold.describe`), when known
    held: str = ""

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def estimate(self) -> int:
        return sum(max(t.estimate, t.rows) for t in self.tables)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float:
        if all(t.done for t in self.tables):
            return 1.0
        return min(0.99, self.rows / self.estimate) if self.estimate else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rows_per_second
        if all(t.done for t in self.tables):
            return 0.0
        return None if rate <= 0 else max(0.0, (self.estimate - self.rows) / rate)

    def describe(self) -> str:
        done = sum(1 for t in self.tables if t.done)
        eta = "" if self.eta_seconds is None else f", ETA {self.eta_seconds:.0f}s"
        held = f"; {self.held}" if self.held else ""
        return (f"{done} of {len(self.tables)} table(s) loaded; {self.rows:,} of "
                f"~{self.estimate:,} rows, {self.bytes / 1048576:.1f} MiB; "
                f"{self.rows_per_second:,.0f} rows/s{eta}{held}")


class LoadProgress:
    def __init__(self, estimates: Mapping[str, int], tables: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._rows = dict.fromkeys(tables, 0)
        self._bytes = dict.fromkeys(self._rows, 0)
        self._estimate = {t: int(estimates.get(t, 0)) for t in self._rows}
        self._begun: dict[str, float] = {}
        self._ended: dict[str, float] = {}

    def add(self, table: str, rows: int, size: int) -> None:
        with self._lock:
            self._begun.setdefault(table, time.monotonic())
            self._rows[table] += rows
            self._bytes[table] += size

    def finish(self, table: str, rows: int) -> None:
        """`table` is loaded: `rows` by this load (the count its target recorded)."""
        with self._lock:
            now = time.monotonic()
            self._begun.setdefault(table, now)
            self._ended[table] = now
            self._rows[table] = rows

    def view(self) -> LoadView:
        with self._lock:
            now = time.monotonic()
            return LoadView(tuple(
                TableView(t, self._rows[t], self._bytes[t], self._estimate[t],
                          t in self._ended,
                          round(self._ended.get(t, now) - self._begun.get(t, now), 3))
                for t in self._rows), round(now - self._started, 3))


#: the load's latest view in the run folder, for whoever watches the run (`migwatch run`'s bar)
VIEW_FILE = "load-progress.json"


def save_view(migration_id: str, view: LoadView) -> None:
    from migwatch.runs import run_dir

    path = run_dir(migration_id) / VIEW_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({**asdict(view), "ratio": view.ratio,
                               "eta_seconds": view.eta_seconds}))
    tmp.replace(path)  # atomic: a reader never sees half of it


def read_view(migration_id: str) -> LoadView | None:
    from migwatch.runs import run_dir

    try:
        doc = json.loads((run_dir(migration_id) / VIEW_FILE).read_text())
        return LoadView(tuple(TableView(**t) for t in doc["tables"]), doc["seconds"],
                        doc.get("held", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bar(ratio: float, width: int = 24) -> str:
    """A text bar: `█` for what is done, `░` for the rest."""
    full = round(max(0.0, min(1.0, ratio)) * width)
    return "█" * full + "░" * (width - full)
