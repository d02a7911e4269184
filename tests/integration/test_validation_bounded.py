"""Validation ends in bounded time whatever the differences (PostgreSQL → PostgreSQL, real stack).

Key ranges are cut at keys one side holds; rows whose keys the other side has no neighbours for
(leftovers of an earlier load beyond the source's largest key, or below its smallest) once made
the bisection cut the same range again and again, for ever. Each test runs the comparison in a
thread with a deadline: a comparison that does not end fails the test instead of hanging it (the
databases' teardown then ends its connections, and with them the thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from migwatch.config import MigrationSpec
from migwatch.stack import Stack
from migwatch.validation import DIFFERENT, EQUAL, CompareOptions, TableResult, validate_table
from migwatch.validation.compare import ProgressFn
from tests.conftest import PgDatabase, make_spec

ROWS = 100_000
DEADLINE = 60.0  # seconds; the fixed comparison takes a few

DDL = ("CREATE TABLE public.items (id bigint PRIMARY KEY, grp int NOT NULL, label text, "
       "amount numeric(12,2), at timestamptz NOT NULL)")
#: `id` = 10 * g: room between keys for interleaved extras
FILL = ("INSERT INTO public.items SELECT 10 * g, g %% 97, 'item ' || g, round(g * 1.25, 2), "
        "timestamptz '2024-01-01 00:00:00+00' + g * interval '7 seconds' "
        "FROM generate_series(%s::bigint, %s::bigint) g")
#: rows only the target holds, copied from a source-shaped row and given the key `k`
EXTRA = ("INSERT INTO public.items SELECT k, k %% 97, 'extra ' || k, 1.00, "
         "timestamptz '2024-01-01 00:00:00+00' FROM unnest(%s::bigint[]) k")


def run_sql(db: PgDatabase, statement: str, params: Any = None) -> None:
    with db.connect() as conn:
        conn.execute(statement, params)


@pytest.fixture
def items(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> Iterator[None]:
    """`ROWS` equal rows on both sides, keys 10..10*ROWS, analyzed."""
    for db in (source_db, target_db):
        run_sql(db, DDL)
        run_sql(db, FILL, [1, ROWS])
        run_sql(db, "VACUUM (ANALYZE) public.items")
    yield


def within(seconds: float, fn: Callable[[], TableResult]) -> tuple[TableResult, float]:
    """`fn()` and its wall time; fails the test when it runs past `seconds` (the thread is a
    daemon: the database teardown ends its connections)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # handed to the test below
            out["error"] = exc

    started = time.perf_counter()
    thread = threading.Thread(target=target, daemon=True, name="validate-under-test")
    thread.start()
    thread.join(seconds)
    took = time.perf_counter() - started
    if thread.is_alive():
        pytest.fail(f"validation did not finish within {seconds:.0f} s")
    if "error" in out:
        raise out["error"]
    return out["result"], took


def compare(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
            progress: ProgressFn | None = None, target: str = "public.items",
            **options: Any) -> TableResult:
    spec: MigrationSpec = make_spec(source_db, target_db,
                                    [{"source": "public.items", "target": target}], stack)
    opts = CompareOptions(chunk_rows=spec.validation.chunk_rows, moving_source=False)
    for k, v in options.items():
        setattr(opts, k, v)
    return validate_table(spec, spec.tables[0], opts, progress=progress)


@pytest.mark.parametrize("where", ["above-max", "below-min", "interleaved", "both-ends"])
def test_extra_rows_outside_or_between_the_source_keys_end_in_bounded_time(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, items: None,
        where: str) -> None:
    top = 10 * ROWS
    extras = {
        "above-max": [top + 1 + i for i in range(5000)],
        "below-min": [-i for i in range(5000)],  # 0, -1, ..., -4999: all below the min key 10
        "interleaved": [10 * g + 3 for g in range(1, ROWS, 40)],  # sparse, between source keys
        "both-ends": [-i for i in range(2500)] + [top + 10 * i for i in range(1, 2501)],
    }[where]
    run_sql(target_db, EXTRA, [extras])
    run_sql(target_db, "ANALYZE public.items")

    r, took = within(DEADLINE, lambda: compare(stack, source_db, target_db))
    print(f"\n{where}: {len(extras)} extra rows, validated in {took:.2f} s "
          f"({r.ranges_checked} ranges)")
    assert r.error is None, r.error
    assert r.status == DIFFERENT
    assert (r.missing, r.extra, r.changed) == (0, len(extras), 0)
    assert r.source_rows == ROWS and r.target_rows == ROWS + len(extras)
    assert {d.kind for d in r.sample} == {"extra"}
    assert all(d.key["id"] in set(extras) for d in r.sample)
    assert took < DEADLINE


