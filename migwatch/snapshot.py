"""Following the initial snapshot: rows applied per table against the source's row estimate,
rows per second and an ETA, until every table's snapshot is done.

    source_estimates(spec)          rows per table on the source: `pg_class.reltuples`, or an
                                    exact count(*) when the table was never analysed / is empty
    applied_snapshot(spec, id)      snapshot rows applied and "done" flags from the applier's
                                    position rows on the target (one read per poll)
    SnapshotTracker                 pure: turns successive readings into rates, ETAs, per-table
                                    seconds — unit-tested without servers
    follow(spec, id, on_poll=...)   polls until done (or `spec.snapshot.timeout_seconds`)

When is a table done? The applier records `snapshot_done` for a table when it applies the record
Debezium marks `last_in_data_collection`, and for `*` when it applies the one marked `last` (the
whole snapshot) — also when that record is dead-lettered. A table is done when it has its own
mark. Some tables never get one — an empty table produces no record at all, and a one-row table
that opens the snapshot is marked `first` instead — so a table is also done once `*` is done
AND its topic has been consumed to its end offset (read after `*` was seen done). `*` alone is
not enough: it travels in the heartbeat table's own topic, and the applier reads the topics side
by side, so `*` can land while other topics still hold snapshot rows (seen on the stack: `*`
done with 118k of 200k rows applied).

Checked on the stack: Debezium snapshots in `table.include.list` order, where
`connector_config.include_list` puts the heartbeat table last, so `last` normally lands on the
heartbeat row `capture.prepare_source` seeds; with the heartbeat table listed first and an
empty table last, Debezium still moves the `last` mark back onto the final record it emits. `*`
therefore always comes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import sql

from migwatch import metrics, names, positions
from migwatch.config import MigrationSpec
from migwatch.connectors import postgres as pg
from migwatch.consumer_lag import group_lag
from migwatch.errors import MigwatchError, PermanentError, TransientError
from migwatch.processes import applier_members

log = logging.getLogger("migwatch.snapshot")

#: tables up to this size on disk are counted exactly when they have no estimate
EXACT_COUNT_MAX_BYTES = 64 << 20
#: readings of the target that may fail in a row before following gives up
MAX_READ_FAILURES = 5
#: how long the applier's group may stay empty before following gives up on the snapshot
APPLIER_GRACE_SECONDS = 60.0


# ------------------------------------------------------------------------------ pure figures
@dataclass(frozen=True)
class Applied:
    """What the applier recorded for one table: snapshot rows applied, and whether it is done."""

    rows: int = 0
    done: bool = False
    #: when the applier last wrote this row (epoch seconds, the target's clock)
    updated_at: float | None = None


@dataclass(frozen=True)
class TableProgress:
    """One table's snapshot at one moment.

    `seconds` is how long its load took (see `SnapshotTracker`): 0 for a table the snapshot
    found empty, None when an earlier run loaded it. `rows_per_second` is the current pace
    while it loads.
    """

    table: str
    estimate: int
    rows: int
    done: bool
    ratio: float
    rows_per_second: float | None
    eta_seconds: float | None
    seconds: float | None


@dataclass(frozen=True)
class SnapshotProgress:
    """Every table's snapshot at one moment, with the totals."""

    migration_id: str
    tables: tuple[TableProgress, ...]
    elapsed_seconds: float
    rows_per_second: float | None
    eta_seconds: float | None
    #: every table was already done at the first reading (a resumed run)
    already_done: bool = False

    @property
    def done(self) -> bool:
        return all(t.done for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def estimate(self) -> int:
        return sum(t.estimate for t in self.tables)

    @property
    def tables_done(self) -> int:
        return sum(1 for t in self.tables if t.done)

    @property
    def ratio(self) -> float:
        """Overall progress in [0, 1], weighted by rows; 1.0 only when every table is done."""
        if self.done:
            return 1.0
        return progress_ratio(self.rows, self.estimate, False)

    def describe(self) -> str:
        """One line for logs and the progress artifact."""
        text = (f"{self.tables_done} of {len(self.tables)} table(s) done; "
                f"{self.rows:,} of ~{self.estimate:,} rows")
        if self.rows_per_second is not None:
            text += f"; {self.rows_per_second:,.0f} rows/s"
        if self.already_done:
            return text + "; already complete"
        if self.done:
            return text + f"; complete after {self.elapsed_seconds:.1f}s"
        if self.eta_seconds is not None:
            text += f"; ETA {format_seconds(self.eta_seconds)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration_id": self.migration_id, "done": self.done,
            "already_done": self.already_done, "rows": self.rows, "estimate": self.estimate,
            "ratio": self.ratio, "elapsed_seconds": round(self.elapsed_seconds, 3),
            "rows_per_second": self.rows_per_second, "eta_seconds": self.eta_seconds,
            "tables": {t.table: asdict(t) for t in self.tables},
        }


