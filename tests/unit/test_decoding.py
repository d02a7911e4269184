"""Debezium values decoded into the column's Python type, for each way Connect may send a
numeric: text (decimal.handling.mode=string) or Connect's Decimal bytes with the scale in the
embedded schema (precise) — including base64 text that also reads as a number."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import orjson
import pytest

from migwatch.connectors.postgres import Column
from migwatch.decoding import ColumnDecoder, SkipEvent
from migwatch.decoding import load_value as _load_value

COLUMNS = [Column("id", "bigint", True), Column("price", "numeric(12,2)", True)]


def envelope(price: Any, price_schema: dict[str, Any]) -> bytes:
    row_schema = {"type": "struct", "fields": [{"field": "id", "type": "int64"},
                                               {"field": "price", **price_schema}]}
    return orjson.dumps({
        "schema": {"type": "struct", "fields": [{"field": "before", **row_schema},
                                                 {"field": "after", **row_schema}]},
        "payload": {"op": "c", "after": {"id": 1, "price": price}}})


def decoded(raw: bytes) -> dict[str, Any]:
    payload, schema = _load_value(raw)
    return ColumnDecoder(COLUMNS).decode(payload["after"], schema)


def precise(value: Decimal, scale: int) -> str:
    """Connect's Decimal: the unscaled value, big-endian two's complement, minimal length."""
    unscaled = int(value.scaleb(scale))
    size = (unscaled.bit_length() + 8) // 8
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def test_text_numerics_keep_their_scale() -> None:
    got = decoded(envelope("1234.50", {"type": "string"}))
    assert got["price"] == Decimal("1234.50") and str(got["price"]) == "1234.50"


@pytest.mark.parametrize("value", [Decimal("12.34"), Decimal("-0.01"), Decimal("99999.99")])
def test_connect_decimal_bytes_use_the_schema_scale(value: Decimal) -> None:
    schema = {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
              "parameters": {"scale": "2"}}
    assert decoded(envelope(precise(value, 2), schema))["price"] == value


def test_base64_that_reads_as_a_number_is_still_bytes_when_the_schema_says_so() -> None:
    schema = {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
              "parameters": {"scale": "2"}}
    raw = base64.b64decode("1234")  # valid base64 and a valid Decimal at once
    expected = Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-2)
    assert decoded(envelope("1234", schema))["price"] == expected != Decimal("1234")


def test_schemas_off_text_numeric_and_an_unknown_column() -> None:
    dec = ColumnDecoder(COLUMNS)
    assert dec.decode({"id": 1, "price": "0.10"}, None)["price"] == Decimal("0.10")
    with pytest.raises(SkipEvent, match="'nope' is not in the table"):
        dec.decode({"id": 1, "nope": 1}, None)


# --------------------------------------------------------------- by the catalog's declared type
# (the encodings asserted here were observed from Debezium 3.6 on the real stack)
TYPED = [Column("ts0", "timestamp(0) without time zone", False),
         Column("ts3", "timestamp(3) without time zone", False),
         Column("ts6", "timestamp without time zone", False),
         Column("tz", "timestamp with time zone", False), Column("d", "date", False),
         Column("t", "time without time zone", False), Column("b3", "bit(3)", False),
         Column("hs", "hstore", False), Column("pt", "point", False),
         Column("tsa", "timestamp without time zone[]", False),
         Column("big", "text", False), Column("bb", "bytea", False),
         Column("ia", "integer[]", False), Column("ua", "uuid[]", False),
         Column("f", "double precision", False)]


def pg(row: dict[str, Any]) -> dict[str, Any]:
    """The given columns only (decoded as an update's image, whose other columns are left)."""
    got = ColumnDecoder(TYPED).decode(row, update=True)
    return {k: v for k, v in got.items() if k in row}


def test_timestamp_units_come_from_the_declared_precision_not_the_magnitude() -> None:
    # 9999-12-31 23:59:59.999 in a timestamp(3) is milliseconds: it used to land in 1978
    assert pg({"ts3": 253402300799999})["ts3"] == "9999-12-31 23:59:59.999000"
    assert pg({"ts6": 253402300799999999})["ts6"] == "9999-12-31 23:59:59.999999"
    assert pg({"ts0": 0})["ts0"] == "1970-01-01 00:00:00.000000"
    assert pg({"tsa": [1577836800500000, None]})["tsa"] == ["2020-01-01 00:00:00.500000", None]


def test_infinity_and_bc_values_arrive_as_postgres_text() -> None:
    assert pg({"ts0": 9223372036825200, "ts3": -9223372036832400}) == {
        "ts0": "infinity", "ts3": "-infinity"}
    assert pg({"ts6": 9223372036825200000})["ts6"] == "infinity"
    assert pg({"tz": "infinity"})["tz"] == "infinity"
    # snapshot and stream send different day numbers for a date's ±infinity
    assert [pg({"d": v})["d"] for v in (-622191234, -625821272, -2147472692, -2147472691)] == [
        "infinity", "-infinity", "infinity", "-infinity"]
    assert pg({"ts6": -62167219200000000})["ts6"] == "0001-01-01 00:00:00.000000 BC"
    assert pg({"tz": "-0043-03-15T12:00:00.000000Z"})["tz"] == "0044-03-15 12:00:00.000000+00 BC"
    assert pg({"d": -719528})["d"] == "0001-01-01 BC"
    assert pg({"t": 86400000000})["t"] == "24:00:00.000000"


def test_bits_hstore_point() -> None:
    assert pg({"b3": "BQ=="})["b3"] == "101"
    assert pg({"hs": '{"a":"1","b c":null,"q\\"x":"y"}'})["hs"] == \
        '"a"=>"1", "b c"=>NULL, "q\\"x"=>"y"'
    assert pg({"pt": {"x": 1.5, "y": 2.0, "wkb": "AQ", "srid": None}})["pt"] == "(1.5,2.0)"


def test_unchanged_toasted_values_are_marked_in_every_encoding() -> None:
    from migwatch.decoding import PLACEHOLDER, UNCHANGED

    got = pg({"big": PLACEHOLDER, "bb": base64.b64encode(PLACEHOLDER.encode()).decode(),
              "ia": list(PLACEHOLDER.encode()), "ua": ["b68a35a7-17ad-35b3-af2a-ae46edb4545a"],
              "tsa": [PLACEHOLDER]})
    assert all(v is UNCHANGED for v in got.values()), got
    # a real NULL stays NULL
    assert pg({"bb": None, "big": "x"}) == {"bb": None, "big": "x"}


def test_numeric_infinity_as_debezium_names_it() -> None:
    dec = ColumnDecoder([Column("n", "numeric", False)])
    assert dec.decode({"n": "POSITIVE_INFINITY"})["n"] == Decimal("Infinity")
    assert dec.decode({"n": "NEGATIVE_INFINITY"})["n"] == Decimal("-Infinity")


def test_a_multi_dimensional_text_array_debezium_mangled_is_refused_naming_the_column() -> None:
    dec = ColumnDecoder([Column("tags", "text[]", False)])
    with pytest.raises(SkipEvent, match="'tags': a multi-dimensional array"):
        dec.decode({"tags": ["[Ljava.lang.String;@4ae5da95", "[Ljava.lang.String;@1b2c3d"]})
    assert dec.decode({"tags": ["[L not java", "x"]})["tags"] == ["[L not java", "x"]


def test_a_column_left_out_of_a_whole_row_is_refused_and_of_an_update_kept() -> None:
    from migwatch.decoding import FROM_SOURCE, UNCHANGED

    dec = ColumnDecoder([Column("id", "integer", True), Column("iv", "interval[]", False),
                         Column("fl", "double precision[]", False),
                         Column("tags", "text[]", False)])
    with pytest.raises(SkipEvent, match="'iv' is not in the event"):
        dec.decode({"id": 1, "fl": None, "tags": None})
    got = dec.decode({"id": 1, "fl": None, "tags": None}, update=True)
    assert got == {"id": 1, "iv": UNCHANGED, "fl": FROM_SOURCE, "tags": None}
    full = ColumnDecoder([Column("fl", "double precision[]", False)], full_identity=True)
    assert full.decode({"fl": None}, update=True) == {"fl": None}
