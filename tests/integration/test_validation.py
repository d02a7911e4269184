"""Validation PostgreSQL → PostgreSQL on the real stack: every injected difference is found and
located to its exact key, and values that only look different (jsonb key order, numeric scale)
compare equal.

The shop workload (every type a migration carries) is built on the source and copied to the
target with COPY; each test then changes the target (or the source) in one precise way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from migwatch import workload
from migwatch.config import MigrationSpec
from migwatch.connectors import postgres as pg
from migwatch.metrics import REGISTRY
from migwatch.stack import Stack
from migwatch.validation import (
    DIFFERENT,
    EQUAL,
    ERROR,
    PENDING,
    CompareOptions,
    TableResult,
    ValidationResult,
    validate,
    validate_table,
)
from migwatch.validation.model import REDACTED
from tests.conftest import PgDatabase, make_spec
from tests.integration.validation_helpers import copy_tables

SIZE = 4000  # rows over the five shop tables
SHOP = list(workload.SHOP_TABLES)


@pytest.fixture
def shop(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> Iterator[dict[str, int]]:
    """The shop workload on the source and an exact copy on the target."""
    counts = workload.init(source_db.dsn, SIZE)
    copy_tables(source_db.dsn, target_db.dsn, SHOP)
    yield counts


def spec_for(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
             tables: list[Any] | None = None, **validation: Any) -> MigrationSpec:
    return make_spec(source_db, target_db, tables or SHOP, stack,
                     validation={"chunk_rows": 500, **validation})


def run_sql(db: PgDatabase, statement: str, params: Any = None) -> None:
    with db.connect() as conn:
        conn.execute(statement, params)


def one(spec: MigrationSpec, table: str, **options: Any) -> TableResult:
    """Compare one table with final (not pending) verdicts."""
    t = next(t for t in spec.tables if t.source == table)
    opts = CompareOptions(chunk_rows=spec.validation.chunk_rows,
                          sample_cap=spec.validation.sample_cap,
                          show_values=spec.validation.show_values, moving_source=False)
    for k, v in options.items():
        setattr(opts, k, v)
    return validate_table(spec, t, opts)


def keys_of(result: TableResult, kind: str) -> list[dict[str, Any]]:
    return [d.key for d in result.sample if d.kind == kind]


# ----------------------------------------------------------------------------- equal
def test_identical_tables_are_equal(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                                    shop: dict[str, int]) -> None:
    spec = spec_for(stack, source_db, target_db)
    before = REGISTRY.get_sample_value("migwatch_validation_rows_compared_total",
                                       {"migration_id": "adhoc", "table_name": "public.orders"})
    result = validate(spec)

    assert result.status == EQUAL, [(t.table, t.status, t.error) for t in result.tables]
    assert result.exit_code == 0
    assert {t.table for t in result.tables} == set(SHOP)
    for t in result.tables:
        name = t.table.split(".")[1]
        assert t.source_rows == t.target_rows == shop[name]
        assert t.rows_compared == shop[name]
        assert t.mismatched_rows == 0 and not t.sample and not t.ranges
        assert t.ranges_checked >= 1
        assert t.precision == "microseconds"
    after = REGISTRY.get_sample_value("migwatch_validation_rows_compared_total",
                                      {"migration_id": "adhoc", "table_name": "public.orders"})
    assert (after or 0) - (before or 0) == shop["orders"]
    orders = result.table("orders")
    assert orders.ranges_checked == 1  # equal at once: one whole-table digest per side
    # a table over `whole_first_rows` is cut into ranges of about chunk_rows from the start
    segmented = one(spec, "public.orders", whole_first_rows=0)
    assert segmented.status == EQUAL and segmented.source_rows == shop["orders"]
    assert segmented.ranges_checked >= shop["orders"] // 500
    # the result survives a round trip through JSON (the report stage reads it from a file)
    again = ValidationResult.from_dict(result.to_dict())
    assert again.to_dict() == result.to_dict()


# ----------------------------------------------------------------------------- differences
#: bisection several levels deep on these small tables (ranges of 500 → 125 → 31 → 8 rows)
DEEP = {"leaf_rows": 8, "fanout": 4}


@pytest.mark.parametrize("options", [{}, DEEP], ids=["leaf", "deep"])
def test_changed_value_is_located_with_its_column(stack: Stack, source_db: PgDatabase,
                                                  target_db: PgDatabase, shop: dict[str, int],
                                                  options: dict[str, int]) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'lost' WHERE id = 1000")
    r = one(spec_for(stack, source_db, target_db), "public.orders", **options)

    assert r.status == DIFFERENT
    assert (r.missing, r.extra, r.changed) == (0, 0, 1)
    assert len(r.sample) == 1
    diff = r.sample[0]
    assert diff.kind == "changed" and diff.key == {"id": 1000}
    assert diff.columns == ["status"]
    # values are redacted unless the spec allows showing them
    assert diff.source == {"status": REDACTED} and diff.target == {"status": REDACTED}
    assert len(r.ranges) == 1 and r.ranges[0].state == "mismatched"


def test_values_are_shown_only_when_the_spec_allows(stack: Stack, source_db: PgDatabase,
                                                    target_db: PgDatabase,
                                                    shop: dict[str, int]) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'lost' WHERE id = 77")
    spec = spec_for(stack, source_db, target_db, show_values=True)
    r = one(spec, "public.orders")
    [diff] = r.sample
    assert diff.source == {"status": "paid"} and diff.target == {"status": "lost"}


@pytest.mark.parametrize("options", [{}, DEEP], ids=["leaf", "deep"])
def test_missing_and_extra_rows(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                                shop: dict[str, int], options: dict[str, int]) -> None:
    run_sql(target_db, "DELETE FROM public.customers WHERE id IN (5, 250)")
    run_sql(target_db, "INSERT INTO public.customers SELECT id + 100000, email, full_name, "
                       "is_active, profile, created_at FROM public.customers WHERE id = 7")
    r = one(spec_for(stack, source_db, target_db), "public.customers", **options)

    assert r.status == DIFFERENT
    assert (r.missing, r.extra, r.changed) == (2, 1, 0)
    assert sorted(k["id"] for k in keys_of(r, "missing")) == [5, 250]
    assert keys_of(r, "extra") == [{"id": 100007}]
    assert r.source_rows == shop["customers"] and r.target_rows == shop["customers"] - 1


def test_null_versus_empty_string(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                                  shop: dict[str, int]) -> None:
    # orders.note: NULL where id % 6 = 0, '' where id % 6 = 1
    run_sql(target_db, "UPDATE public.orders SET note = '' WHERE id = 12")
    run_sql(target_db, "UPDATE public.orders SET note = NULL WHERE id = 13")
    r = one(spec_for(stack, source_db, target_db), "public.orders")

    assert r.changed == 2 and r.missing == r.extra == 0
    assert sorted(d.key["id"] for d in r.sample) == [12, 13]
    assert all(d.columns == ["note"] for d in r.sample)


def test_timestamp_off_by_one_microsecond(stack: Stack, source_db: PgDatabase,
                                          target_db: PgDatabase, shop: dict[str, int]) -> None:
    run_sql(target_db, "UPDATE public.orders SET placed_at = placed_at + interval '1 microsecond' "
                       "WHERE id = 999")
    r = one(spec_for(stack, source_db, target_db), "public.orders")

    assert r.precision == "microseconds"
    assert [(d.key, d.columns) for d in r.sample] == [({"id": 999}, ["placed_at"])]


def test_timestamptz_in_another_zone_is_equal(stack: Stack, source_db: PgDatabase,
                                              target_db: PgDatabase,
                                              shop: dict[str, int]) -> None:
    # the same instant written through a session in another time zone
    with target_db.connect() as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        row = conn.execute("SELECT placed_at::text FROM public.orders WHERE id = 5").fetchone()
        assert row is not None and row[0].endswith("+05:30")
        conn.execute("UPDATE public.orders SET placed_at = %s::timestamptz WHERE id = 5", [row[0]])
    assert one(spec_for(stack, source_db, target_db), "public.orders").status == EQUAL


def test_jsonb_key_order_and_numeric_scale_are_equal(stack: Stack, source_db: PgDatabase,
                                                     target_db: PgDatabase) -> None:
    ddl = ("CREATE TABLE public.facts (id int PRIMARY KEY, doc jsonb, amount numeric, "
           "price numeric(10,4))")
    run_sql(source_db, ddl)
    run_sql(target_db, ddl)
    run_sql(source_db, """INSERT INTO public.facts VALUES
        (1, '{"a": 1, "b": {"x": [1, 2], "y": "ü"}}', 1.0, 2.5),
        (2, '{"z": null, "aa": true}', 100, 3)""")
    run_sql(target_db, """INSERT INTO public.facts VALUES
        (1, '{"b": {"y": "ü", "x": [1, 2]}, "a": 1}', 1.00, 2.50),
        (2, '{"aa": true, "z": null}', 100.000, 3.0000)""")
    spec = spec_for(stack, source_db, target_db, tables=["public.facts"])
    r = one(spec, "public.facts")
    assert r.status == EQUAL, r.sample
    # ...while a real difference inside the document is found
    run_sql(target_db, """UPDATE public.facts SET doc = '{"z": null, "aa": false}' WHERE id = 2""")
    r = one(spec, "public.facts")
    assert [(d.key, d.columns) for d in r.sample] == [({"id": 2}, ["doc"])]


def test_changed_byte_in_bytea(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                               shop: dict[str, int]) -> None:
    # products.image: md5 bytes (NULL where g % 4 = 0); flip one bit of the last byte
    run_sql(target_db, "UPDATE public.products SET image = set_byte(image, 15, "
                       "get_byte(image, 15) # 1) WHERE sku = 'SKU-0000003'")
    r = one(spec_for(stack, source_db, target_db), "public.products")

    assert [(d.kind, d.key, d.columns) for d in r.sample] == [
        ("changed", {"sku": "SKU-0000003"}, ["image"])]


@pytest.mark.parametrize("options", [{}, DEEP, {"chunk_rows": 100_000}],
                         ids=["leaf", "deep", "one-range-over-a-leaf"])
def test_composite_primary_key(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                               shop: dict[str, int], options: dict[str, int]) -> None:
    run_sql(target_db, "UPDATE public.order_items SET qty = qty + 1 "
                       "WHERE order_id = 10 AND line_no = 1")
    run_sql(target_db, "DELETE FROM public.order_items WHERE order_id = 700 AND line_no = 2")
    run_sql(target_db, "INSERT INTO public.order_items VALUES (700, 9, 'SKU-0000001', 1, 1.00)")
    r = one(spec_for(stack, source_db, target_db), "public.order_items", **options)

    assert r.primary_key == ["order_id", "line_no"]
    assert (r.missing, r.extra, r.changed) == (1, 1, 1)
    got = {(d.kind, d.key["order_id"], d.key["line_no"]) for d in r.sample}
    assert got == {("changed", 10, 1), ("missing", 700, 2), ("extra", 700, 9)}
    assert next(d for d in r.sample if d.kind == "changed").columns == ["qty"]


def test_quoted_table_name_and_non_ascii_text(stack: Stack, source_db: PgDatabase,
                                              target_db: PgDatabase,
                                              shop: dict[str, int]) -> None:
    run_sql(target_db, """UPDATE public."ProductReviews" SET body = replace(body, 'ñ', 'n')
                          WHERE id = 42""")
    r = one(spec_for(stack, source_db, target_db), "public.ProductReviews")
    assert [(d.key, d.columns) for d in r.sample] == [({"id": 42}, ["body"])]


@pytest.mark.parametrize("options", [{}, DEEP], ids=["leaf", "deep"])
def test_many_differences_are_counted_but_the_sample_is_capped(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
        shop: dict[str, int], options: dict[str, int]) -> None:
    run_sql(target_db, "UPDATE public.orders SET total = total + 1 WHERE id % 10 = 3")
    spec = spec_for(stack, source_db, target_db, sample_cap=5)
    r = one(spec, "public.orders", **options)
    expected = len([i for i in range(1, shop["orders"] + 1) if i % 10 == 3])
    assert r.changed == expected
    assert len(r.sample) == 5 and r.sample_truncated
    assert all(d.columns == ["total"] for d in r.sample)


def test_a_whole_range_missing_on_the_target(stack: Stack, source_db: PgDatabase,
                                             target_db: PgDatabase,
                                             shop: dict[str, int]) -> None:
    run_sql(target_db, "DELETE FROM public.orders WHERE id BETWEEN 200 AND 900")
    r = one(spec_for(stack, source_db, target_db, sample_cap=3), "public.orders")
    assert r.missing == 701 and r.extra == r.changed == 0
    assert [d.key["id"] for d in r.sample] == [200, 201, 202]


def test_target_table_empty_or_absent(stack: Stack, source_db: PgDatabase,
                                      target_db: PgDatabase, shop: dict[str, int]) -> None:
    run_sql(target_db, "TRUNCATE public.products")
    run_sql(target_db, "DROP TABLE public.customers")
    spec = spec_for(stack, source_db, target_db)
    result = validate(spec, tables=["public.products", "public.customers"])
    products, customers = result.table("products"), result.table("customers")
    assert products.status == DIFFERENT and products.missing == shop["products"]
    assert customers.status == ERROR and "does not exist" in (customers.error or "")
    assert result.exit_code == 2


def test_table_without_primary_key_is_hashed_whole_with_a_warning(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> None:
    for db in (source_db, target_db):
        run_sql(db, "CREATE TABLE public.log (at timestamptz, line text)")
        run_sql(db, "INSERT INTO public.log SELECT timestamptz '2025-01-01 00:00:00+00' "
                    "- g * interval '1 s', 'line ' || g FROM generate_series(1, 300) g")
    spec = spec_for(stack, source_db, target_db, tables=["public.log"])
    r = one(spec, "public.log")
    assert r.status == EQUAL and r.source_rows == 300
    assert any("no primary key" in w for w in r.warnings)
    run_sql(target_db, "UPDATE public.log SET line = 'x' WHERE line = 'line 17'")
    r = one(spec, "public.log")
    assert r.status == DIFFERENT and r.ranges[0].lo is None and r.ranges[0].hi is None


def test_column_set_difference_is_reported(stack: Stack, source_db: PgDatabase,
                                           target_db: PgDatabase, shop: dict[str, int]) -> None:
    run_sql(target_db, "ALTER TABLE public.products ADD COLUMN extra_col int")
    r = one(spec_for(stack, source_db, target_db), "public.products")
    assert r.status == DIFFERENT
    assert any("extra_col" in s for s in r.schema_differences)


@pytest.mark.parametrize("options", [{}, DEEP], ids=["leaf", "deep"])
def test_text_keys_with_non_ascii_order(stack: Stack, source_db: PgDatabase,
                                        target_db: PgDatabase, options: dict[str, int]) -> None:
    ddl = "CREATE TABLE public.words (w text PRIMARY KEY, n int)"
    for db in (source_db, target_db):
        run_sql(db, ddl)
        run_sql(db, "INSERT INTO public.words SELECT w || g, g FROM generate_series(1, 600) g, "
                    "unnest(ARRAY['apple', 'Äpfel', 'zebra', 'éclair', '東京', 'Zoë']) w")
    run_sql(target_db, "UPDATE public.words SET n = -1 WHERE w = 'éclair77'")
    run_sql(target_db, "DELETE FROM public.words WHERE w = '東京5'")
    # a cluster of extra rows: where the target holds more, the target's keys cut the range
    run_sql(target_db, "INSERT INTO public.words SELECT 'Zoë1x' || g, g "
                       "FROM generate_series(1, 30) g")
    spec = spec_for(stack, source_db, target_db, tables=["public.words"], chunk_rows=200,
                    sample_cap=50)
    r = one(spec, "public.words", **options)
    assert {(d.kind, d.key["w"]) for d in r.sample} == {
        ("changed", "éclair77"), ("missing", "東京5"),
        *(("extra", f"Zoë1x{g}") for g in range(1, 31))}
    assert (r.missing, r.extra, r.changed) == (1, 30, 1)


# ----------------------------------------------------------------------------- moving source
def test_differences_are_pending_with_the_source_lsn_while_cdc_runs(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, migration_id: str,
        shop: dict[str, int]) -> None:
    run_sql(target_db, "UPDATE public.orders SET status = 'lost' WHERE id = 10")
    with psycopg.connect(source_db.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
        assert row is not None
        before = int(row[0])
    result = validate(spec_for(stack, source_db, target_db), migration_id,
                      tables=["public.orders"])
    orders = result.table("orders")
    assert orders.status == PENDING and result.status == PENDING
    [rng] = orders.ranges
    assert rng.state == "pending" and rng.lsn_num >= before and "/" in rng.lsn
    assert rng.hi is not None and rng.hi[0] > 10  # the leaf range holding id 10
    assert rng.lo is None or rng.lo[0] <= 10


def test_a_query_over_the_statement_timeout_is_a_clear_permanent_error(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> None:
    """The database bounds each comparison query (Prefect cannot interrupt a task's query)."""
    from migwatch.errors import PermanentError
    from migwatch.validation.postgres import open_connection

    conn = open_connection(source_db.dsn, "source", statement_timeout_seconds=0.2)
    try:
        with pytest.raises(PermanentError, match="statement timeout"), pg.translated("source"):
            conn.execute("SELECT pg_sleep(2)")
    finally:
        conn.close()
