"""The COPY load of a migration's tables (see the package doc for why it is consistent)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from migwatch import metrics, names, positions
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.errors import ConfigError, PermanentError
from migwatch.load.estimate import hold
from migwatch.load.progress import LoadProgress, LoadView
from migwatch.load.ranges import KeyRange
from migwatch.load.ranges import plan as plan_ranges
from migwatch.load.slot import APPLICATION, ExportedSlot, ensure_publication, slot_exists
from migwatch.snapshot import source_estimates
from migwatch.targets import engine_for

#: seconds between two looks at what the load holds on the source
HOLD_EVERY = 5.0


def by_copy(spec: MigrationSpec) -> bool:
    """Whether this migration's initial load is read straight from the source
    (`snapshot.method: copy`) by a target engine that can (`Target.loads`)."""
    return spec.snapshot.method == "copy" and engine_for(spec).loads


@dataclass(frozen=True)
class TableLoad:
    """One table's load: rows copied and seconds, or `earlier` when a previous run did it."""

    table: str
    rows: int = 0
    seconds: float = 0.0
    earlier: bool = False


@dataclass
class LoadResult:
    tables: list[TableLoad] = field(default_factory=list)
    #: the exported snapshot the tables were copied in ("" when resumed without one)
    snapshot: str = ""
    consistent_lsn: str = ""
    resumed: bool = False
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def streaming(spec: MigrationSpec, migration_id: str) -> bool:
    from migwatch.connectors.connect import ConnectClient

    with ConnectClient(spec.connect.url) as client:
        return client.status(names.connector_name(migration_id)) is not None


def _loaded(spec: MigrationSpec, migration_id: str) -> set[str]:
    found = positions.read(spec, migration_id, [t.source for t in spec.tables],
                           application=APPLICATION)
    return {t for t, p in found.items() if p.snapshot_done and t != names.ALL_TABLES}


def load(spec: MigrationSpec, migration_id: str,
         on_table: Callable[[TableLoad], None] | None = None,
         on_progress: Callable[[LoadView], None] | None = None) -> LoadResult:
    """Copy every table not loaded yet. On a first run: publication, slot with an exported
    snapshot, every table in it. When the slot exists already (a load cut off), the tables
    left are emptied and copied from a new snapshot (refused for keyless tables).
    `on_table` hears of each table loaded, `on_progress` of the whole about once a second —
    both on the caller's thread."""
    if not by_copy(spec):
        raise ConfigError("the initial load is read straight from the source only with "
                          "snapshot.method: copy", field="snapshot.method")
    started = time.monotonic()
    if streaming(spec, migration_id):
        # the initial load is over once Debezium streams (its connector is made after the
        # load): a table added to the spec later is loaded by Debezium's incremental snapshot
        result = LoadResult(resumed=True)
        result.tables = [TableLoad(t, earlier=True)
                         for t in sorted(_loaded(spec, migration_id))]
        return result
    done = _loaded(spec, migration_id)
    todo = [t for t in spec.tables if t.source not in done]
    result = LoadResult(tables=[TableLoad(t.source, earlier=True) for t in spec.tables
                                if t.source in done])
    resumed = slot_exists(spec, migration_id)
    if not todo:
        result.resumed = resumed
        return result
    infos = _describe(spec, todo, refuse_keyless=resumed)
    estimates = source_estimates(spec)
    progress = LoadProgress(estimates, [t.source for t in todo])
    watch = (progress, on_table, on_progress)
    ensure_publication(spec, migration_id)  # every table published before it is copied
    if resumed:
        result.resumed = True
        pieces = _pieces(spec, migration_id, todo, infos, estimates, resumed=True)
        result.tables += _all_ranges_earlier(todo, pieces, progress)
        loads = _copy_all(spec, migration_id, pieces, None, watch)
    else:
        holder = ExportedSlot(spec, migration_id).open()
        try:
            result.snapshot, result.consistent_lsn = holder.snapshot, holder.consistent_lsn
            pieces = _pieces(spec, migration_id, todo, infos, estimates, resumed=False)
            loads = _copy_all(spec, migration_id, pieces, holder.snapshot, watch)
        finally:
            holder.close()
    result.tables += loads
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _describe(spec: MigrationSpec, tables: Sequence[TableSpec],
              refuse_keyless: bool) -> dict[str, pg.TableInfo]:
    """Each table as the source defines it (its columns: generated ones left to each side)."""
    out: dict[str, pg.TableInfo] = {}
    keyless: list[str] = []
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn, \
            pg.translated("source: tables to load"):
        for t in tables:
            info = pg.describe_table(conn, t.schema_name, t.name)
            if info is None:
                raise PermanentError(f"source: table {t.source} does not exist")
            out[t.source] = info
            if not info.primary_key:
                keyless.append(t.source)
    if refuse_keyless and keyless:
        raise PermanentError(
            "the load was cut off and its exported snapshot is gone: copying again from a new "
            "snapshot needs a key to replay the slot's changes by, and these tables have none: "
            + ", ".join(keyless) + " — tear the migration down and start it again")
    return out


def _all_ranges_earlier(tables: Sequence[TableSpec], pieces: Sequence[Piece],
                        progress: LoadProgress) -> list[TableLoad]:
    """Tables of a resumed load with no piece left: every range was loaded before the cut."""
    left = {p.table.source for p in pieces}
    out = [TableLoad(t.source, earlier=True) for t in tables if t.source not in left]
    for t in out:
        progress.finish(t.table, 0)
    return out


