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

from migwatch.config import parse_spec
from migwatch.connectors.postgres import Column, TableInfo
from migwatch.errors import ConfigError
from migwatch.targets.mongo.validation import _covers
from migwatch.validation.base import KeyRange, layout, sub_ranges
from migwatch.validation.expectations import (
    ROW_COUNT,
    apply_outcome,
    check_expectation_keys,
    failed_names,
    scrub,
    user_expectations,
)
from migwatch.validation.kinds import column_kind
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
from migwatch.validation.postgres import PostgresDialect

UTC = dt.UTC


# ----------------------------------------------------------------------------- kinds
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


# ----------------------------------------------------------------------------- SQL
def _info(*columns: tuple[str, str], pk: tuple[str, ...] = ("id",)) -> TableInfo:
    return TableInfo(schema="public", name="My Table",
                     columns=tuple(Column(n, t, n in pk) for n, t in columns), primary_key=pk)


def test_hash_mode_pushes_the_aggregate_down() -> None:
    d = PostgresDialect(_info(("id", "bigint"), ("doc", "json"), ("amount", "numeric")),
                        ["id", "doc", "amount"], ["id"])
    query, params = d.bucket_query([(100,), (200,)], KeyRange((1,), None))
    text = query.as_string(None)
    assert 'FROM "public"."My Table"' in text
    assert "width_bucket(k, %s::bigint[])" in text and "bit_xor(h)" in text
    assert 'hash_record_extended(ROW("id", "doc"::text, "amount"), 0)' in text  # json: exact text
    assert params == [[100, 200], 1]


def test_text_keys_order_bytewise_in_every_query() -> None:
    d = PostgresDialect(_info(("k", "text"), ("n", "integer"), ("at", "timestamp with time zone"),
                              ("amount", "numeric(10,2)"), pk=("k", "n")),
                        ["k", "n", "at", "amount"], ["k", "n"])
    query, params = d.bucket_query([("m", 1)], KeyRange())
    text = query.as_string(None)
    assert 'ROW("k" COLLATE "C", "n")' in text
    assert params == ["m", 1]
    where, wparams = d.range_where(KeyRange(("a", 1), ("b", 2)))
    assert where.as_string(None).count("ROW(%s::text, %s::integer)") == 2
    assert wparams == ["a", 1, "b", 2]


def test_no_bounds_put_every_key_in_bucket_zero_without_an_untyped_empty_array() -> None:
    """A composite key's `width_bucket(ROW(..), ARRAY[])` fails on the server ('cannot
    determine type of empty array'): cutting one whole range asks for buckets without bounds."""
    d = PostgresDialect(_info(("order_id", "bigint"), ("line_no", "integer"),
                              pk=("order_id", "line_no")), ["order_id", "line_no"],
                        ["order_id", "line_no"])
    query, params = d.boundaries_in_query([KeyRange()], [], [3])
    text = query.as_string(None)
    assert "ARRAY[" not in text and "width_bucket" not in text
    assert "SELECT 0 AS b" in text and params == [[3]]
    rows, rparams = d.row_digest_query([KeyRange((1, 1), None)], [])
    assert "width_bucket" not in rows.as_string(None) and rparams == [1, 1]


def test_key_reads_are_typed_and_an_empty_key_list_matches_nothing() -> None:
    d = PostgresDialect(_info(("order_id", "bigint"), ("line_no", "integer"), ("qty", "integer"),
                              pk=("order_id", "line_no")), ["order_id", "line_no", "qty"],
                        ["order_id", "line_no"])
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
            "migwatch.targets.mongo.validation; "
            "print(sorted(m for m in ('prefect', 'great_expectations') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
