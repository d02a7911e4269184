"""Canonical forms: the text of a value that makes equal values hash equal across engines.

Each source column has a *kind* derived from its PostgreSQL type. For a comparison that involves
MongoDB, PostgreSQL renders every value to canonical text in SQL (`postgres.PostgresDialect`) and
migwatch renders the MongoDB document's values to the same text here, then both hash
`md5((text1,text2,…))` — the row wrapped the way PostgreSQL prints a record, so NULL (nothing) and
'' (`""`) differ and no separator is ambiguous.

    numeric       trailing zeros trimmed (1.0 == 1.00), NaN as 'NaN'
    float         PostgreSQL's shortest round-trip text of the type (float4: of the 32-bit
                  value, whether a driver handed over its shortest decimal or widened it)
    timestamptz   UTC, 'YYYY-MM-DD HH:MM:SS[.fff]+00', at the comparison's precision
    jsonb, json   PostgreSQL's jsonb text: keys ordered by (byte length, bytes) — key order of
                  the input is irrelevant
    bytea         '\\x' + lowercase hex;  uuid  lowercase 8-4-4-4-12;  boolean 'true'/'false'
    arrays        PostgreSQL's array text
The rendering of MongoDB values is exact for every kind the mapping stores natively; where it
cannot be (e.g. a jsonb number 1.50 that the target holds as the double 1.5) a range's hash
differs and the rows are then compared value by value, so such cases cost time, never a wrong
verdict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import struct
import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from bson import Binary, Decimal128

MICROSECONDS = "microseconds"
MILLISECONDS = "milliseconds"

_INT = {"smallint", "integer", "bigint", "oid"}
_FLOAT4 = {"real"}
_FLOAT8 = {"double precision"}
_TEXT = {"text", "name", "citext"}
_TEXT_PREFIX = ("character varying",)


def column_kind(type_name: str) -> str:
    """The canonical kind of a PostgreSQL type as `format_type()` prints it."""
    t = type_name.strip().lower()
    if t.endswith("[]"):
        return "array:" + column_kind(t[:-2])
    if t in _INT:
        return "int"
    if t.startswith("numeric") or t.startswith("decimal"):
        return "numeric"
    if t in _FLOAT4:
        return "float4"
    if t in _FLOAT8:
        return "float8"
    if t == "boolean":
        return "bool"
    if t in _TEXT or t.startswith(_TEXT_PREFIX):
        return "text"
    if t == "character" or t.startswith("character(") or t == "bpchar":
        return "bpchar"
    if t.startswith("timestamp"):
        return "timestamptz" if "with time zone" in t else "timestamp"
    if t == "date":
        return "date"
    if t.startswith("time"):
        return "timetz" if "with time zone" in t else "time"
    if t.startswith("interval"):
        return "interval"
    if t in ("jsonb", "json", "bytea", "uuid"):
        return t
    return "other"


# ----------------------------------------------------------------------------- hashing
def row_hash(text: str) -> int:
    """The 64-bit row hash both engines compute: md5's first 8 bytes as a signed integer."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big", signed=True)


_RECORD_QUOTE = re.compile(r'[",\\() \t\n\r\v\f]')


def record_text(values: Iterable[str | None]) -> str:
    """PostgreSQL's record text of column texts: `(a,,"",b)` — NULL empty, '' quoted."""
    parts = []
    for v in values:
        if v is None:
            parts.append("")
        elif v == "" or _RECORD_QUOTE.search(v):
            parts.append('"' + v.replace("\\", "\\\\").replace('"', '""') + '"')
        else:
            parts.append(v)
    return "(" + ",".join(parts) + ")"


_ARRAY_QUOTE = re.compile(r'[{}",\\ \t\n\r\v\f]')


def _array_text(items: Sequence[Any], elem_kind: str, precision: str) -> str:
    out = []
    for item in items:
        if item is None:
            out.append("NULL")
            continue
        if isinstance(item, list):
            out.append(_array_text(item, elem_kind, precision))
            continue
        t = _element_text(item, elem_kind, precision)
        if t == "" or t.lower() == "null" or _ARRAY_QUOTE.search(t):
            t = '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(t)
    return "{" + ",".join(out) + "}"


def _element_text(value: Any, kind: str, precision: str) -> str:
    """An array element as the type's output function prints it (booleans t/f, numeric as is)."""
    if kind == "bool":
        return "t" if value else "f"
    if kind == "numeric":
        d = _to_decimal(value)
        return "NaN" if d.is_nan() else format(d, "f")
    if kind == "bpchar":
        return str(value)
    return value_text(value, kind, precision) or ""


