"""Validation logic without servers: canonical forms, the result model and its statuses, key
ranges, the SQL the PostgreSQL dialect builds, expectation bookkeeping, and layering."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import Binary, Decimal128

from migwatch.config import parse_spec
from migwatch.connectors.postgres import Column, TableInfo
from migwatch.errors import ConfigError
from migwatch.validation.base import KeyRange, layout, sub_ranges
from migwatch.validation.canonical import (
    MICROSECONDS,
    MILLISECONDS,
    column_kind,
    float4_text,
    float_text,
    jsonb_text,
    numeric_text,
    record_text,
    row_hash,
    timestamp_text,
    value_text,
)
from migwatch.validation.expectations import (
    ROW_COUNT,
    apply_outcome,
    check_expectation_keys,
    failed_names,
    scrub,
    user_expectations,
)
from migwatch.validation.model import (
    DIFFERENT,
    EQUAL,
    ERROR,
    PENDING,
    RANGE_MISMATCHED,
    RANGE_PENDING,
    RANGE_RESOLVED,
    RangeCheck,
    TableResult,
    ValidationResult,
    decode_key,
    encode_key,
)
from migwatch.validation.mongo import _covers, key_value
from migwatch.validation.postgres import HASH_MODE, TEXT_MODE, PostgresDialect

UTC = dt.UTC


# ----------------------------------------------------------------------------- canonical
@pytest.mark.parametrize("raw, text", [
    ("1.0", "1"), ("1.00", "1"), ("100", "100"), ("1E+2", "100"), ("0.000", "0"),
    ("-12.3400", "-12.34"), ("0.0001", "0.0001"), ("NaN", "NaN"),
    ("123456789012345678901234567890.5", "123456789012345678901234567890.5"),
])
def test_numeric_scale_does_not_matter(raw: str, text: str) -> None:
    assert numeric_text(Decimal(raw)) == text
    assert value_text(Decimal128(raw) if raw != "NaN" else raw, "numeric") == text


@pytest.mark.parametrize("x, text", [
    (0.1, "0.1"), (1.0, "1"), (-0.0, "-0"), (1e15, "1e+15"), (123456789012345.0,
                                                             "123456789012345"),
    (1e-5, "1e-05"), (0.0001, "0.0001"), (float("nan"), "NaN"), (float("-inf"), "-Infinity"),
])
def test_float8_text_is_postgres_output(x: float, text: str) -> None:
    assert float_text(x) == text


def test_float4_text_reads_the_32_bit_value() -> None:
    widened = 0.10000000149011612  # what a binary driver hands over for real 0.1
    assert float4_text(0.1) == float4_text(widened) == "0.1"
    assert float4_text(1234567.0) == "1.234567e+06"
    assert float4_text(100000.0) == "100000"
    assert float4_text(3.4028234663852886e38) == "3.4028235e+38"


def test_timestamps_to_utc_at_the_stated_precision() -> None:
    t = dt.datetime(2024, 1, 1, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert timestamp_text(t, MICROSECONDS, with_zone=True) == "2024-01-01 12:00:00.123456+00"
    assert timestamp_text(t, MILLISECONDS, with_zone=True) == "2024-01-01 12:00:00.123+00"
    one_us_later = t + dt.timedelta(microseconds=1)
    assert timestamp_text(one_us_later, MICROSECONDS, True) != timestamp_text(t, MICROSECONDS,
                                                                              True)
    assert timestamp_text(one_us_later, MILLISECONDS, True) == timestamp_text(t, MILLISECONDS,
                                                                              True)
    assert timestamp_text(dt.datetime(2024, 1, 1), MICROSECONDS, False) == "2024-01-01 00:00:00"


def test_jsonb_text_ignores_key_order() -> None:
    a = {"b": 1, "aa": [1, {"y": None, "x": True}], "ü": "straße"}
    b = {"ü": "straße", "aa": [1, {"x": True, "y": None}], "b": 1}
    assert jsonb_text(a) == jsonb_text(b)
    # PostgreSQL orders jsonb keys by length, then bytes; non-ASCII and escapes as it prints
    assert jsonb_text(a) == '{"b": 1, "aa": [1, {"x": true, "y": null}], "ü": "straße"}'
    assert jsonb_text({"q": 'say "hi"\n'}) == '{"q": "say \\"hi\\"\\n"}'
    assert jsonb_text([1, 2]) != jsonb_text([2, 1])  # arrays keep their order


def test_record_text_tells_null_from_empty_string() -> None:
    assert record_text([None, "", "a"]) == '(,"",a)'
    assert row_hash(record_text([None])) != row_hash(record_text([""]))
    assert record_text(['a "b"', "x,y", "back\\slash"]) == '("a ""b""","x,y","back\\\\slash")'
    assert record_text(["Zoë 東京"]) == '("Zoë 東京")'