def progress_ratio(rows: int, estimate: int, done: bool) -> float:
    """Rows over the estimate in [0, 1]. Below 1 until done: an estimate is only an estimate,
    and only the snapshot's own end mark says a table is complete."""
    if done:
        return 1.0
    if estimate <= 0:
        return 0.0
    return min(rows / estimate, 0.99)


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds to load `remaining` rows at `rate` rows/s; None while the rate is unknown or 0."""
    if remaining <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return remaining / rate


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class RateWindow:
    """Rows per second over the last `window` seconds of (time, cumulative rows) readings."""

    def __init__(self, window: float = 30.0) -> None:
        self.window = window
        self.points: deque[tuple[float, int]] = deque()

    def add(self, at: float, rows: int) -> None:
        self.points.append((at, rows))
        # keep one reading at or before the window's start, so the window is always spanned
        while len(self.points) > 2 and self.points[1][0] <= at - self.window:
            self.points.popleft()

    def rate(self) -> float | None:
        if len(self.points) < 2:
            return None
        (t0, r0), (t1, r1) = self.points[0], self.points[-1]
        if t1 <= t0:
            return None
        return max(0.0, (r1 - r0) / (t1 - t0))


@dataclass
class _TableState:
    rate: RateWindow
    #: times it was seen not loading yet (`since` first): its load began after one of them
    empty_at: list[float]
    done_at: float | None = None
    seconds: float | None = None


def load_seconds(started_at: float | None, done_at: float, rows: int) -> float | None:
    """How long loading a table took; None when it is unknown or an earlier run did it."""
    if rows == 0:
        return 0.0  # the snapshot found it empty: nothing was loaded
    if started_at is None or done_at < started_at:
        return None
    return round(done_at - started_at, 3)


@dataclass
class SnapshotTracker:
    """Turns successive readings of the applied positions into progress (no I/O, no clock).

    Times are epoch seconds. `since` is when this run began loading (before it created the
    connector or started the applier); None when it found both already there. A table's load
    starts after the last reading that saw it without rows, and not before `since`; it ends at
    the commit of the batch that completed it — its position row's `updated_at`, as long as no
    later change moved that row, and never after the reading that saw it done. A reading can see
    a table empty while the batch that loads it is still uncommitted: only readings before that
    batch's `updated_at` bound the start. A table completed
    before `since` (or, without `since`, before any reading saw it loading) has no seconds: an
    earlier run loaded it.
    """

    migration_id: str
    estimates: Mapping[str, int]
    since: float | None = None
    window: float = 30.0
    _start: float | None = None
    _total: RateWindow = field(init=False)
    _tables: dict[str, _TableState] = field(default_factory=dict)
    _first: bool = True
    _already_done: bool = False

    def __post_init__(self) -> None:
        self._total = RateWindow(self.window)

    def observe(self, at: float, applied: Mapping[str, Applied],
                consumed: Collection[str] = ()) -> SnapshotProgress:
        """Progress at time `at` from the position rows (`names.ALL_TABLES` marks the end);
        `consumed`: tables whose topic the applier had read to its end after that end mark."""
        if self._start is None:
            self._start = at if self.since is None else min(self.since, at)
        all_done = applied.get(names.ALL_TABLES, Applied()).done
        out = []
        for table, estimate in self.estimates.items():
            got = applied.get(table, Applied())
            done = got.done or (all_done and table in consumed)
            state = self._tables.get(table)
            if state is None:
                state = self._tables[table] = _TableState(
                    RateWindow(self.window), [] if self.since is None else [self.since])
            if not done and got.rows == 0:
                state.empty_at.append(at)  # not loading yet, or its first batch uncommitted
            if done and state.done_at is None:
                stamp = got.updated_at if got.done else None
                state.done_at = at if stamp is None else min(at, stamp)
                before = [t for t in state.empty_at if t <= state.done_at]
                state.seconds = load_seconds(max(before, default=None), state.done_at, got.rows)
            state.rate.add(at, got.rows)
            rate = None if done else state.rate.rate()
            out.append(TableProgress(
                table=table, estimate=estimate, rows=got.rows, done=done,
                ratio=progress_ratio(got.rows, estimate, done), rows_per_second=rate,
                eta_seconds=0.0 if done else eta_seconds(estimate - got.rows, rate),
                seconds=state.seconds))
        done = bool(out) and all(t.done for t in out)
        if self._first:
            # done at the first reading, and nothing of it loaded since this run began
            self._already_done = done and (self.since is None or (
                any(t.rows for t in out) and all(t.seconds is None for t in out if t.rows)))
            self._first = False
        total_rows = sum(t.rows for t in out)
        self._total.add(at, total_rows)
        end = at
        if done:
            end = max((s.done_at for s in self._tables.values() if s.done_at is not None),
                      default=at)
        elapsed = max(0.0, end - self._start)
        if done:  # the average over the whole load
            rate = total_rows / elapsed if elapsed > 0 and not self._already_done else None
        else:  # the pace of the last `window` seconds
            rate = self._total.rate()
        remaining = sum(max(t.estimate - t.rows, 0) for t in out if not t.done)
        return SnapshotProgress(
            migration_id=self.migration_id, tables=tuple(out), elapsed_seconds=elapsed,
            rows_per_second=None if rate is None else round(rate, 1),
            eta_seconds=0.0 if done else eta_seconds(remaining, rate),
            already_done=self._already_done)


# ------------------------------------------------------------------------------ reading
def source_estimates(spec: MigrationSpec) -> dict[str, int]:
    """Rows per spec table on the source, from the planner's statistics (`reltuples`).

    A table never analysed (or analysed while empty) has no estimate: up to
    `EXACT_COUNT_MAX_BYTES` it is counted exactly, above that a 1 % page sample is scaled up.
    """
    out: dict[str, int] = {}
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application="migwatch-snapshot") as conn, \
            pg.translated("source: row estimates"):
        for t in spec.tables:
            ident = sql.Identifier(t.schema_name, t.name)
            row = conn.execute("SELECT c.reltuples, pg_relation_size(c.oid) FROM pg_class c "
                               "WHERE c.oid = to_regclass(%s)",
                               [ident.as_string(conn)]).fetchone()
            if row is None:
                raise PermanentError(f"table {t.source}: does not exist on the source")
            reltuples, size = float(row[0]), int(row[1])
            if reltuples > 0:
                out[t.source] = int(reltuples)
            elif size <= EXACT_COUNT_MAX_BYTES:
                counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
                out[t.source] = int(counted[0]) if counted else 0
            else:
                sampled = conn.execute(sql.SQL(
                    "SELECT count(*) * 100 FROM {} TABLESAMPLE SYSTEM (1)").format(ident)
                ).fetchone()
                out[t.source] = int(sampled[0]) if sampled else 0
    return out


def applied_snapshot(spec: MigrationSpec, migration_id: str) -> dict[str, Applied]:
    """Snapshot rows and done flags per table (and `*`) from the target; {} before any."""
    return {name: Applied(p.snapshot_rows, p.snapshot_done, p.updated_at)
            for name, p in positions.read(spec, migration_id,
                                          application="migwatch-snapshot").items()}


def consumed_tables(spec: MigrationSpec, migration_id: str, tables: Iterable[str]) -> set[str]:
    """The tables whose topic the applier's group has consumed to its end offset (a topic
    Debezium never created — an empty table's — counts as consumed)."""
    topics = {names.table_topic(migration_id, t): t for t in tables}
    if not topics:
        return set()
    lag = group_lag(spec.kafka.bootstrap_servers, names.consumer_group(migration_id), topics)
    busy = {p.topic for p in lag.partitions if p.lag > 0}
    return {t for topic, t in topics.items() if topic not in busy}


