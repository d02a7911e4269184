"""The PostgreSQL → MongoDB value form without servers: each type from both of its inputs (the
decoder's rebuild of Debezium's event, and the source's text), refusals naming the column,
the comparison text, and the table-level refusals pre-flight reports. The round trip through
a real FerretDB and Debezium is tests/integration/test_mongo_values.py and the differential
harness (docs/types.md)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import BSON, Binary, Decimal128, Int64

from migwatch.connectors.postgres import Column, TableInfo
from migwatch.decoding import UNCHANGED, ColumnDecoder
from migwatch.errors import UnsupportedValue
from migwatch.targets.mongo.values import (
    DocumentForm,
    ValueForm,
    canonical,
    interval_text,
    key_value,
    parse_hstore,
    parse_interval,
)

UTC = dt.UTC


def form(type_name: str, decimal128: bool = True, **kw: Any) -> ValueForm:
    return ValueForm(Column("c", type_name, False, **kw), decimal128=decimal128)


def from_event(type_name: str, value: Any) -> Any:
    """What the applier stores for Debezium's JSON `value` of a column of `type_name`."""
    decoded = ColumnDecoder([Column("c", type_name, False)]).decode({"c": value})["c"]
    return form(type_name).to_bson(decoded)


# ----------------------------------------------------------------------------- both inputs agree
@pytest.mark.parametrize(("type_name", "event", "source_text", "stored"), [
    ("integer", 7, "7", 7),
    ("bigint", -2**63, str(-2**63), -2**63),
    ("numeric(12,2)", "1234.50", "1234.50", Decimal128("1234.50")),
    ("money", "-1234.56", "-1234.56", Decimal128("-1234.56")),
    ("double precision", 0.1, "0.1", 0.1),
    ("real", 1.1, "1.1", 1.1),
    ("boolean", True, "t", True),
    ("text", "Zoë 東京", "Zoë 東京", "Zoë 東京"),
    ("character(5)", "ab   ", "ab   ", "ab   "),
    ("bit(4)", "BQ==", "0101", "0101"),
    ("date", 19723, "2024-01-01", dt.datetime(2024, 1, 1, tzinfo=UTC)),
    ("timestamp(6) without time zone", 1704067200123456, "2024-01-01 00:00:00.123456",
     dt.datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)),
    ("timestamp(3) without time zone", 1704067200123, "2024-01-01 00:00:00.123",
     dt.datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)),
    ("timestamp with time zone", "2024-01-01T10:00:00.999999Z", "2024-01-01 10:00:00.999999+00",
     dt.datetime(2024, 1, 1, 10, 0, 0, 999000, tzinfo=UTC)),
    ("time without time zone", 30600120000, "08:30:00.12", "08:30:00.12"),
    ("time without time zone", 86400000000, "24:00:00", "24:00:00"),
    ("time with time zone", "03:04:58.123Z", "08:34:58.123+05:30", "03:04:58.123+00"),
    ("time with time zone", "00:00:00Z", "24:00:00+00", "00:00:00+00"),
    ("interval", "P1Y2M3DT4H5M6.78S", "P1Y2M3DT4H5M6.78S", "P1Y2M3DT4H5M6.78S"),
    ("interval", "P0Y0M-1DT2H0M0S", "P-1DT2H", "P-1DT2H"),
    ("interval", "P0Y0M0DT0H0M0S", "PT0S", "PT0S"),
    ("jsonb", '{"a": [1, 2.5], "b": null}', '{"a": [1, 2.5], "b": null}',
     {"a": [1, 2.5], "b": None}),
    ("bytea", base64.b64encode(b"\x00\xff").decode(), "\\x00ff", Binary(b"\x00\xff", 0)),
    ("uuid", "12345678-1234-5678-1234-567812345678", "12345678-1234-5678-1234-567812345678",
     Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4)),
    ("hstore", '{"a":"1","b c":null}', '"a"=>"1", "b c"=>NULL', {"a": "1", "b c": None}),
    ("point", {"x": 1.5, "y": -2.0, "wkb": "AQ", "srid": None}, "(1.5,-2)",
     {"x": 1.5, "y": -2.0}),
    ("inet", "10.0.0.1/8", "10.0.0.1/8", "10.0.0.1/8"),
    ("integer[]", [1, None, 3], ["1", None, "3"], [1, None, 3]),
    ("timestamp with time zone[]", ["2024-01-01T00:00:00Z"], ["2024-01-01 00:00:00+00"],
     [dt.datetime(2024, 1, 1, tzinfo=UTC)]),
    ("bytea[]", [base64.b64encode(b"\x01").decode()], ["\\x01"], [Binary(b"\x01", 0)]),
])
def test_an_event_and_the_source_text_land_as_the_same_value(
        type_name: str, event: Any, source_text: Any, stored: Any) -> None:
    written = from_event(type_name, event)
    read = form(type_name).to_bson(source_text)
    assert canonical(written) == canonical(read) == canonical(stored), (written, read)