def test_value_text_of_document_values() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert value_text(Binary.from_uuid(u), "uuid") == str(u)
    assert value_text(Binary(b"\x00\xff"), "bytea") == "\\x00ff"
    assert value_text(True, "bool") == "true"
    assert value_text(None, "text") is None
    assert value_text("", "text") == ""
    assert value_text([1, None, 3], "array:int") == "{1,NULL,3}"
    assert value_text(["a b", "", None], "array:text") == '{"a b","",NULL}'
    assert value_text(90_061_000_000, "interval") == "90061000000"
    assert value_text(dt.datetime(2024, 2, 3, tzinfo=UTC), "date") == "2024-02-03"


@pytest.mark.parametrize("pg_type, kind", [
    ("bigint", "int"), ("numeric(12,2)", "numeric"), ("real", "float4"),
    ("timestamp with time zone", "timestamptz"), ("timestamp without time zone", "timestamp"),
    ("character varying(20)", "text"), ("character(5)", "bpchar"), ("jsonb", "jsonb"),
    ("integer[]", "array:int"), ("time with time zone", "timetz"), ("inet", "other"),
])
def test_column_kinds(pg_type: str, kind: str) -> None:
    assert column_kind(pg_type) == kind


# ----------------------------------------------------------------------------- model
def test_keys_keep_their_type_through_json() -> None:
    key = (1, "x", Decimal("1.50"), dt.datetime(2024, 1, 1, 1, tzinfo=UTC), dt.date(2024, 1, 2),
           uuid.uuid4(), b"\x01\x02", 2.5, None, True, dt.timedelta(seconds=90))
    assert decode_key(json.loads(json.dumps(encode_key(key)))) == key
    assert encode_key(None) is None and decode_key(None) is None


def _table(**kw: Any) -> TableResult:
    return TableResult(table="public.t", target="public.t", primary_key=["id"], **kw)


def _range(state: str, changed: int = 1) -> RangeCheck:
    return RangeCheck(lo=[1], hi=[10], lsn="0/10", lsn_num=16, state=state, changed=changed,
                      keys=[{"kind": "changed", "key": {"id": 5}, "columns": ["a"]}])


def test_status_from_what_was_found() -> None:
    t = _table()
    t.settle_status()
    assert t.status == EQUAL
    t.ranges = [_range(RANGE_PENDING)]
    t.settle_status()
    assert t.status == PENDING
    t.ranges.append(_range(RANGE_MISMATCHED))
    t.settle_status()
    assert t.status == DIFFERENT
    t.error = "PermanentError: gone"
    t.settle_status()
    assert t.status == ERROR
    schema = _table(schema_differences=["column set: extra on target ['x']"])
    schema.settle_status()
    assert schema.status == DIFFERENT


def test_recount_drops_resolved_ranges() -> None:
    t = _table(ranges=[_range(RANGE_RESOLVED), _range(RANGE_PENDING, changed=2)])
    t.recount(sample_cap=1)
    assert t.changed == 2 and t.status == PENDING
    assert len(t.sample) == 1 and t.sample_truncated
    t.ranges[1].state = RANGE_RESOLVED
    t.recount(sample_cap=5)
    assert t.status == EQUAL and t.mismatched_rows == 0 and not t.sample


def test_result_status_exit_code_and_round_trip() -> None:
    res = ValidationResult(migration_id="m1", source="s", target="t", started_at="now")
    assert res.status == EQUAL and res.exit_code == 0
    res.tables = [_table(status=EQUAL), _table(status=PENDING, ranges=[_range(RANGE_PENDING)])]
    assert res.status == PENDING and res.exit_code == 1
    res.tables.append(_table(status=DIFFERENT))
    assert res.exit_code == 1
    res.tables.append(_table(status=ERROR, error="x"))
    assert res.status == ERROR and res.exit_code == 2
    data = json.loads(json.dumps(res.to_dict()))
    assert data["status"] == ERROR
    again = ValidationResult.from_dict(data)
    assert again.to_dict() == res.to_dict()
    assert again.tables[1].pending_ranges()[0].lsn_num == 16