def test_missing_rows_beyond_the_target_keys_end_in_bounded_time(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, items: None) -> None:
    """The mirror case: the source holds keys past both ends of the target's."""
    run_sql(source_db, EXTRA, [[10 * ROWS + 1 + i for i in range(3000)]
                               + [-i for i in range(3000)]])
    run_sql(source_db, "ANALYZE public.items")
    r, took = within(DEADLINE, lambda: compare(stack, source_db, target_db))
    print(f"\nmissing at both ends: validated in {took:.2f} s")
    assert (r.missing, r.extra, r.changed) == (6000, 0, 0)
    assert took < DEADLINE


def test_equal_tables_stay_equal(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                                 items: None) -> None:
    r, took = within(DEADLINE, lambda: compare(stack, source_db, target_db))
    assert r.status == EQUAL and r.source_rows == r.target_rows == ROWS
    r, took = within(DEADLINE, lambda: compare(stack, source_db, target_db, whole_first_rows=0))
    assert r.status == EQUAL and r.ranges_checked >= ROWS // 10_000


def test_dense_differences_cost_a_small_multiple_of_reading_both_tables(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, items: None) -> None:
    """≥ 10 % of the rows differ, scattered: every range differs, so bisection cannot narrow
    anything down; the comparison must still count exactly, within a few equal-table times.

    The target holds an equal copy (`items`) and a differing one (`items_dense`); runs of the
    two alternate, and the least time of each counts: the machine is shared."""
    run_sql(target_db, "CREATE TABLE public.items_dense (LIKE public.items INCLUDING ALL)")
    run_sql(target_db, "INSERT INTO public.items_dense SELECT * FROM public.items")
    # 5 % changed, 3 % missing, 3 % extra (between source keys), spread over the whole table
    run_sql(target_db, "UPDATE public.items_dense SET label = label || '!' WHERE id % 400 = 70")
    run_sql(target_db, "UPDATE public.items_dense SET amount = amount + 0.01 "
                       "WHERE id % 400 = 130")
    run_sql(target_db, "DELETE FROM public.items_dense WHERE id % 1000 IN (20, 350, 690)")
    extras = [10 * g + 5 for g in range(1, ROWS + 1) if g % 100 in (7, 37, 77)]
    run_sql(target_db, EXTRA.replace("public.items", "public.items_dense"), [extras])
    run_sql(target_db, "VACUUM (ANALYZE) public.items_dense")
    changed, missing = ROWS // 20, 3 * ROWS // 100
    dense_table = "public.items_dense"
    equal_times, took = [], []
    for _ in range(5):
        e, secs = within(DEADLINE, lambda: compare(stack, source_db, target_db))
        assert e.status == EQUAL
        equal_times.append(secs)
        r, secs = within(DEADLINE, lambda: compare(stack, source_db, target_db,
                                                   target=dense_table))
        took.append(secs)
    equal, dense = min(equal_times), min(took)
    print(f"\nequal: {equal:.2f} s (runs {[round(t, 2) for t in equal_times]}); "
          f"{r.mismatched_rows} differing rows: {dense:.2f} s (runs {[round(t, 2) for t in took]})"
          f" = {dense / equal:.1f}x; phases {r.timings}; {r.ranges_checked} ranges")
    assert r.error is None, r.error
    assert (r.missing, r.extra, r.changed) == (missing, len(extras), changed)
    assert r.mismatched_rows >= ROWS // 10
    assert not r.warnings, r.warnings
    assert dense <= 6 * equal
    # the merge reports progress as it reads (the CLI's bars, the task's progress artifact)
    reports: list[tuple[int, int]] = []
    within(DEADLINE, lambda: compare(stack, source_db, target_db, target=dense_table,
                                     progress=lambda t, done, total: reports.append((done, total))))
    assert len(reports) >= 10  # a batch of each side at a time
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    assert all(d <= total for d, total in reports)
    assert reports[-1][0] >= 2 * ROWS  # both tables' rows went through the merge
    # a table too large for one whole-table digest first: range digests, then the same probe
    big, secs = within(DEADLINE, lambda: compare(stack, source_db, target_db,
                                                 target=dense_table, whole_first_rows=0))
    print(f"without the whole-table digest: {secs:.2f} s; phases {big.timings}")
    assert (big.missing, big.extra, big.changed) == (missing, len(extras), changed)
    assert "merge" in big.timings
    # bisection down to leaves of 8 rows (the probe finds 11 % sparse for such leaves, no level
    # is dense), leaves fetched row by row up to a budget of rows: past it, leaves are merged
    # and counts stay exact (they were estimates from range digests, with a warning)
    capped, secs = within(DEADLINE, lambda: compare(
        stack, source_db, target_db, target=dense_table, whole_first_rows=0, leaf_rows=8,
        dense_fraction=2.0, locate_limit=20_000))
    print(f"leaves over the fetch budget merged: {secs:.2f} s; phases {capped.timings}")
    assert (capped.missing, capped.extra, capped.changed) == (missing, len(extras), changed)
    assert not capped.warnings, capped.warnings


