"""Validating a migration: every table compared in parallel, then pending rows re-checked.

`validate` opens both sides of each table (one snapshot per side), runs the comparison and
returns a `ValidationResult`. While CDC runs, differences are *pending* with the source LSN at
which they were seen — by the differing rows' keys where the comparison located them.
`revalidate` re-checks them while the source keeps moving (`recheck.py`: source rows, the
applier past that position, target rows, source rows again): equal → resolved; different while
the source row did not change → mismatched; the source row still changing → pending again, and
left pending when the attempts run out (AWS DMS's pending revalidation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from migwatch import metrics, names, positions
from migwatch.config import (
    MigrationSpec,
    StackSettings,
    TableSpec,
    postgres_conninfo,
)
from migwatch.errors import ConfigError, MigwatchError, PermanentError, TransientError
from migwatch.positions import AppliedThrough
from migwatch.targets import engine_for
from migwatch.validation.base import Side
from migwatch.validation.compare import CompareOptions, ProgressFn, TableComparer
from migwatch.validation.kinds import column_kind
from migwatch.validation.model import (
    EQUAL,
    RANGE_MISMATCHED,
    RANGE_PENDING,
    RANGE_RESOLVED,
    SchemaCheck,
    TableResult,
    ValidationResult,
    now_iso,
)
from migwatch.validation.postgres import PostgresSide, describe, open_connection
from migwatch.validation.recheck import STILL_CHANGING, RoundOutcome, TableRecheck
from migwatch.validation.schema_check import declarations

ADHOC = "adhoc"  # metrics label when no migration id is given
APPLICATION = names.VALIDATE_APPLICATION

def result_path(state_dir: Path, migration_id: str) -> Path:
    """Where a migration's validation result is kept for the report stage (and `revalidate`):
    next to the monitor's samples, `<state dir>/runs/<migration_id>/validation.json`."""
    return state_dir / "runs" / migration_id / "validation.json"


def save_result(result: ValidationResult, settings: StackSettings | None = None) -> Path:
    """Write `result` where `result_path` says (atomically: the report may be reading)."""
    return result.save(result_path((settings or StackSettings()).state_dir, result.migration_id))


def load_result(migration_id: str, settings: StackSettings | None = None) -> ValidationResult:
    """The saved result of a migration's validate stage; PermanentError when there is none."""
    path = result_path((settings or StackSettings()).state_dir, migration_id)
    if not path.exists():
        raise PermanentError(f"no validation result for migration {migration_id} at {path}: "
                             "run the validate stage first")
    return ValidationResult.load(path)


def options_from(spec: MigrationSpec, moving_source: bool) -> CompareOptions:
    v = spec.validation
    return CompareOptions(chunk_rows=v.chunk_rows, sample_cap=v.sample_cap,
                          show_values=v.show_values, moving_source=moving_source)


# ----------------------------------------------------------------------------- opening sides
@dataclass
class OpenTable:
    """Both sides of one table, ready to compare; `close()` releases them."""

    source: PostgresSide
    target: Side
    key_kinds: list[str]
    whole_table: bool
    closers: list[Callable[[], None]]

    def close(self) -> None:
        for close in reversed(self.closers):
            with suppress(Exception):  # closing must not hide the real outcome
                close()


def open_table(spec: MigrationSpec, table: TableSpec, result: TableResult,
               on_rows: Callable[[int], None] | None = None,
               keep_limit: int = 200_000) -> OpenTable:
    """Connect both sides of `table`, introspect them, and fill the result's shape fields."""
    closers: list[Callable[[], None]] = []
    try:
        limit = spec.validation.statement_timeout_seconds
        sconn = open_connection(postgres_conninfo(spec.source, "source", APPLICATION), "source",
                                limit)
        closers.append(sconn.close)
        sinfo = describe(sconn, table.source, "source")
        pk = list(sinfo.primary_key)
        kinds = {c.name: column_kind(c.type) for c in sinfo.columns}
        result.primary_key = pk
        whole = not pk
        if whole:
            result.warnings.append("no primary key: compared as one whole-table hash; "
                                   "differences cannot be located to rows")
        source, target = engine_for(spec).open_validation(
            table, sconn, sinfo, result, closers, on_rows, keep_limit)
        return OpenTable(source, target, [kinds[k] for k in pk], whole, closers)
    except BaseException:
        for close in reversed(closers):
            close()
        raise


# ----------------------------------------------------------------------------- validate
def new_table_result(spec: MigrationSpec, table: TableSpec) -> TableResult:
    return TableResult(table=table.source,
                       target=engine_for(spec).table_name(table))