# ----------------------------------------------------------------------------- values
def value_text(value: Any, kind: str, precision: str = MILLISECONDS) -> str | None:
    """Canonical text of a MongoDB-side value (as stored, or as `row_to_document` maps it)."""
    if value is None:
        return None
    if kind == "int":
        return str(int(value))
    if kind == "numeric":
        return numeric_text(_to_decimal(value))
    if kind == "float4":
        return float4_text(float(value))
    if kind == "float8":
        return float_text(float(value))
    if kind == "bool":
        return "true" if value else "false"
    if kind == "text":
        return str(value)
    if kind == "bpchar":
        return str(value).rstrip(" ")
    if kind in ("timestamptz", "timestamp"):
        return timestamp_text(_to_datetime(value), precision, with_zone=kind == "timestamptz")
    if kind == "date":
        return (value.date() if isinstance(value, dt.datetime) else value).isoformat()
    if kind == "time":
        return _time_text(dt.time.fromisoformat(value) if isinstance(value, str) else value)
    if kind == "timetz":
        return _time_text(dt.time.fromisoformat(value) if isinstance(value, str) else value)
    if kind == "interval":
        if isinstance(value, dt.timedelta):
            return str((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds)
        return str(int(value))
    if kind in ("jsonb", "json"):
        return jsonb_text(value)
    if kind == "bytea":
        return "\\x" + bytes(value).hex()
    if kind == "uuid":
        return str(_to_uuid(value))
    if kind.startswith("array:"):
        return _array_text(value, kind[6:], precision)
    return str(value)


def json_column_text(text: str, kind: str, precision: str = MILLISECONDS) -> str | None:
    """Canonical text of a value the target stores as a JSON string (spec `json_string_columns`)."""
    parsed = json.loads(text, parse_float=Decimal)
    if kind in ("jsonb", "json"):
        return jsonb_text(parsed)
    if kind == "bytea" and isinstance(parsed, str) and parsed.startswith("\\x"):
        return parsed
    return value_text(parsed, kind, precision)


def numeric_text(d: Decimal) -> str:
    """`trim_scale(x)::text`: 1.50 → '1.5', 100 → '100', 0.00 → '0'."""
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    if d == 0:
        return "0"
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    kept = list(digits)
    while exponent < 0 and len(kept) > 1 and kept[-1] == 0:  # not normalize(): it rounds to
        kept.pop()                                              # the context's 28 digits
        exponent += 1
    return format(Decimal((sign, tuple(kept), exponent)), "f")


def float_text(x: float, exp_from: int = 15, shortest: str | None = None) -> str:
    """PostgreSQL's float8 output (shortest round-trip; exponent form outside [1e-4, 1e15)).

    `exp_from` is the decimal exponent where the exponent form starts (15 for float8, 6 for
    float4); `shortest` the value's shortest decimal when that is not `repr(x)` (float4)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    d = Decimal(shortest or repr(x))
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    while len(digits) > 1 and digits[-1] == 0:  # repr's trailing ".0"
        digits = digits[:-1]
        exponent += 1
    sci = len(digits) - 1 + exponent
    if -4 <= sci < exp_from:
        return format(d.normalize(), "f") if d != 0 else ("-0" if sign else "0")
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if sci < 0 else '+'}{abs(sci):02d}"


def float4_text(x: float) -> str:
    """PostgreSQL's float4 output of the 32-bit value nearest `x`: its shortest decimal that
    reads back as the same float4 (so 0.1 and the widened 0.10000000149011612 both give
    '0.1'), in exponent form from 1e+06."""
    if x != x or x in (float("inf"), float("-inf")):
        return float_text(x)
    try:
        f32 = struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return float_text(x)
    for precision in range(1, 10):
        text = f"{f32:.{precision}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == f32:
            break
    return float_text(f32, exp_from=6, shortest=text)


def timestamp_text(value: dt.datetime, precision: str, with_zone: bool) -> str:
    """'YYYY-MM-DD HH:MM:SS[.ffffff trimmed][+00]' in UTC, truncated to `precision`."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    micro = value.microsecond
    if precision == MILLISECONDS:
        micro -= micro % 1000
    text = (f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}")
    if micro:
        text += f".{micro:06d}".rstrip("0")
    return text + ("+00" if with_zone else "")


def _time_text(value: dt.time) -> str:
    text = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset()
    if offset is not None:
        secs = int(offset.total_seconds())
        sign = "-" if secs < 0 else "+"
        secs = abs(secs)
        text += f"{sign}{secs // 3600:02d}"
        if secs % 3600:
            text += f":{secs % 3600 // 60:02d}"
    return text


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                 "\t": "\\t"}
_JSON_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _json_string(s: str) -> str:
    if not _JSON_NEEDS_ESCAPE.search(s):
        return '"' + s + '"'
    return '"' + "".join(_JSON_ESCAPES.get(ch) or (f"\\u{ord(ch):04x}" if ch < " " else ch)
                         for ch in s) + '"'


def jsonb_text(value: Any) -> str:
    """PostgreSQL's jsonb text: `{"a": 1, "bb": [1, 2]}`, keys ordered by (length, bytes)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode("utf-8")), k.encode("utf-8")))
        return "{" + ", ".join(f"{_json_string(k)}: {jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    return _json_string(str(value))


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal("NaN")


def _to_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value))


def _to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, Binary) and value.subtype in (3, 4):
        return uuid.UUID(bytes=bytes(value))
    if isinstance(value, bytes):
        return uuid.UUID(bytes=value)
    return uuid.UUID(str(value))