WORDS_DDL = "CREATE TABLE public.words (w text PRIMARY KEY, n int NOT NULL)"


@pytest.mark.parametrize("collation", ["default", "en-US-x-icu"])
def test_text_keys_beyond_both_ends_of_the_source_end_in_bounded_time(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, collation: str) -> None:
    """Text keys are cut at every n-th key of the side holding more rows, in byte order:
    keys only the target holds, past either end of the source's, are still divided."""
    ddl = WORDS_DDL if collation == "default" else WORDS_DDL.replace(
        "text", f'text COLLATE "{collation}"', 1)
    for db in (source_db, target_db):
        run_sql(db, ddl)
        run_sql(db, "INSERT INTO public.words SELECT 'm' || lpad(g::text, 6, '0'), g "
                    "FROM generate_series(1, 20000) g")
    # 'A…' and '0…' sort before 'm…' bytewise, 'z…' and '~…' after it
    run_sql(target_db, "INSERT INTO public.words SELECT p || lpad(g::text, 6, '0'), g "
                       "FROM generate_series(1, 1500) g, unnest(ARRAY['A', '0', 'z', '~']) p")
    for db in (source_db, target_db):
        run_sql(db, "ANALYZE public.words")
    spec = make_spec(source_db, target_db, ["public.words"], stack)
    opts = CompareOptions(chunk_rows=spec.validation.chunk_rows, moving_source=False,
                          whole_first_rows=0)
    r, took = within(DEADLINE, lambda: validate_table(spec, spec.tables[0], opts))
    print(f"\ntext keys ({collation}): 6000 extra rows at both ends, {took:.2f} s")
    assert r.error is None, r.error
    assert (r.missing, r.extra, r.changed) == (0, 6000, 0)


def test_keys_python_does_not_order_like_postgresql_are_merged_by_their_text(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> None:
    """A float key (NaN orders last in PostgreSQL, unordered in Python) and dense differences:
    the merge orders such keys by their text on both sides, and counts exactly."""
    for db in (source_db, target_db):
        run_sql(db, "CREATE TABLE public.points (x double precision PRIMARY KEY, v int)")
        run_sql(db, "INSERT INTO public.points SELECT g / 8.0, g FROM generate_series(1, 20000) g")
        run_sql(db, "INSERT INTO public.points VALUES ('NaN', 0), ('Infinity', 1), "
                    "('-Infinity', 2), (-0.5, 3)")
    vs = [*range(1, 20001), 0, 1, 2, 3]
    changed = [v for v in vs if v % 5 == 1] + [0]  # and NaN's
    missing = [v for v in vs if v % 9 == 4 and v % 5 != 1]  # a changed v is negative then
    run_sql(target_db, "UPDATE public.points SET v = -v WHERE v % 5 = 1")
    run_sql(target_db, "DELETE FROM public.points WHERE v % 9 = 4")
    run_sql(target_db, "INSERT INTO public.points SELECT g / 8.0 + 0.0625, g "  # 2,000 extra
                       "FROM generate_series(1, 20000, 10) g")
    run_sql(target_db, "UPDATE public.points SET v = 7 WHERE x = 'NaN'")
    spec = make_spec(source_db, target_db, ["public.points"], stack)
    opts = CompareOptions(chunk_rows=2000, moving_source=False)
    r, took = within(DEADLINE, lambda: validate_table(spec, spec.tables[0], opts))
    print(f"\nfloat keys: {r.mismatched_rows} differing rows in {took:.2f} s; {r.timings}")
    assert r.error is None, r.error
    assert (r.missing, r.extra, r.changed) == (len(missing), 2000, len(changed))
    assert "merge" in r.timings