def error_result(spec: MigrationSpec, table: TableSpec, exc: BaseException) -> TableResult:
    """A table that could not be compared at all (e.g. its task gave up after retries)."""
    result = new_table_result(spec, table)
    result.error = f"{type(exc).__name__}: {exc}"
    result.settle_status()
    return result


def validate_table(spec: MigrationSpec, table: TableSpec, options: CompareOptions,
                   migration_id: str = ADHOC, progress: ProgressFn | None = None,
                   raise_transient: bool = False) -> TableResult:
    """Compare one table; a failure to compare is recorded as status `error`, not raised —
    except a TransientError when `raise_transient` (a task that retries wants it)."""
    result = new_table_result(spec, table)
    ranges = metrics.VALIDATION_RANGES.labels(migration_id, table.source)
    seen = [0]

    def on_rows(n: int) -> None:  # MongoDB pass: progress by documents read
        seen[0] += n
        if progress is not None:
            progress(table.source, seen[0], max(seen[0], result.source_rows or seen[0]))

    started = time.perf_counter()
    opened: OpenTable | None = None
    try:
        opened = open_table(spec, table, result, on_rows=on_rows,
                            keep_limit=options.locate_limit)
        result.timings["open"] = round(time.perf_counter() - started, 4)
        if opened.whole_table:
            _compare_whole(opened, result, options)
        else:
            comparer = TableComparer(opened.source, opened.target, result, options,
                                     opened.key_kinds, progress=progress, on_ranges=ranges.inc)
            try:
                comparer.run()
            finally:
                comparer.close()
        if opened.target.unreadable:
            _unmapped_documents(opened, result)
    except MigwatchError as exc:
        if raise_transient and isinstance(exc, TransientError):
            raise
        result.error = f"{type(exc).__name__}: {exc}"
        result.settle_status()
    finally:
        if opened is not None:
            opened.close()
    result.seconds = round(time.perf_counter() - started, 3)
    metrics.VALIDATION_ROWS.labels(migration_id, table.source).inc(result.rows_compared)
    _set_mismatch_gauges(migration_id, result)
    return result


def _unmapped_documents(opened: OpenTable, result: TableResult) -> None:
    """Documents whose `_id` stands for no source key: extra, in a check of their own that
    revalidation never re-checks (it cannot read them by key) — they stay extra, and the table
    different, until a new validation reads the collection again."""
    from migwatch.validation.model import RangeCheck

    found = opened.target.unreadable
    lsn, lsn_num = opened.source.current_lsn()
    result.ranges.append(RangeCheck(
        lo=None, hi=None, lsn=lsn, lsn_num=lsn_num, state=RANGE_MISMATCHED, extra=len(found),
        checked_at=now_iso(), row_keys=[],
        note=f"{len(found)} document(s) whose _id stands for no source key, e.g. {found[0]}"))
    result.extra += len(found)
    result.settle_status()


def _compare_whole(opened: OpenTable, result: TableResult, options: CompareOptions) -> None:
    src = opened.source.whole_table()
    tgt = opened.target.whole_table()  # type: ignore[attr-defined]
    result.source_rows, result.target_rows = src[0], tgt[0]
    result.rows_compared = src[0]
    result.ranges_checked = 1
    if src != tgt:
        from migwatch.validation.model import RangeCheck

        lsn, lsn_num = opened.source.current_lsn()
        result.ranges.append(RangeCheck(
            lo=None, hi=None, lsn=lsn, lsn_num=lsn_num,
            state=RANGE_PENDING if options.moving_source else RANGE_MISMATCHED,
            missing=max(0, src[0] - tgt[0]), extra=max(0, tgt[0] - src[0]),
            changed=0 if src[0] != tgt[0] else 1, source_digest=list(src), checked_at=now_iso()))
        result.missing, result.extra, result.changed = (result.ranges[0].missing,
                                                        result.ranges[0].extra,
                                                        result.ranges[0].changed)
    result.settle_status()


def _set_mismatch_gauges(migration_id: str, result: TableResult) -> None:
    by_state = {RANGE_PENDING: 0, RANGE_MISMATCHED: 0, RANGE_RESOLVED: 0}
    for r in result.ranges:
        by_state[r.state] = by_state.get(r.state, 0) + r.rows
    for state, n in by_state.items():
        metrics.VALIDATION_MISMATCHES.labels(migration_id, result.table, state).set(n)