def test_numeric_keeps_its_scale_and_is_exact_text_without_decimal128() -> None:
    assert form("numeric", decimal128=False).to_bson(Decimal("1.50")) == "1.50"
    assert form("numeric", decimal128=False).to_bson("1E-40") == "1E-40"
    assert canonical(form("numeric").to_bson("1.50")) != canonical(form("numeric").to_bson("1.5"))
    digits = "1" * 40
    assert form("numeric", decimal128=False).to_bson(digits) == digits


@pytest.mark.parametrize(("type_name", "value", "why"), [
    ("numeric", "NaN", "NaN"), ("numeric", Decimal("Infinity"), "Infinity"),
    ("numeric", "1" * 35, "34 digits"), ("double precision", "NaN", "NaN"),
    ("real", "-Infinity", "-Infinity"), ("date", "infinity", "no BSON date"),
    ("date", "0044-03-15 BC", "no BSON date"),
    ("timestamp without time zone", "10000-01-01 00:00:00", "no BSON date"),
    ("timestamp with time zone", "-infinity", "no BSON date"),
    ("jsonb", '{"a.b": 1}', "contains '.'"), ("jsonb", '{"$x": 1}', "starts with '\\$'"),
    ("json", "[[1]]", "nested arrays"), ("json", "18446744073709551616", "int64"),
    ("hstore", '"$k"=>"v"', "starts with '\\$'"), ("integer[]", [[1, 2], [3, 4]],
                                                 "multi-dimensional"),
    ("bigint", 2**63, "int64"),
])
def test_what_the_target_cannot_hold_is_refused_naming_the_column(
        type_name: str, value: Any, why: str) -> None:
    with pytest.raises(UnsupportedValue, match=why) as caught:
        form(type_name).to_bson(value)
    assert caught.value.column == "c"


def test_a_domain_maps_by_its_base_type_and_an_enum_as_text() -> None:
    assert form("dw_ts", base="timestamp(3) without time zone").to_bson(
        "2024-01-01 00:00:00.5") == dt.datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert form("mood", enum=True).to_bson("happy") == "happy"
    assert form("mood[]", enum=True).to_bson(["a", None]) == ["a", None]


def test_json_string_columns_hold_the_json_text_or_the_value_text() -> None:
    info = TableInfo("public", "t", (Column("id", "integer", True), Column("doc", "jsonb", False),
                                     Column("score", "numeric", False)), ("id",))
    f = DocumentForm(info, json_string_columns=("doc", "score"))
    doc = f.document({"id": 1, "doc": '{"a.b": [[1]]}', "score": Decimal("NaN")})
    assert doc == {"_id": 1, "doc": '{"a.b": [[1]]}', "score": '"NaN"'}
    BSON.encode(doc)