def read_progress(spec: MigrationSpec, migration_id: str, tables: Iterable[str],
                  incremental: Collection[str] = ()) -> tuple[dict[str, Applied], set[str]]:
    """One reading: the position rows, and — once the whole snapshot is marked done — which of
    `tables` without a mark of their own have nothing left in their topic. The end offsets are
    read after the end mark was seen, so every snapshot record is already in them. Tables
    loaded by an incremental snapshot (`incremental`) are done by their own mark only: the
    initial snapshot's end says nothing of them."""
    applied = applied_snapshot(spec, migration_id)
    consumed: set[str] = set()
    if applied.get(names.ALL_TABLES, Applied()).done:
        unmarked = [t for t in tables if not applied.get(t, Applied()).done
                    and t not in incremental]
        consumed = consumed_tables(spec, migration_id, unmarked)
    return applied, consumed


# ------------------------------------------------------------------------------ following
def export(progress: SnapshotProgress) -> None:
    """`migwatch_snapshot_progress_ratio` per table."""
    for t in progress.tables:
        metrics.SNAPSHOT_PROGRESS.labels(progress.migration_id, t.table).set(t.ratio)


def follow(spec: MigrationSpec, migration_id: str, since: float | None = None,
           on_poll: Callable[[SnapshotProgress], None] | None = None,
           timeout: float | None = None, interval: float | None = None,
           applier_grace: float = APPLIER_GRACE_SECONDS,
           incremental: Collection[str] = ()) -> SnapshotProgress:
    """Poll the applied positions until every table's snapshot is done; returns the last
    progress. Returns at once when it was already done (a resumed run). `incremental`:
    tables added to a running migration (`read_progress`).

    `since` (epoch seconds) is when this run began loading — see `SnapshotTracker`. A failed
    reading is skipped (up to `MAX_READ_FAILURES` in a row). It raises TransientError, naming
    each table's state, when the snapshot is not done within `timeout` (default
    `spec.snapshot.timeout_seconds`), or sooner when the applier's consumer group has had no
    member for `applier_grace` seconds — nothing would move it any more.
    """
    timeout = spec.snapshot.timeout_seconds if timeout is None else timeout
    interval = spec.snapshot.poll_interval_seconds if interval is None else interval
    tracker = SnapshotTracker(migration_id, source_estimates(spec), since=since)
    started = time.monotonic()
    deadline = started + timeout
    watch = _ApplierWatch(spec, migration_id, applier_grace, started)
    failures = 0
    while True:
        try:
            applied, consumed = read_progress(spec, migration_id, tracker.estimates,
                                              incremental)
            failures = 0
        except TransientError as exc:
            failures += 1
            if failures >= MAX_READ_FAILURES:
                raise
            log.warning("snapshot progress unreadable (%d in a row): %s", failures, exc)
            time.sleep(interval)
            continue
        progress = tracker.observe(time.time(), applied, consumed)
        export(progress)
        if on_poll is not None:
            on_poll(progress)
        if progress.done:
            return progress
        now = time.monotonic()
        if now >= deadline:
            raise TransientError(_timeout_message(spec, migration_id, progress,
                                                  f"not complete after {timeout:.0f}s"))
        if watch.gone(now):
            raise TransientError(_timeout_message(
                spec, migration_id, progress,
                f"stalled: no applier consumed for {applier_grace:.0f}s"))
        time.sleep(interval)