def chosen_tables(spec: MigrationSpec, tables: Sequence[str] | None = None) -> list[TableSpec]:
    """The spec's tables, or those named (as `schema.table` or bare name); unknown names are a
    ConfigError."""
    if not tables:
        return list(spec.tables)
    known = {t.source for t in spec.tables} | {t.name for t in spec.tables}
    unknown = [n for n in tables if n not in known]
    if unknown:
        raise ConfigError(f"not among the spec's tables: {unknown}", field="tables")
    return [t for t in spec.tables if t.source in tables or t.name in tables]


def begin(spec: MigrationSpec, migration_id: str) -> ValidationResult:
    """An empty result for a run, with the notes that hold for every table."""
    result = ValidationResult(migration_id=migration_id, source=spec.source.redacted(),
                              target=spec.target.redacted(), started_at=now_iso())
    note = engine_for(spec).validation_note
    if note:
        result.notes.append(note)
    return result


def validate(spec: MigrationSpec, migration_id: str | None = None, *,
             tables: Sequence[str] | None = None, moving_source: bool | None = None,
             progress: ProgressFn | None = None,
             on_table: Callable[[TableResult], None] | None = None) -> ValidationResult:
    """Compare every table of the spec (`spec.validation.workers` at a time).

    Differences are pending (re-checkable) when a migration id is given — CDC is running —
    and final otherwise, unless `moving_source` says which.
    """
    mid = migration_id or ADHOC
    moving = bool(migration_id) if moving_source is None else moving_source
    options = options_from(spec, moving)
    chosen = chosen_tables(spec, tables)
    result = begin(spec, mid)
    with metrics.observe_stage(mid, "validate"), ThreadPoolExecutor(
            max_workers=spec.validation.workers, thread_name_prefix="mw-validate") as pool:
        futures = [pool.submit(validate_table, spec, t, options, mid, progress) for t in chosen]
        for f in futures:
            table_result = f.result()
            result.tables.append(table_result)
            if on_table is not None:
                on_table(table_result)
    if tables is None:
        result.schema = check_schema(spec, result)
    result.finished_at = now_iso()
    return result


# ----------------------------------------------------------------------------- schema check
def declared_differences(spec: MigrationSpec) -> dict[str, list[str]]:
    """Per versioned migration applied on the target, the schema differences it declares
    (`-- migwatch: schema-difference <object>` lines, `schema_check.declarations`)."""
    if spec.migrations is None:
        return {}
    from migwatch.migrations import State, run_status

    folder = Path(spec.migrations.folder)
    out: dict[str, list[str]] = {}
    for row in run_status(spec).rows:
        path = folder / row.script
        if row.state in (State.APPLIED, State.CHANGED) and path.is_file():
            declared = declarations(path.read_text(errors="replace"))
            if declared:
                out[row.script] = declared
    return out


def check_schema(spec: MigrationSpec, result: ValidationResult) -> SchemaCheck:
    """The schema check of `result`'s tables. Foreign keys the load left NOT VALID are
    validated first when every table is proven equal (the data then satisfies them, since the
    source's does); one that fails is named. A check that cannot run is an error result."""
    engine = engine_for(spec)
    validated: list[str] = []
    failed: list[str] = []
    try:
        if result.tables and all(t.status == EQUAL for t in result.tables):
            validated, failed = engine.validate_foreign_keys()
        check = engine.check_schema(declared_differences(spec))
    except MigwatchError as exc:
        check = SchemaCheck(error=str(exc))
        check.settle()
    check.warnings += [f"foreign key {f} could not be validated" for f in failed]
    if validated:
        check.warnings.append(f"validated {len(validated)} foreign key(s) left NOT VALID for "
                              f"the load: {', '.join(validated)}")
    return check


# ----------------------------------------------------------------------------- revalidate
def applied_lsn(spec: MigrationSpec, migration_id: str) -> int | None:
    """The applier's newest applied source LSN (numeric), from the target; None if none yet."""
    every = positions.read(spec, migration_id, [names.ALL_TABLES],
                           application=APPLICATION).get(names.ALL_TABLES)
    return every.lsn if every is not None else None