# ----------------------------------------------------------------------------- text forms
@pytest.mark.parametrize(("text", "parts", "pg"), [
    ("P1Y2M3DT4H5M6.78S", (14, 3, 14_706_780_000), "P1Y2M3DT4H5M6.78S"),
    ("P-1Y-2M", (-14, 0, 0), "P-1Y-2M"),
    ("PT-0.5S", (0, 0, -500_000), "PT-0.5S"),
    ("P0Y0M0DT-1H-30M0.0S", (0, 0, -5_400_000_000), "PT-1H-30M"),
    ("P2W", (0, 14, 0), "P14D"),
    ("P0Y0M0DT0H0M1.0E-6S", (0, 0, 1), "PT0.000001S"),
])
def test_intervals_parse_from_either_iso_form_and_print_as_postgresql(
        text: str, parts: tuple[int, int, int], pg: str) -> None:
    assert parse_interval(text) == parts
    assert interval_text(*parts) == pg


def test_hstore_text_with_quotes_escapes_and_nulls() -> None:
    assert parse_hstore('"a"=>"1", "q\\"x"=>"y\\\\z", "n"=>NULL') == {
        "a": "1", 'q"x': "y\\z", "n": None}
    assert parse_hstore("") == {}
    with pytest.raises(ValueError):
        parse_hstore("a=>1")


def test_canonical_text_ignores_storage_detail_and_keeps_types() -> None:
    assert canonical(Int64(5)) == canonical(5)
    assert canonical(dt.datetime(2024, 1, 1)) == canonical(dt.datetime(2024, 1, 1, tzinfo=UTC))
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    assert canonical(1) != canonical(1.0)
    assert canonical("") != canonical(None)
    assert canonical([1, 2]) != canonical([2, 1])
    assert canonical(Binary(b"\x01", 0)) != canonical(Binary(b"\x01", 4))
    assert canonical("1") != canonical(1)


# ----------------------------------------------------------------------------- tables and keys
def test_pre_flight_refusals_name_the_table_shape_and_columns() -> None:
    keyless = TableInfo("public", "t", (Column("a", "integer", False),), ())
    assert "needs a key for _id" in DocumentForm(keyless).refusals()[0]
    odd = TableInfo("public", "t", (Column("id", "integer", True), Column("a.b", "text", False),
                                    Column("$c", "text", False), Column("bx", "box", False),
                                    Column("vb", "bit varying(5)", False)), ("id",))
    got = " | ".join(DocumentForm(odd).refusals())
    assert "column 'a.b'" in got and "column '$c'" in got
    assert "column 'bx' (box): no MongoDB form" in got
    assert "column 'vb'" in got and "length" in got
    jkey = TableInfo("public", "t", (Column("id", "jsonb", True),), ("id",))
    assert "cannot be part of _id" in DocumentForm(jkey).refusals()[0]


def test_ids_and_keys_round_trip() -> None:
    info = TableInfo("public", "t", (Column("k", "uuid", True), Column("n", "integer", True),
                                     Column("v", "text", False)), ("k", "n"))
    f = DocumentForm(info)
    u = uuid.uuid4()
    _id = f.id((str(u), 3))
    assert _id == {"k": Binary(u.bytes, 4), "n": 3}
    assert key_value(_id["k"], info.columns[0]) == u
    assert f.fields({"k": str(u), "n": 3, "v": UNCHANGED}) == {"v": UNCHANGED}
    assert key_value(Decimal128("1.50"), Column("x", "numeric", True)) == Decimal("1.50")
    with pytest.raises(TypeError):
        key_value(str(u), info.columns[0])  # a uuid stored as a string is not the key


def test_a_real_lands_as_its_shortest_decimal_whichever_width_arrived() -> None:
    real = form("real")
    for sent, stored in ((1.17549435e-38, 1.1754944e-38), (310772992.0, 310773000.0),
                         (0.10000000149011612, 0.1), ("1e-45", 1e-45)):
        assert real.to_bson(sent) == stored
    assert form("double precision").to_bson(310772992.0) == 310772992.0


def test_an_array_inside_a_json_array_element_is_refused() -> None:
    with pytest.raises(UnsupportedValue, match="nested arrays") as caught:
        form("jsonb[]").to_bson(['{"a": 1}', "[1, 2]"])
    assert caught.value.column == "c"
    assert form("jsonb[]").to_bson(['{"a": [1]}', "3"]) == [{"a": [1]}, 3]