class _ApplierWatch:
    """Whether the applier's group has been without members for longer than `grace` seconds
    (checked every few seconds; a check that fails says nothing either way)."""

    def __init__(self, spec: MigrationSpec, migration_id: str, grace: float,
                 now: float) -> None:
        self.spec = spec
        self.migration_id = migration_id
        self.grace = grace
        self.seen = now
        self.checked = 0.0

    def gone(self, now: float) -> bool:
        if now - self.checked >= min(5.0, self.grace / 2):
            self.checked = now
            try:
                if applier_members(self.spec, self.migration_id) > 0:
                    self.seen = now
            except MigwatchError:
                self.seen = now  # cannot tell: do not give up on it
        return now - self.seen > self.grace


def _timeout_message(spec: MigrationSpec, migration_id: str, progress: SnapshotProgress,
                     why: str) -> str:
    waiting = ", ".join(f"{t.table} {t.rows:,}/~{t.estimate:,}"
                        for t in progress.tables if not t.done)
    try:
        members = applier_members(spec, migration_id)
        applier = f"the applier group has {members} member(s)"
    except MigwatchError as exc:
        applier = f"applier state unknown ({type(exc).__name__})"
    return (f"snapshot of {migration_id} {why} ({progress.describe()}); waiting for "
            f"{waiting}; {applier}")