def revalidate(spec: MigrationSpec, migration_id: str, result: ValidationResult, *,
               max_attempts: int = 3, timeout_seconds: float = 0.0,
               apply_wait_seconds: float = 30.0) -> ValidationResult:
    """Re-check every pending difference while the source keeps moving, and re-count rows.

    Each round re-checks the pending keys (and ranges) of every table (`recheck.py`): resolved,
    mismatched (a real difference) or still changing on the source. Rows still changing are
    re-checked in further rounds — at most `max_attempts` rounds, while `timeout_seconds` lasts
    (0: one round) — and left pending, never mismatched, when they run out. Each re-check waits
    for the applier to pass the source position it read, up to the time left or
    `apply_wait_seconds`, whichever is longer (not at all when no applier ever recorded a
    position). The first round re-counts every table's rows at a source LSN it records.
    Updates and returns `result`."""
    deadline = time.monotonic() + timeout_seconds
    options = options_from(spec, moving_source=True)
    specs = {t.source: t for t in spec.tables}
    tables = [t for t in result.tables if t.table in specs and t.error is None]
    rounds = max(1, max_attempts) if timeout_seconds > 0 else 1
    outcomes: dict[str, RoundOutcome] = {}
    done = 0
    with metrics.observe_stage(migration_id, "revalidate"), \
            ThreadPoolExecutor(max_workers=spec.validation.workers) as pool:
        todo = tables  # the first round re-counts every table; then those still pending
        while todo and done < rounds:
            left = max(0.0, deadline - time.monotonic())
            futures = [(t, pool.submit(_recheck_table, spec, specs[t.table], t, options,
                                       migration_id, max(left, apply_wait_seconds), left))
                       for t in todo]
            for t, f in futures:
                outcomes[t.table] = f.result()
            done += 1
            todo = [t for t in tables if t.pending_ranges()]
            if time.monotonic() >= deadline:
                break
    _note_outcomes(result, tables, outcomes, done)
    if result.schema is not None:  # again: foreign keys may be validated now, a cause fixed
        result.schema = check_schema(spec, result)
    result.finished_at = now_iso()
    return result


def _note_outcomes(result: ValidationResult, tables: list[TableResult],
                   outcomes: dict[str, RoundOutcome], rounds: int) -> None:
    """Say in the result what revalidation could not settle, and when the counts were taken."""
    notes: list[str] = []
    if any(o.position_unknown for o in outcomes.values()):
        notes.append("applier position unknown: pending rows could not be re-checked")
    for t in tables:
        pending = t.pending_ranges()
        changing = [c for c in pending if c.note.startswith(STILL_CHANGING)]
        if changing:
            rows = sum(c.rows for c in changing)
            notes.append(f"{t.table}: {rows} row(s) {STILL_CHANGING} after {rounds} re-check "
                         "round(s): left pending, not mismatched — re-check when the source "
                         "is quieter")
            for c in changing:
                c.note = f"{c.note}; left pending after {rounds} round(s)"
        why = outcomes.get(t.table)
        if pending and why is not None and why.not_rechecked and not why.position_unknown:
            notes.append(f"{t.table}: not re-checked: {why.not_rechecked}")
    if any(t.counts_lsn for t in tables):
        notes.append("row counts re-taken by revalidation: a table's source count at the source "
                     "LSN in its counts_lsn, its target count once the applier had passed it")
    stale = ("applier position unknown", "row counts re-taken")
    result.notes = [n for n in result.notes
                    if not n.startswith(stale) and f"{STILL_CHANGING} after" not in n
                    and ": not re-checked: " not in n] + notes


def _recheck_table(spec: MigrationSpec, table: TableSpec, result: TableResult,
                   options: CompareOptions, migration_id: str, wait_seconds: float,
                   unknown_seconds: float) -> RoundOutcome:
    """One round on one table: its pending checks re-checked, its rows re-counted."""
    scratch = TableResult(table=result.table, target=result.target)
    try:
        opened = open_table(spec, table, scratch, keep_limit=options.locate_limit)
    except MigwatchError as exc:
        _warn(result, f"revalidation could not open the table: {exc}")
        return RoundOutcome(not_rechecked=str(exc))
    due = result.pending_ranges()
    try:
        with AppliedThrough(spec, migration_id, application=APPLICATION) as applied:
            recheck = TableRecheck(opened.source, opened.target, result, options,
                                   opened.key_kinds, opened.whole_table, applied)
            try:
                outcome = recheck.run(due, wait_seconds, unknown_seconds)
            finally:
                recheck.close()
        result.ranges_checked += outcome.rechecked
        metrics.VALIDATION_RANGES.labels(migration_id, result.table).inc(outcome.rechecked)
    except MigwatchError as exc:
        _warn(result, f"revalidation failed: {exc}")
        outcome = RoundOutcome(not_rechecked=str(exc))
    finally:
        opened.close()
    result.recount(options.sample_cap)
    _set_mismatch_gauges(migration_id, result)
    return outcome


def _warn(result: TableResult, warning: str) -> None:
    if warning not in result.warnings:
        result.warnings.append(warning)
