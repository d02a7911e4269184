"""PostgreSQL → MongoDB value mapping, shared by the CDC applier and the validator.

One function turns a source row (Python values as psycopg returns them) into the document the
target holds, so the applier writes exactly what the validator expects to read:

    primary key          → `_id` (a composite key → embedded document in key-column order);
                           key columns live only in `_id`
    numeric              → Decimal128 (exact), or the exact decimal string when the server has no
                           Decimal128 (FerretDB); NaN/Infinity refused
    double/real          → double; NaN/Infinity refused
    timestamptz          → BSON date in UTC, truncated to milliseconds (BSON's precision)
    timestamp            → BSON date of the wall-clock time read as UTC, truncated to milliseconds
    date                 → BSON date at midnight UTC
    time, timetz         → ISO string;   interval → int64 microseconds
    jsonb/json           → embedded document/array (keys with '.' or a leading '$', nested
                           arrays refused)
    bytea                → Binary subtype 0;   uuid → Binary subtype 4
    arrays               → arrays (multi-dimensional refused);   inet/cidr → string

A value the target cannot hold raises `UnsupportedValue(column, reason)` — never silently
altered — unless the column is listed in the table's `json_string_columns`, whose values are
always stored as a JSON string (NULL stays null).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, DecimalException
from typing import Any

from bson import Binary, Decimal128
from bson.binary import UuidRepresentation

from migwatch.errors import UnsupportedValue

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

__all__ = [
    "key_to_id",
    "row_to_document",
    "supports_decimal128",
    "to_json_text",
    "truncate_ms",
]


def supports_decimal128(build_info: Mapping[str, Any]) -> bool:
    """Whether a server (its `buildInfo` reply) stores Decimal128; FerretDB 1.x does not."""
    return "ferretdbVersion" not in build_info


def truncate_ms(value: dt.datetime) -> dt.datetime:
    """UTC, truncated to milliseconds: what a BSON date can hold of a timestamptz."""
    value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def row_to_document(row: Mapping[str, Any], primary_key: Sequence[str],
                    json_string_columns: Iterable[str] = (), *,
                    decimal128: bool = True) -> dict[str, Any]:
    """The MongoDB document for one source row; raises UnsupportedValue naming the column."""
    as_json = set(json_string_columns)
    if not primary_key:
        raise UnsupportedValue("(primary key)", "a MongoDB target needs a primary key for _id")
    missing = [k for k in primary_key if k not in row]
    if missing:
        raise UnsupportedValue(missing[0], "primary-key column missing from the row")
    doc: dict[str, Any] = {
        "_id": key_to_id([row[k] for k in primary_key], primary_key, decimal128=decimal128)
    }
    for column, value in row.items():
        if column in primary_key:
            continue
        _check_key(column, column)
        if column in as_json:
            doc[column] = None if value is None else to_json_text(value)
        else:
            doc[column] = _value(column, value, decimal128, in_json=False, in_array=False)
    return doc


def key_to_id(key_values: Sequence[Any] | Mapping[str, Any], primary_key: Sequence[str], *,
              decimal128: bool = True) -> Any:
    """`_id` of a key: the mapped value, or an embedded document for a compound key."""
    if isinstance(key_values, Mapping):
        values = [key_values[k] for k in primary_key]
    else:
        values = list(key_values)
    if len(values) != len(primary_key) or not primary_key:
        raise UnsupportedValue(",".join(primary_key) or "(primary key)",
                               f"expected {len(primary_key)} key value(s), got {len(values)}")
    mapped = []
    for column, value in zip(primary_key, values, strict=True):
        if value is None:
            raise UnsupportedValue(column, "primary-key value is NULL")
        if isinstance(value, list | tuple):
            raise UnsupportedValue(column, "an array cannot be part of _id")
        mapped.append(_value(column, value, decimal128, in_json=False, in_array=False))
    if len(primary_key) == 1:
        return mapped[0]
    for column in primary_key:
        _check_key(column, column)
    return dict(zip(primary_key, mapped, strict=True))


def _check_key(column: str, key: str) -> None:
    if not isinstance(key, str):
        raise UnsupportedValue(column, f"document key {key!r} is not a string")
    if "." in key:
        raise UnsupportedValue(column, f"key {key!r} contains '.'")
    if key.startswith("$"):
        raise UnsupportedValue(column, f"key {key!r} starts with '$'")
    if "\x00" in key:
        raise UnsupportedValue(column, "key contains a NUL character")


def _value(column: str, value: Any, decimal128: bool, in_json: bool, in_array: bool) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise UnsupportedValue(column, "integer outside the int64 range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedValue(column, f"{value!r} cannot be stored")
        return value
    if isinstance(value, Decimal):
        return _decimal(column, value, decimal128)
    if isinstance(value, dt.datetime):
        return truncate_ms(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if isinstance(value, bytes | bytearray | memoryview):
        return Binary(bytes(value), 0)
    if isinstance(value, uuid.UUID):
        return Binary.from_uuid(value, UuidRepresentation.STANDARD)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address
                  | ipaddress.IPv4Network | ipaddress.IPv6Network
                  | ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            _check_key(column, key)
            out[key] = _value(column, item, decimal128, in_json=True, in_array=False)
        return out
    if isinstance(value, list | tuple):
        if in_array:
            raise UnsupportedValue(column, "nested arrays cannot be stored")
        return [_value(column, v, decimal128, in_json, in_array=True) for v in value]
    raise UnsupportedValue(column, f"no mapping for values of type {type(value).__name__}")


def _decimal(column: str, value: Decimal, decimal128: bool) -> Decimal128 | str:
    if not value.is_finite():
        raise UnsupportedValue(column, f"numeric {value} cannot be stored")
    if not decimal128:
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)  # finite: never 'n', 'N' or 'F'
        return format(value, "f") if -30 <= exponent <= 30 else str(value)
    try:
        return Decimal128(value)
    except DecimalException as exc:
        raise UnsupportedValue(column, "numeric has more than the 34 digits Decimal128 holds") \
            from exc


def to_json_text(value: Any) -> str:
    """Compact JSON text of a source value, for columns the spec stores as JSON strings.

    Numbers keep their exact decimal text; NaN/Infinity become strings; bytes become PostgreSQL's
    hex form (`\\x..`); dates and times ISO 8601; object keys keep the order given.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json.dumps(repr(value))
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return json.dumps(value.isoformat())
    if isinstance(value, dt.timedelta):
        return str((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds)
    if isinstance(value, bytes | bytearray | memoryview):
        return json.dumps("\\x" + bytes(value).hex())
    if isinstance(value, Mapping):
        items = (json.dumps(str(k), ensure_ascii=False) + ":" + to_json_text(v)
                 for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json_text(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