# ----------------------------------------------------------------------------- ranges
def test_sub_ranges_and_containment() -> None:
    parts = sub_ranges([(10,), (20,)], KeyRange((0,), None))
    assert parts == [KeyRange((0,), (10,)), KeyRange((10,), (20,)), KeyRange((20,), None)]
    assert parts[1].contains((10,)) and not parts[1].contains((20,))
    assert KeyRange().contains((-5,))
    assert KeyRange((1, 2), (1, 5)).contains((1, 3))  # composite keys compare as tuples
    assert _covers(KeyRange((0,), (100,)), KeyRange((10,), (20,)))
    assert not _covers(KeyRange((0,), (100,)), KeyRange((10,), None))
    assert _covers(KeyRange(), KeyRange(None, (3,)))


def test_one_bucket_layout_for_several_ranges() -> None:
    bounds, owners = layout([(KeyRange((0,), (10,)), [(5,)]), (KeyRange((10,), (20,)), []),
                             (KeyRange((30,), None), [(40,)])])
    assert bounds == [(0,), (5,), (10,), (20,), (30,), (40,)]
    # bucket i holds bounds[i-1] <= key < bounds[i]; None marks the gaps between ranges
    assert owners == [None, (0, 0), (0, 1), (1, 0), None, (2, 0), (2, 1)]
    bounds, owners = layout([(KeyRange(None, ("m",)), [("c",)])])
    assert bounds == [("c",), ("m",)] and owners == [(0, 0), (0, 1), None]
    assert layout([]) == ([], [None])


def test_mongo_ids_map_back_to_source_keys() -> None:
    u = uuid.uuid4()
    assert key_value(Binary.from_uuid(u), "uuid") == u
    assert key_value(Decimal128("1.50"), "numeric") == Decimal("1.50")
    assert key_value(dt.datetime(2024, 1, 1), "timestamptz") == dt.datetime(2024, 1, 1,
                                                                             tzinfo=UTC)
    assert key_value(dt.datetime(2024, 1, 1), "date") == dt.date(2024, 1, 1)


# ----------------------------------------------------------------------------- SQL
def _info(*columns: tuple[str, str], pk: tuple[str, ...] = ("id",)) -> TableInfo:
    return TableInfo(schema="public", name="My Table",
                     columns=tuple(Column(n, t, n in pk) for n, t in columns), primary_key=pk)


def test_hash_mode_pushes_the_aggregate_down() -> None:
    d = PostgresDialect(_info(("id", "bigint"), ("doc", "json"), ("amount", "numeric")),
                        ["id", "doc", "amount"], ["id"], HASH_MODE)
    query, params = d.bucket_query([(100,), (200,)], KeyRange((1,), None))
    text = query.as_string(None)
    assert 'FROM "public"."My Table"' in text
    assert "width_bucket(k, %s::bigint[])" in text and "bit_xor(h)" in text
    assert 'hash_record_extended(ROW("id", "doc"::text, "amount"), 0)' in text  # json: exact text
    assert params == [[100, 200], 1]
    assert d.precision == MICROSECONDS


def test_text_mode_renders_canonical_text_and_orders_text_keys_bytewise() -> None:
    d = PostgresDialect(_info(("k", "text"), ("n", "integer"), ("at", "timestamp with time zone"),
                              ("amount", "numeric(10,2)"), pk=("k", "n")),
                        ["k", "n", "at", "amount"], ["k", "n"], TEXT_MODE)
    query, params = d.bucket_query([("m", 1)], KeyRange())
    text = query.as_string(None)
    assert 'ROW("k" COLLATE "C", "n")' in text
    assert "md5(ROW(" in text and "date_trunc('milliseconds', \"at\")::text" in text
    assert 'trim_scale("amount")::text' in text
    assert params == ["m", 1]
    assert d.precision == MILLISECONDS
    where, wparams = d.range_where(KeyRange(("a", 1), ("b", 2)))
    assert where.as_string(None).count("ROW(%s::text, %s::integer)") == 2
    assert wparams == ["a", 1, "b", 2]


def test_no_bounds_put_every_key_in_bucket_zero_without_an_untyped_empty_array() -> None:
    """A composite key's `width_bucket(ROW(..), ARRAY[])` fails on the server ('cannot
    determine type of empty array'): cutting one whole range asks for buckets without bounds."""
    d = PostgresDialect(_info(("order_id", "bigint"), ("line_no", "integer"),
                              pk=("order_id", "line_no")), ["order_id", "line_no"],
                        ["order_id", "line_no"], HASH_MODE)
    query, params = d.boundaries_in_query([KeyRange()], [], [3])
    text = query.as_string(None)
    assert "ARRAY[" not in text and "width_bucket" not in text
    assert "SELECT 0 AS b" in text and params == [[3]]
    rows, rparams = d.row_digest_query([KeyRange((1, 1), None)], [])
    assert "width_bucket" not in rows.as_string(None) and rparams == [1, 1]