@dataclass(frozen=True)
class Piece:
    """What one worker copies: a whole table, or one key range of it."""

    table: TableSpec
    info: pg.TableInfo
    key_range: KeyRange | None
    #: the table's plan (every range, the ones loaded earlier with their rows); () when whole
    plan: tuple[KeyRange, ...]
    estimate: int
    resumed: bool


def _pieces(spec: MigrationSpec, migration_id: str, tables: Sequence[TableSpec],
            infos: dict[str, pg.TableInfo], estimates: dict[str, int],
            resumed: bool) -> list[Piece]:
    """The work, biggest first: a table past `snapshot.split_rows` as its key ranges (planned
    now and stored on the target; on a resumed load, the stored plan's ranges not loaded), the
    others whole."""
    engine = engine_for(spec)
    out: list[Piece] = []
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn:
        for t in tables:
            info, estimate = infos[t.source], estimates.get(t.source, 0)
            if resumed:
                ranges = engine.load_plan(migration_id, t.source)
            else:
                ranges = plan_ranges(conn, t, info, estimate, spec.snapshot.split_rows)
                if ranges:
                    engine.save_load_plan(migration_id, t.source, ranges)
            if not ranges:
                out.append(Piece(t, info, None, (), estimate, resumed))
                continue
            left = [r for r in ranges if not r.done]
            if not left:  # every range loaded before the cut: only its record is missing
                engine.finish_load(migration_id, t.source, sum(r.rows for r in ranges))
            out += [Piece(t, info, r, tuple(ranges), estimate // r.count, resumed)
                    for r in left]
    return sorted(out, key=lambda p: -p.estimate)


_Watch = tuple[LoadProgress, Callable[[TableLoad], None] | None,
               Callable[[LoadView], None] | None]


def _copy_all(spec: MigrationSpec, migration_id: str, pieces: Sequence[Piece],
              snapshot: str | None, watch: _Watch) -> list[TableLoad]:
    """Every piece, `snapshot.copy_workers` at a time; a table split into ranges is recorded
    loaded once its last range is."""
    progress, on_table, on_progress = watch
    engine = engine_for(spec)
    left = {p.table.source: sum(1 for q in pieces if q.table.source == p.table.source)
            for p in pieces}
    earlier = {p.table.source: sum(r.rows for r in p.plan if r.done) for p in pieces}
    rows = dict(earlier)
    out: list[TableLoad] = []
    held, held_at = "", 0.0
    with ThreadPoolExecutor(max_workers=spec.snapshot.copy_workers,
                            thread_name_prefix="mw-load") as pool, \
            pg.connect_endpoint(spec.source, "source", autocommit=True,
                                application="migwatch-load-watch") as watcher:
        futures = {pool.submit(load_table, spec, migration_id, p, snapshot, progress): p
                   for p in pieces}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for f in finished:
                piece = futures[f]
                name = piece.table.source
                rows[name] += f.result()  # a failed piece fails the load (others finish first)
                left[name] -= 1
                if left[name]:
                    continue
                if piece.key_range is not None:
                    engine.finish_load(migration_id, name, rows[name])
                progress.finish(name, rows[name] - earlier[name])
                seconds = next(t.seconds for t in progress.view().tables if t.table == name)
                loaded = TableLoad(name, rows[name], seconds)
                out.append(loaded)
                if on_table is not None:
                    on_table(loaded)
            if time.monotonic() - held_at >= HOLD_EVERY:
                held, held_at = hold(watcher, migration_id, APPLICATION).describe(), \
                    time.monotonic()
            view = replace(progress.view(), held=held)
            metrics.LOAD_THROUGHPUT.labels(migration_id).set(view.rows_per_second)
            if on_progress is not None:
                on_progress(view)
    return out


def load_table(spec: MigrationSpec, migration_id: str, piece: Piece, snapshot: str | None,
               progress: LoadProgress | None = None) -> int:
    """One piece, source → target, in the exported `snapshot` (None: a snapshot of its own;
    a whole table is emptied first). Returns the rows it copied."""
    table = piece.table
    engine = engine_for(spec)
    with pg.connect_endpoint(spec.source, "source", application=APPLICATION) as src, \
            pg.translated(f"source: load {table.source}"):
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        if snapshot:  # the transaction's first statement
            src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        counter = metrics.MIGRATION_ROWS.labels(migration_id, table.source)

        def on_rows(rows: int, size: int) -> None:
            counter.inc(rows)
            if progress is not None:
                progress.add(table.source, rows, size)

        rows = engine.load_table(migration_id, table, piece.info,
                                 src, empty_first=snapshot is None and piece.key_range is None,
                                 key_range=piece.key_range, resumed=piece.resumed,
                                 on_rows=on_rows)
        src.rollback()
    return rows


def describe(result: LoadResult) -> dict[str, Any]:
    return {"rows": result.rows, "seconds": result.seconds, "resumed": result.resumed,
            "consistent_lsn": result.consistent_lsn,
            "tables": {t.table: {"rows": t.rows, "seconds": t.seconds, "earlier": t.earlier}
                       for t in result.tables}}
