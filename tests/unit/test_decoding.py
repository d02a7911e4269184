"""Debezium values decoded into the column's Python type, for each way Connect may send a
numeric: text (decimal.handling.mode=string) or Connect's Decimal bytes with the scale in the
embedded schema (precise) — including base64 text that also reads as a number."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import orjson
import pytest

from migwatch.applier import ColumnDecoder, SkipEvent, _load_value
from migwatch.connectors.postgres import Column

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
