"""Great Expectations suites on a real PostgreSQL target, generated from the source schema."""

from __future__ import annotations

from typing import Any

import pytest

from migwatch import workload
from migwatch.errors import ConfigError
from migwatch.stack import Stack
from migwatch.validation import DIFFERENT, EQUAL, validate
from migwatch.validation.expectations import (
    NOT_APPLICABLE,
    _target_url,
    failed_names,
    one_snapshot,
    run_expectations,
)
from tests.conftest import PgDatabase, make_spec, mongo_endpoint
from tests.integration.validation_helpers import copy_tables

TABLES = ["public.customers", "public.order_items", "public.ProductReviews"]


@pytest.fixture
def shop(stack: Stack, source_db: PgDatabase, target_db: PgDatabase) -> dict[str, int]:
    counts = workload.init(source_db.dsn, 1500)
    copy_tables(source_db.dsn, target_db.dsn, TABLES)
    return counts


def run_sql(db: PgDatabase, statement: str) -> None:
    with db.connect() as conn:
        conn.execute(statement)


def test_generated_suites_pass_on_an_exact_copy(stack: Stack, source_db: PgDatabase,
                                                target_db: PgDatabase,
                                                shop: dict[str, int]) -> None:
    spec = make_spec(source_db, target_db, TABLES, stack)
    result = validate(spec)
    outcomes = run_expectations(spec, result)

    assert result.status == EQUAL
    assert set(outcomes) == set(TABLES)
    customers = outcomes["public.customers"]
    assert customers["applies"] and customers["success"] and not customers["failed"]
    # row count, column set, unique key, and the NOT NULL columns (id, email, is_active,
    # created_at)
    assert customers["evaluated"] == 2 + 1 + 4
    items = outcomes["public.order_items"]
    assert items["success"] and items["evaluated"] == 2 + 1 + 5  # compound key, 5 NOT NULL
    assert result.table("ProductReviews").expectations == outcomes["public.ProductReviews"]


def test_a_failed_expectation_is_named(stack: Stack, source_db: PgDatabase,
                                       target_db: PgDatabase, shop: dict[str, int]) -> None:
    # the target lost a NOT NULL constraint and holds a NULL; the source has the constraint
    run_sql(target_db, "ALTER TABLE public.customers ALTER COLUMN email DROP NOT NULL")
    run_sql(target_db, "UPDATE public.customers SET email = NULL WHERE id = 8")
    spec = make_spec(source_db, target_db, TABLES, stack, validation={
        "expectations": {"ProductReviews": [
            {"type": "expect_column_values_to_be_between", "column": "Rating",
             "min_value": 2, "max_value": 5}]}})
    result = validate(spec)
    run_expectations(spec, result)

    customers = result.table("customers")
    assert customers.status == DIFFERENT
    [failed] = customers.expectations["failed"]  # type: ignore[index]
    assert failed["expectation"] == "expect_column_values_to_not_be_null"
    assert failed["kwargs"]["column"] == "email" and failed["unexpected_count"] == 1
    reviews = result.table("ProductReviews")
    [failed] = reviews.expectations["failed"]  # type: ignore[index]
    assert failed["expectation"] == "expect_column_values_to_be_between"
    assert failed["kwargs"] == {"column": "Rating", "min_value": "<redacted>",
                                "max_value": "<redacted>"}
    assert "unexpected_sample" not in failed  # values are not shown by default
    assert reviews.status == DIFFERENT and result.exit_code == 1
    assert set(failed_names(result)) == {
        "public.customers: expect_column_values_to_not_be_null(email)",
        "public.ProductReviews: expect_column_values_to_be_between(Rating)"}


def test_row_count_and_column_set(stack: Stack, source_db: PgDatabase, target_db: PgDatabase,
                                  shop: dict[str, int]) -> None:
    run_sql(target_db, "DELETE FROM public.order_items WHERE order_id = 3")
    run_sql(target_db, 'ALTER TABLE public."ProductReviews" ADD COLUMN spam int')
    spec = make_spec(source_db, target_db, TABLES, stack)
    result = validate(spec)
    run_expectations(spec, result)
    items = result.table("order_items").expectations or {}
    [count] = items["failed"]
    assert count["expectation"] == "expect_table_row_count_to_equal"
    assert count["observed"] == shop["order_items"] - 2
    reviews = result.table("ProductReviews").expectations or {}
    [cols] = reviews["failed"]
    assert cols["expectation"] == "expect_table_columns_to_match_set"
    assert "spam" in str(cols["details"])


def test_bad_user_expectations_name_the_field(stack: Stack, source_db: PgDatabase,
                                              target_db: PgDatabase,
                                              shop: dict[str, int]) -> None:
    for expectations, field in (
            ({"public.nope": []}, "validation.expectations.public.nope"),
            ({"customers": [{"type": "expect_the_impossible"}]},
             "validation.expectations.public.customers[0]")):
        spec = make_spec(source_db, target_db, TABLES, stack,
                         validation={"expectations": expectations})
        result = validate(spec, tables=["public.customers"])
        with pytest.raises(ConfigError) as err:
            run_expectations(spec, result)
        assert err.value.field == field


def test_mongodb_target_says_gx_does_not_apply(stack: Stack, source_db: PgDatabase,
                                               mongo_db: str) -> None:
    workload.init(source_db.dsn, 200)
    spec = make_spec(source_db, mongo_endpoint(stack, mongo_db), ["public.customers"], stack)
    result: Any = validate(spec)
    outcomes = run_expectations(spec, result)
    assert outcomes["public.customers"] == {"applies": False, "note": NOT_APPLICABLE}
    assert NOT_APPLICABLE in result.notes
    assert result.table("customers").status == DIFFERENT  # empty collection: every row missing


def test_every_gx_query_sees_one_snapshot_of_a_moving_target(
        stack: Stack, source_db: PgDatabase, target_db: PgDatabase, shop: dict[str, int]) -> None:
    """Rows written to the target after the snapshot was taken stay invisible to every metric
    GX computes in the block, as they would for a single query."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    spec = make_spec(source_db, target_db, TABLES, stack)
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_postgres("t", connection_string=_target_url(spec))
    batch = source.add_table_asset(name="c", table_name="customers", schema_name="public") \
        .add_batch_definition_whole_table("all").get_batch()
    expected = shop["customers"]
    with one_snapshot(spec):
        run_sql(target_db, "INSERT INTO public.customers (id, email, is_active, created_at) "
                           "SELECT g, 'late' || g, true, now() FROM generate_series(-50, -1) g")
        seen = batch.validate(gxe.ExpectTableRowCountToEqual(value=expected))
        unique = batch.validate(gxe.ExpectColumnValuesToBeUnique(column="id"))
    assert seen.success, seen.result  # the 50 late rows are not in the snapshot
    assert unique.success and unique.result["element_count"] == expected
    after = batch.validate(gxe.ExpectTableRowCountToEqual(value=expected + 50))
    assert after.success  # outside the block GX sees the table as it is now
