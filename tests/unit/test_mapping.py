"""The PostgreSQL → MongoDB value mapping: every type, and every value the target cannot hold."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import uuid
from decimal import Decimal

import pytest
from bson import BSON, Binary, Decimal128

from migwatch.errors import PermanentError, UnsupportedValue
from migwatch.mapping import key_to_id, row_to_document, supports_decimal128, to_json_text

CET = dt.timezone(dt.timedelta(hours=1))


def test_every_type_maps_and_encodes_as_bson() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    row = {
        "id": 7, "price": Decimal("1.50"), "ratio": 0.25, "flag": False, "name": "Zoë 東京",
        "empty": "", "missing": None,
        "at": dt.datetime(2024, 1, 1, 1, 0, 0, 123456, tzinfo=CET),
        "naive": dt.datetime(2024, 1, 1, 0, 0, 0, 999999), "day": dt.date(2024, 2, 29),
        "clock": dt.time(12, 30, 1, 5), "span": dt.timedelta(days=1, microseconds=3),
        "doc": {"b": 1, "a": [1, "x", None, {"c": 2.5}]}, "blob": b"\x00\xff", "ref": u,
        "tags": ["a", "b"], "addr": ipaddress.ip_address("10.0.0.1"),
    }
    doc = row_to_document(row, ["id"])
    assert doc["_id"] == 7 and "id" not in doc
    assert doc["price"] == Decimal128("1.50")
    assert doc["price"].to_decimal().as_tuple().exponent == -2
    assert doc["at"] == dt.datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=dt.UTC)
    assert doc["naive"] == dt.datetime(2024, 1, 1, 0, 0, 0, 999000, tzinfo=dt.UTC)
    assert doc["day"] == dt.datetime(2024, 2, 29, tzinfo=dt.UTC)
    assert doc["clock"] == "12:30:01.000005"
    assert doc["span"] == 86_400_000_003
    assert doc["doc"] == {"b": 1, "a": [1, "x", None, {"c": 2.5}]}
    assert doc["blob"] == Binary(b"\x00\xff", 0)
    assert doc["ref"] == Binary(u.bytes, 4)
    assert doc["tags"] == ["a", "b"] and doc["addr"] == "10.0.0.1"
    assert doc["empty"] == "" and doc["missing"] is None and doc["flag"] is False
    BSON.encode(doc)  # every mapped value is encodable


def test_composite_key_is_embedded_document_in_key_order() -> None:
    doc = row_to_document({"line_no": 2, "order_id": 9, "qty": 1}, ["order_id", "line_no"])
    assert list(doc["_id"].items()) == [("order_id", 9), ("line_no", 2)]
    assert doc == {"_id": {"order_id": 9, "line_no": 2}, "qty": 1}
    assert key_to_id((9, 2), ["order_id", "line_no"]) == doc["_id"]
    assert key_to_id({"line_no": 2, "order_id": 9}, ["order_id", "line_no"]) == doc["_id"]
    assert key_to_id(["SKU-1"], ["sku"]) == "SKU-1"


def test_without_decimal128_numeric_is_exact_string() -> None:
    doc = row_to_document({"id": Decimal("10"), "v": Decimal("1.50"), "w": Decimal("1E-40")},
                          ["id"], decimal128=False)
    assert doc == {"_id": "10", "v": "1.50", "w": "1E-40"}
    assert supports_decimal128({"version": "7.0.42", "ferretdbVersion": "v1.24"}) is False
    assert supports_decimal128({"version": "7.0.14"}) is True


@pytest.mark.parametrize(("value", "reason"), [
    (Decimal("NaN"), "NaN"),
    (Decimal("Infinity"), "Infinity"),
    (float("nan"), "nan"),
    (float("-inf"), "inf"),
    ([[1, 2], [3, 4]], "nested arrays"),
    ({"a.b": 1}, "contains '.'"),
    ({"ok": {"$where": 1}}, "starts with '$'"),
    ({"list": [[1]]}, "nested arrays"),
    (Decimal("1." + "1" * 40), "34"),
    (object(), "no mapping"),
])
def test_unsupported_values_name_the_column(value: object, reason: str) -> None:
    with pytest.raises(UnsupportedValue) as info:
        row_to_document({"id": 1, "bad_col": value}, ["id"])
    assert info.value.column == "bad_col"
    assert reason in info.value.reason
    assert isinstance(info.value, PermanentError)


def test_json_string_columns_hold_what_the_target_cannot() -> None:
    row = {"id": 1, "grid": [[1, 2], [3]], "odd": {"a.b": {"$x": Decimal("1.50")}},
           "score": Decimal("NaN"), "none": None}
    doc = row_to_document(row, ["id"], json_string_columns=("grid", "odd", "score", "none"))
    assert doc["grid"] == "[[1,2],[3]]"
    assert doc["odd"] == '{"a.b":{"$x":1.50}}'
    assert doc["score"] == '"NaN"'
    assert doc["none"] is None
    assert json.loads(doc["odd"]) == {"a.b": {"$x": 1.5}}
    BSON.encode(doc)


def test_json_text_is_exact_and_readable() -> None:
    assert to_json_text({"n": "Zoë", "b": b"\x01", "t": dt.date(2024, 1, 2)}) == \
        '{"n":"Zoë","b":"\\\\x01","t":"2024-01-02"}'
    assert to_json_text(Decimal("123456789012345678901234567890.123")) == \
        "123456789012345678901234567890.123"


def test_bad_keys_are_refused() -> None:
    with pytest.raises(UnsupportedValue, match="NULL"):
        key_to_id([None], ["id"])
    with pytest.raises(UnsupportedValue, match="array"):
        key_to_id([[1]], ["id"])
    with pytest.raises(UnsupportedValue, match="primary key"):
        row_to_document({"v": 1}, [])
    with pytest.raises(UnsupportedValue) as info:
        row_to_document({"id": 1, "a.b": 1}, ["id"])
    assert info.value.column == "a.b"