def test_key_reads_are_typed_and_an_empty_key_list_matches_nothing() -> None:
    d = PostgresDialect(_info(("order_id", "bigint"), ("line_no", "integer"), ("qty", "integer"),
                              pk=("order_id", "line_no")), ["order_id", "line_no", "qty"],
                        ["order_id", "line_no"], HASH_MODE)
    query, params = d.key_hashes_query([(7, 1), (8, 2)], versions=True)
    text = query.as_string(None)
    assert '("order_id", "line_no") IN (ROW(%s::bigint, %s::integer), ' in text
    assert "xmin::text" in text and params == [7, 1, 8, 2]
    empty, none = d.key_hashes_query([])
    assert "WHERE false" in empty.as_string(None) and none == []
    versions, vparams = d.range_versions_query(KeyRange((5, 1), None))
    vtext = versions.as_string(None)
    assert "bit_xor(h)" in vtext and "hashtextextended(xmin::text || ctid::text, 0)" in vtext
    assert vparams == [5, 1]
    assert "sum(h)" in d.range_versions_query(None)[0].as_string(None)  # no primary key


def test_pending_keys_round_trip_and_old_results_still_load() -> None:
    check = RangeCheck(lo=None, hi=None, lsn="0/10", lsn_num=16, changed=1,
                       row_keys=[encode_key((7, dt.date(2024, 1, 2))) or []])
    t = _table(ranges=[check], counts_lsn="0/20")
    again = TableResult.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again.ranges[0].decoded_keys() == [(7, dt.date(2024, 1, 2))]
    assert again.counts_lsn == "0/20"
    old = t.to_dict()
    for gone in ("counts_lsn", "counted_at"):
        old.pop(gone)
    for r in old["ranges"]:
        r.pop("row_keys")
        r.pop("note")
    legacy = TableResult.from_dict(old)  # a result saved before keys were recorded
    assert legacy.ranges[0].row_keys is None and legacy.ranges[0].decoded_keys() == []


# ----------------------------------------------------------------------------- expectations
def _spec(**validation: Any) -> Any:
    return parse_spec({
        "source": {"kind": "postgres", "port": 15432, "database": "s"},
        "target": {"kind": "postgres", "port": 15433, "database": "t"},
        "tables": ["public.orders", "shop.items"], "validation": validation})


def test_user_expectations_by_qualified_or_bare_name() -> None:
    e = {"type": "expect_column_values_to_not_be_null", "column": "x"}
    spec = _spec(expectations={"orders": [e], "shop.items": [e, e]})
    orders, items = spec.tables
    assert user_expectations(spec, orders) == [e]
    assert user_expectations(spec, items) == [e, e]
    check_expectation_keys(spec)
    with pytest.raises(ConfigError) as err:
        check_expectation_keys(_spec(expectations={"items": [e]}))  # not in public
    assert err.value.field == "validation.expectations.items"


def test_failed_expectations_make_a_table_different_unless_only_the_count_moves() -> None:
    count = {"failed": [{"expectation": ROW_COUNT, "kwargs": {}}]}
    moving = _table(status=PENDING, ranges=[_range(RANGE_PENDING)])
    apply_outcome(moving, count)
    assert moving.status == PENDING and any("moving" in w for w in moving.warnings)
    still = _table(status=EQUAL)
    apply_outcome(still, count)
    assert still.status == DIFFERENT
    nulls = _table(status=PENDING, expectations={"failed": [
        {"expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "email"}}]})
    apply_outcome(nulls, nulls.expectations or {})
    assert nulls.status == DIFFERENT
    res = ValidationResult("m", "s", "t", "now", tables=[nulls])
    assert failed_names(res) == ["public.t: expect_column_values_to_not_be_null(email)"]
    moving.expectations = count
    res = ValidationResult("m", "s", "t", "now", tables=[moving, nulls])
    assert failed_names(res) == ["public.t: expect_table_row_count_to_equal",
                                 "public.t: expect_column_values_to_not_be_null(email)"]
    assert failed_names(res, moving_counts=False) == [  # what blocks, for the logs
        "public.t: expect_column_values_to_not_be_null(email)"]


def test_scrub_removes_passwords_from_urls() -> None:
    text = "could not connect to postgresql+psycopg://me:s3cr%40t@host:5432/db"
    assert "s3cr" not in scrub(text) and "me:***@host" in scrub(text)


# ----------------------------------------------------------------------------- layering
def test_core_imports_neither_prefect_nor_great_expectations() -> None:
    code = ("import sys, migwatch.validation, migwatch.validation.expectations, "
            "migwatch.validation.mongo; "
            "print(sorted(m for m in ('prefect', 'great_expectations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
