"""The differential harness's MongoDB comparator (tests/differential/compare_mongo.py) encodes the
PostgreSQL → MongoDB contract of docs/types.md: hand-made source values (as its source query
gives them: PostgreSQL's JSON, numbers exact) and target values (as pymongo reads them) meet in
one canonical form exactly when the contract says they should (pure: no servers)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64

from tests.differential import compare_mongo as cm
from tests.differential.schema import BY_ID, ColumnDef, TableDef
from tests.differential.types import BY_LIMIT


def _src(sql_type: str, json_text: str) -> Any:
    kind = cm.kind_of(sql_type)
    assert kind is not None, sql_type
    return cm.source_value(kind, cm._loads(json_text))


def _tgt(sql_type: str, value: Any) -> Any:
    kind = cm.kind_of(sql_type)
    assert kind is not None, sql_type
    return cm.target_value(kind, value)


def _refused(sql_type: str, json_text: str) -> None:
    with pytest.raises(cm.Refused):
        _src(sql_type, json_text)


@pytest.fixture(autouse=True)
def _ferretdb() -> Any:
    """FerretDB (no Decimal128) unless a test says otherwise."""
    before = cm.DECIMAL128["on"]
    cm.DECIMAL128["on"] = False
    yield
    cm.DECIMAL128["on"] = before


def test_integers_are_ints_and_int64_bounds_hold() -> None:
    for t in ("smallint", "integer", "bigint", "dw_posint"):
        assert _src(t, "7") == _tgt(t, 7) == 7
    assert _src("bigint", "-9223372036854775808") == _tgt("bigint", Int64(-2**63))
    assert _tgt("integer", 7.0) != 7
    assert _tgt("integer", True) != True  # noqa: E712 — a bool is not an int here


def test_numeric_keeps_its_scale_as_a_decimal_string_on_ferretdb() -> None:
    assert _src("numeric(12,2)", "1.50") == _tgt("numeric(12,2)", "1.50") == {
        "$decimal": "1.50"}
    assert _src("numeric(12,2)", "1.50") != _tgt("numeric(12,2)", "1.5")
    assert _src("numeric", "0.000000000000000000000000000001") == {
        "$decimal": "0.000000000000000000000000000001"}  # exponent -30: plain
    tiny = "0." + "0" * 53 + "1"  # exponent -54: str(Decimal)
    assert _src("numeric", tiny) == _tgt("numeric", "1E-54")
    big = "1" + "0" * 40  # exponent 0: plain, any number of digits on FerretDB
    assert _src("numeric", big) == _tgt("numeric", big)
    assert _tgt("numeric", 1.5) != _src("numeric", "1.5")
    assert _tgt("numeric", Decimal128("1.50")) != _src("numeric", "1.50")  # not on FerretDB
    for special in ('"NaN"', '"Infinity"', '"-Infinity"'):
        _refused("numeric", special)


def test_numeric_is_decimal128_on_mongodb() -> None:
    cm.DECIMAL128["on"] = True
    assert _src("numeric(12,2)", "1.50") == _tgt("numeric(12,2)", Decimal128("1.50"))
    assert _src("numeric(12,2)", "1.50") != _tgt("numeric(12,2)", Decimal128("1.5"))
    assert _src("numeric(12,2)", "1.50") != _tgt("numeric(12,2)", "1.50")
    _refused("numeric", "1" + "0" * 34)  # 35 digits
    assert _src("numeric", "1" * 34) == _tgt("numeric", Decimal128("1" * 34))


def test_money_is_its_amount_with_two_decimals() -> None:
    assert _src("money", "1234.56") == _tgt("money", "1234.56")
    assert _src("money", "-92233720368547758.08") == {"$decimal": "-92233720368547758.08"}


def test_floats_are_doubles_nan_and_infinity_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cm.FERRETDB, "on", False)  # a run in this process may have set it
    assert _src("real", "1.1") == _tgt("real", 1.1)
    assert _src("real", "-0") == _tgt("real", -0.0) != _tgt("real", 0.0)
    assert _src("double precision", "5e-324") == _tgt("double precision", 5e-324)
    assert _src("double precision", "1") == _tgt("double precision", 1.0)
    assert _tgt("double precision", 1) != _src("double precision", "1")
    for special in ('"NaN"', '"Infinity"', '"-Infinity"'):
        _refused("real", special)
        _refused("double precision", special)


def test_text_like_types_are_postgresql_text() -> None:
    for t in ("text", "character varying(20)", "character(10)", "dw_short_text", "dw_mood",
              "inet", "cidr", "macaddr", "bit(8)", "xml", "tsvector", "int4range", "tstzrange",
              "time(3) without time zone", "interval"):
        assert _src(t, '"a b "') == _tgt(t, "a b ") == "a b ", t
        assert _tgt(t, b"a") != "a"
    assert _src("character(10)", '"ab        "') != _tgt("character(10)", "ab")  # padding kept
    assert _src("interval", '"P1Y2M3DT4H5M6.78S"') != _tgt("interval", 36993906780000)
    # timetz: the source query already gives `(v AT TIME ZONE 'UTC')::text`
    assert _src("time(3) with time zone", '"03:04:58.123+00"') == _tgt(
        "time(3) with time zone", "03:04:58.123+00")


def test_dates_are_bson_dates_at_milliseconds_truncated() -> None:
    assert _src("date", '"2024-02-29"') == _tgt("date", dt.datetime(2024, 2, 29))
    assert _src("timestamp(6) without time zone", '"1970-01-02T00:00:00.123999"') == _tgt(
        "timestamp(6) without time zone", dt.datetime(1970, 1, 2, 0, 0, 0, 123000))
    assert _src("timestamp(6) with time zone", '"2000-02-29T12:34:56.654321+00:00"') == _tgt(
        "timestamp(6) with time zone", dt.datetime(2000, 2, 29, 12, 34, 56, 654000))
    assert _src("timestamp(6) with time zone", '"2000-02-29T12:34:56.654321+00:00"') != _tgt(
        "timestamp(6) with time zone", dt.datetime(2000, 2, 29, 12, 34, 56, 655000))
    assert _tgt("date", "2024-02-29") != _src("date", '"2024-02-29"')
    for t in ("date", "timestamp(3) without time zone", "timestamp(3) with time zone"):
        for v in ('"infinity"', '"-infinity"', '"4713-01-01 BC"'):
            _refused(t, v)
    _refused("timestamp(0) with time zone", '"10000-01-01T11:59:59+00:00"')


def test_bytea_is_binary_0_and_uuid_binary_4_only() -> None:
    assert _src("bytea", '"\\\\xdead00"') == _tgt("bytea", b"\xde\xad\x00")
    assert _src("bytea", '"\\\\x"') == _tgt("bytea", b"")
    assert _tgt("bytea", Binary(b"\xde", 5)) != _src("bytea", '"\\\\xde"')
    u = "00112233-4455-6677-8899-aabbccddeeff"
    assert _src("uuid", f'"{u}"') == _tgt("uuid", Binary(uuid.UUID(u).bytes, 4))
    assert _tgt("uuid", u) != _src("uuid", f'"{u}"')  # a string is a failure now
    assert _tgt("uuid", Binary(uuid.UUID(u).bytes, 3)) != _src("uuid", f'"{u}"')


def test_json_keeps_key_order_ints_and_doubles() -> None:
    for t in ("json", "jsonb"):
        source = _src(t, '{"b": 1, "a": [1.50, "x", null, {"c": true}], "d": -0.0}')
        assert source == _tgt(t, {"b": 1, "a": [1.5, "x", None, {"c": True}], "d": -0.0})
        assert source != _tgt(t, {"a": [1.5, "x", None, {"c": True}], "b": 1, "d": -0.0})
        assert source != _tgt(t, {"b": 1.0, "a": [1.5, "x", None, {"c": True}], "d": -0.0})
        assert source != _tgt(t, {"b": 1, "a": ["1.5", "x", None, {"c": True}], "d": -0.0})
        assert _src(t, '"just a string"') == _tgt(t, "just a string")
        assert _src(t, "123.4500") == _tgt(t, 123.45)
        for bad in ('{"a.b": 1}', '{"$c": 2}', '{"k\\u0000": 1}', "[[1]]", '[{"a": [[1]]}]',
                    "123456789012345678901234567890"):
            _refused(t, bad)
    assert _src("json", '{"a": 1, "a": 2}') == _tgt("json", {"a": 2})
    assert _src("json", '{"k": "\\u0000 NUL"}') == _tgt("json", {"k": "\x00 NUL"})


def test_hstore_is_a_mapping_and_point_a_document_of_doubles() -> None:
    assert _src("hstore", '{"b": "1", "a": null}') == _tgt("hstore", {"a": None, "b": "1"})
    assert _src("hstore", '{"b": "1"}') != _tgt("hstore", {"b": 1})
    _refused("hstore", '{"a.b": "1"}')
    _refused("hstore", '{"$a": "1"}')
    assert _src("point", '{"x" : 1.5, "y" : -0}') == _tgt("point", {"x": 1.5, "y": -0.0})
    assert _src("point", '{"x" : 1.5, "y" : 2}') != _tgt("point", {"x": 1.5, "y": 2})
    assert _src("point", '{"x" : 1.5, "y" : 2}') != _tgt("point", "(1.5,2)")


def test_arrays_are_lists_of_the_element_form() -> None:
    assert _src("integer[]", "[1, null, 3]") == _tgt("integer[]", [1, None, 3])
    assert _src("numeric[]", "[1.50, null]") == _tgt("numeric[]", ["1.50", None])
    u = "00112233-4455-6677-8899-aabbccddeeff"
    assert _src("uuid[]", f'["{u}"]') == _tgt("uuid[]", [Binary(uuid.UUID(u).bytes, 4)])
    assert _src("uuid[]", f'["{u}"]') != _tgt("uuid[]", [u])
    assert _src("time with time zone[]", '["03:04:58+00", null]') == _tgt(
        "time with time zone[]", ["03:04:58+00", None])
    _refused("integer[]", '{"$multidim": [[1, 2], [3, 4]]}')
    _refused("timestamp with time zone[]", '["infinity"]')
    _refused("jsonb[]", '[{"a": 1}, [1, 2]]')  # an array directly inside an array
    assert _src("jsonb[]", '[{"a": 1}, "s", null]') == _tgt("jsonb[]", [{"a": 1}, "s", None])
    assert _tgt("integer[]", "{1,2}") != _src("integer[]", "[1, 2]")


def test_unmapped_types_and_odd_names_are_refused_at_pre_flight() -> None:
    assert cm.kind_of("bit varying") is None
    assert cm.kind_of("interval[]") is None
    assert cm.kind_of("box") is None
    assert cm.kind_of("dw_mood[]") is not None
    assert cm.preflight_refusal(BY_ID["key-none-full"].tables[0]) == []
    assert cm.preflight_refusal(BY_ID["name-odd-columns"].tables[0]) == ["dot.col"]
    assert cm.preflight_refusal(BY_ID["name-dots"].tables[0]) == ["dot.col"]
    assert cm.preflight_refusal(BY_ID["limit-varbit"].tables[0]) == ["v"]
    assert cm.preflight_refusal(BY_ID["limit-interval_array"].tables[0]) == ["v"]
    dollar = TableDef("public", "x", (ColumnDef("id", "integer", lambda r: "1"),
                                      ColumnDef("$a", "integer", lambda r: "1")), key=("id",))
    assert cm.preflight_refusal(dollar) == ["$a"]
    refused = {c.id for c in BY_ID.values() if any(cm.preflight_refusal(t) is not None
                                                    for t in c.tables)}
    assert refused == {"key-none-full", "name-odd-columns", "name-dots", "limit-varbit",
                       "limit-interval_array", "name-double-quote"}
    # the written contracts say so
    for cid in ("key-none-full", "name-odd-columns", "name-dots"):
        assert BY_ID[cid].mongo.startswith("refused at pre-flight"), cid
    assert all(BY_LIMIT[c].preflight for c in ("limit-varbit", "limit-interval_array"))


def test_every_catalogue_type_has_a_mapping() -> None:
    for c in BY_ID.values():
        if c.kind == "type":
            assert cm.kind_of(c.tables[0].column("v").sql_type) is not None, c.id


def test_decimal_text_follows_the_exponent_rule() -> None:
    from decimal import Decimal

    assert cm.decimal_text(Decimal("1.50")) == "1.50"
    assert cm.decimal_text(Decimal("1E+30")) == "1000000000000000000000000000000"
    assert cm.decimal_text(Decimal("1E+31")) == "1E+31"
    assert cm.decimal_text(Decimal("1E-31")) == "1E-31"
    assert cm.decimal_text(Decimal("-0.0000001")) == "-0.0000001"


def test_ferretdb_reads_a_negative_zero_back_as_zero() -> None:
    cm.FERRETDB["on"] = True
    try:
        assert _src("double precision", "-0") == _tgt("double precision", 0.0)
        assert _src("jsonb", "-0.0") == _tgt("jsonb", 0.0)
    finally:
        cm.FERRETDB["on"] = False
    assert _src("double precision", "-0") != _tgt("double precision", 0.0)
