"""The PostgreSQL → MongoDB value form: the one definition the applier writes by and the validator
compares by.

A value arrives here as PostgreSQL's text of it — rebuilt from Debezium's event by
`decoding.ColumnDecoder`, or read from the source with `ValueForm.select` under
`connectors.postgres.SOURCE_SESSION` — or in one of the native forms Debezium's JSON carries
as they are (numbers, booleans, bytes, arrays as lists). Each column's form is chosen once, from
its type (a domain by its base type, an enum as text):

    smallint, integer, bigint   int32/int64
    numeric, money              Decimal128, scale kept (1.50 stays 1.50); on a server without
                                Decimal128 (FerretDB 1.x) the exact decimal as a string.
                                NaN and ±Infinity refused; more than 34 digits refused on Decimal128
    real, double precision      double (a real by its shortest decimal); NaN, ±Infinity refused
    boolean                     boolean
    text-like                   string: PostgreSQL's text of the value (text, varchar, char(n)
                                with its padding, citext, name, enum, inet, cidr, macaddr(8),
                                xml, tsvector, tsquery, ranges, bit(n))
    date                        BSON date at midnight UTC
    timestamp                   BSON date of the wall-clock time read as UTC, truncated to ms
    timestamptz                 BSON date of the instant, truncated to ms
                                (date/time: ±infinity, BC and years past 9999 refused)
    time                        string 'HH:MM:SS[.ffffff]' as PostgreSQL prints it ('24:00:00' too)
    timetz                      string of the same instant at UTC: 'HH:MM:SS[.ffffff]+00' (Debezium
                                carries the instant, not the offset)
    interval                    string, ISO 8601 as PostgreSQL prints it (IntervalStyle iso_8601):
                                'P1Y2M3DT4H5M6.78S', 'PT0S' — months, days and time kept apart
    json, jsonb                 the JSON value: object → embedded document, array → array;
                                integers int64 (beyond: refused), other numbers double; keys with
                                '.', a leading '$' or NUL refused, an array inside an array refused;
                                a JSON null lands as null, like SQL NULL
    bytea                       Binary subtype 0;   uuid: Binary subtype 4
    hstore                      embedded document of strings (NULL values null); keys as json's
    point                       embedded document {"x": double, "y": double}
    arrays                      one-dimensional: an array of the element's form (NULL → null);
                                more dimensions refused
Columns listed in a table's `json_string_columns` hold a string instead: json/jsonb their JSON
text, other types the JSON string of PostgreSQL's text of the value.

A value the target cannot hold raises UnsupportedValue naming the column — never altered
silently: the applier dead-letters its event, the validator sees the row differ. A column type
with no form, a column name MongoDB cannot hold and a table without a key are refused before
anything runs (`DocumentForm.refusals`, called by pre-flight).

`canonical` renders a stored value for comparison, so equal values compare equal whatever form
the server hands back (int32 or int64, naive or aware datetimes); the order of keys inside
embedded documents is not significant.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, DecimalException
from typing import Any

from bson import Binary, Decimal128
from bson.binary import UuidRepresentation
from psycopg import sql

from migwatch.connectors import postgres as pg
from migwatch.errors import UnsupportedValue
from migwatch.targets.mongo.texts import (
    interval_text,
    micros_of_time,
    parse_hstore,
    parse_interval,
    point_of,
    time_text,
    timetz_of,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_UTC = dt.UTC
_DAY_US = 86_400_000_000


_TEXT_TYPES = {"text", "citext", "name", "bpchar", "character", '"char"', "inet", "cidr",
               "macaddr", "macaddr8", "xml", "tsvector", "tsquery", "int4range", "int8range",
               "numrange", "daterange", "tsrange", "tstzrange", "int4multirange",
               "int8multirange", "nummultirange", "datemultirange", "tsmultirange",
               "tstzmultirange"}
_INT_TYPES = {"smallint", "integer", "bigint", "oid"}
#: types whose cast to text is not their output text (see `ValueForm.select`)
_OUTPUT_TEXT = {"character": "bpcharout", "bpchar": "bpcharout", "inet": "inet_out"}
_PRECISION = re.compile(r"\(.*\)")


def kind_of(type_name: str, enum: bool = False) -> str:
    """The form of a (base) type as `format_type` prints it; arrays: of their element. A
    `refused:` kind says why there is none."""
    t = type_name.strip().lower().removesuffix("[]")
    base = _PRECISION.sub("", t).strip()
    if enum:
        return "text"
    if base in _INT_TYPES:
        return "int"
    if base in ("numeric", "decimal", "money"):
        return "numeric"
    if base in ("real", "double precision"):
        return "float"
    if base == "boolean":
        return "bool"
    if base in _TEXT_TYPES or base.startswith(("character varying", "character")):
        return "text"
    if base == "bit":
        return "text"
    if base == "bit varying":
        return "refused:Debezium sends bit varying without its length"
    if base.startswith("timestamp"):
        return "timestamptz" if "with time zone" in base else "timestamp"
    if base == "date":
        return "date"
    if base.startswith("time"):
        return "timetz" if "with time zone" in base else "time"
    if base.startswith("interval"):
        if type_name.strip().endswith("[]"):
            return "refused:Debezium leaves interval arrays out of its events"
        return "interval"
    if base in ("json", "jsonb", "bytea", "uuid", "point"):
        return base if base != "jsonb" else "json"
    if base == "hstore" or base.endswith(".hstore"):
        return "hstore"
    return f"refused:no MongoDB form for type {type_name}"


# ----------------------------------------------------------------------------- one column
class ValueForm:
    """How one column's values land in a document."""

    def __init__(self, column: pg.Column, *, decimal128: bool = True,
                 as_json_string: bool = False) -> None:
        self.column = column.name
        self.type = column.value_type
        self.array = self.type.strip().endswith("[]")
        self.base = _PRECISION.sub("", self.type.lower().removesuffix("[]")).strip()
        self.money = self.base == "money"
        self.float4 = self.base == "real"
        self.kind = kind_of(self.type, column.enum)
        self.decimal128 = decimal128
        self.as_json_string = as_json_string

    @property
    def refusal(self) -> str | None:
        """Why no value of this column can land (checked before anything runs), or None."""
        if self.kind.startswith("refused:"):
            return self.kind[len("refused:"):]
        if self.as_json_string and self.array:
            return "json_string_columns holds scalar columns only, not arrays"
        return None

    def select(self, column: sql.Composable) -> sql.Composable:
        """The source expression whose value `to_bson` reads (under SOURCE_SESSION)."""
        if self.money:
            return sql.SQL("{}::numeric[]::text[]" if self.array else "{}::numeric::text"
                           ).format(column)
        out = _OUTPUT_TEXT.get(self.base)
        if out is not None:
            # the type's output text — what Debezium carries — where a cast to text differs
            # from it: char(n) keeps its padding, an inet host address has no /32
            if self.array:
                return sql.SQL(
                    "CASE WHEN {0} IS NULL THEN NULL ELSE ARRAY(SELECT {1}(e)::text "
                    "FROM unnest({0}) WITH ORDINALITY AS u(e, n) ORDER BY n) END").format(
                    column, sql.SQL(out))
            return sql.SQL("{}({})::text").format(sql.SQL(out), column)
        return sql.SQL("{}::text[]" if self.array else "{}::text").format(column)

    def to_bson(self, value: Any) -> Any:
        """The value as the document holds it; raises UnsupportedValue naming the column."""
        if value is None:
            return None
        reason = self.refusal
        if reason is not None:
            raise UnsupportedValue(self.column, reason)
        try:
            if self.as_json_string:
                return self._json_string(value)
            if self.array:
                if not isinstance(value, list | tuple):
                    raise ValueError(f"not an array: {type(value).__name__}")
                if any(isinstance(v, list | tuple) for v in value):
                    raise UnsupportedValue(self.column, "a multi-dimensional array has no "
                                                        "MongoDB form")
                return [None if v is None else self._scalar(v, in_array=True) for v in value]
            return self._scalar(value)
        except UnsupportedValue:
            raise
        except (ValueError, TypeError, ArithmeticError, KeyError, IndexError) as exc:
            raise UnsupportedValue(self.column, f"unreadable {self.kind} value "
                                                f"({type(exc).__name__})") from exc

    def _refuse(self, reason: str) -> UnsupportedValue:
        return UnsupportedValue(self.column, reason)

    def _scalar(self, v: Any, in_array: bool = False) -> Any:  # noqa: C901 - one per kind
        kind = self.kind
        if kind == "int":
            n = int(v) if not isinstance(v, bool) else None
            if n is None or not INT64_MIN <= n <= INT64_MAX:
                raise self._refuse("integer outside the int64 range")
            return n
        if kind == "numeric":
            return self._decimal(v if isinstance(v, Decimal) else Decimal(str(v)))
        if kind == "float":
            x = float(v)
            if x != x or x in (float("inf"), float("-inf")):
                raise self._refuse(f"{v} cannot be stored")
            return float4_shortest(x) if self.float4 else x
        if kind == "bool":
            if isinstance(v, bool):
                return v
            text = str(v).lower()
            if text not in ("t", "true", "f", "false"):
                raise ValueError(text)
            return text in ("t", "true")
        if kind == "text":
            if not isinstance(v, str):
                raise ValueError("not text")
            return v
        if kind in ("date", "timestamp", "timestamptz"):
            return self._datetime(str(v))
        if kind == "time":
            return time_text(micros_of_time(str(v)))
        if kind == "timetz":
            micros, offset = timetz_of(str(v))
            return time_text((micros - offset * 1_000_000) % _DAY_US) + "+00"
        if kind == "interval":
            return interval_text(*parse_interval(str(v)))
        if kind == "json":
            parsed = json.loads(v) if isinstance(v, str) else v
            return self._json(parsed, in_array=in_array)  # an array inside an array: refused
        if kind == "bytea":
            if isinstance(v, str):
                if not v.startswith("\\x"):
                    raise ValueError("bytea text not in hex form")
                return Binary(bytes.fromhex(v[2:]), 0)
            return Binary(bytes(v), 0)
        if kind == "uuid":
            u = v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
            return Binary.from_uuid(u, UuidRepresentation.STANDARD)
        if kind == "hstore":
            pairs = parse_hstore(v) if isinstance(v, str) else dict(v)
            for k in pairs:
                self._check_key(k)
            return pairs
        if kind == "point":
            x, y = point_of(str(v))
            return {"x": x, "y": y}
        raise ValueError(kind)

    def _decimal(self, d: Decimal) -> Decimal128 | str:
        if not d.is_finite():
            raise self._refuse(f"numeric {d} cannot be stored")
        if not self.decimal128:
            exponent = d.as_tuple().exponent
            assert isinstance(exponent, int)  # finite
            return format(d, "f") if -30 <= exponent <= 30 else str(d)
        if len(d.as_tuple().digits) > 34:
            raise self._refuse("numeric has more than the 34 digits Decimal128 holds")
        try:
            return Decimal128(d)
        except DecimalException as exc:
            raise self._refuse("numeric outside Decimal128's range") from exc

    def _datetime(self, text: str) -> dt.datetime:
        if text in ("infinity", "-infinity") or text.endswith(" BC"):
            raise self._refuse(f"{text} has no BSON date")
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError as exc:  # a year past 9999
            raise self._refuse(f"{text} has no BSON date") from exc
        if self.kind == "timestamptz" and value.tzinfo is not None:
            value = value.astimezone(_UTC)
        value = value.replace(tzinfo=_UTC)
        return value.replace(microsecond=value.microsecond - value.microsecond % 1000)

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, str):
            raise self._refuse(f"document key {key!r} is not a string")
        if "." in key:
            raise self._refuse(f"key {key!r} contains '.'")
        if key.startswith("$"):
            raise self._refuse(f"key {key!r} starts with '$'")
        if "\x00" in key:
            raise self._refuse("key contains a NUL character")

    def _json(self, v: Any, in_array: bool) -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int):
            if not INT64_MIN <= v <= INT64_MAX:
                raise self._refuse("integer outside the int64 range")
            return v
        if isinstance(v, float | Decimal):
            x = float(v)
            if x != x or x in (float("inf"), float("-inf")):
                raise self._refuse(f"number {v} cannot be stored")
            return x
        if isinstance(v, Mapping):
            out = {}
            for k, item in v.items():
                self._check_key(k)
                out[k] = self._json(item, in_array=False)
            return out
        if isinstance(v, list | tuple):
            if in_array:
                raise self._refuse("nested arrays cannot be stored")
            return [self._json(x, in_array=True) for x in v]
        raise ValueError(type(v).__name__)

    def _json_string(self, v: Any) -> str:
        if self.kind == "json":
            return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        return json.dumps(_pg_text(v), ensure_ascii=False)


def float4_shortest(x: float) -> float:
    """A real's value by its shortest decimal that reads back as the same 32-bit float — as
    PostgreSQL prints it — whether the event or driver handed over that decimal or the wider
    double (Debezium's JSON: 1.17549435E-38 for 1.1754944e-38)."""
    try:
        f32 = struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return x
    for digits in range(1, 10):
        text = f"{f32:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == f32:
            return float(text)
    return f32


def _pg_text(v: Any) -> str:
    """PostgreSQL's text of a value Debezium's JSON carries natively."""
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else \
            {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(v)]
    return str(v)


# ----------------------------------------------------------------------------- one table
class DocumentForm:
    """How one table's rows become documents: `_id` from the key, a field per other column."""

    def __init__(self, info: pg.TableInfo, *, decimal128: bool = True,
                 json_string_columns: Iterable[str] = ()) -> None:
        as_json = set(json_string_columns)
        self.info = info
        self.primary_key = list(info.primary_key)
        self.columns = [c.name for c in info.columns]
        self.forms = {c.name: ValueForm(c, decimal128=decimal128,
                                        as_json_string=c.name in as_json)
                      for c in info.columns}
        self.unknown_json_columns = sorted(as_json - set(self.forms))

    def refusals(self) -> list[str]:
        """What makes this table impossible to hold, each naming the column (empty: fine)."""
        out = []
        if not self.primary_key:
            out.append("no primary key (nor REPLICA IDENTITY USING INDEX): a MongoDB target "
                       "needs a key for _id")
        for name, form in self.forms.items():
            try:
                form._check_key(name)
            except UnsupportedValue as exc:
                out.append(f"column {name!r}: its name cannot be a MongoDB field name "
                           f"({exc.reason})")
            if form.refusal is not None:
                out.append(f"column {name!r} ({form.type}): {form.refusal}")
            if name in self.primary_key and (form.array or form.kind in ("json", "hstore")):
                out.append(f"column {name!r}: a key column of type {form.type} cannot be "
                           "part of _id")
        for name in self.unknown_json_columns:
            out.append(f"json_string_columns names {name!r}, which is not a column")
        return out

    def id(self, key: Sequence[Any]) -> Any:
        """`_id` of a key (values in key-column order): the value, or an embedded document."""
        if not self.primary_key:
            raise UnsupportedValue("(primary key)", "a MongoDB target needs a key for _id")
        if len(key) != len(self.primary_key):
            raise UnsupportedValue(",".join(self.primary_key),
                                   f"expected {len(self.primary_key)} key value(s)")
        mapped = []
        for column, value in zip(self.primary_key, key, strict=True):
            if value is None:
                raise UnsupportedValue(column, "primary-key value is NULL")
            mapped.append(self.forms[column].to_bson(value))
        if len(mapped) == 1:
            return mapped[0]
        return dict(zip(self.primary_key, mapped, strict=True))

    def fields(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The non-key columns of `row` mapped; values that are not values (the decoder's
        UNCHANGED and FROM_SOURCE markers) pass through as they are."""
        out = {}
        for name, value in row.items():
            if name in self.primary_key:
                continue
            form = self.forms.get(name)
            if form is None:
                raise UnsupportedValue(name, "not a column of the table")
            out[name] = value if _is_marker(value) else form.to_bson(value)
        return out

    def document(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The whole document of a row holding every column."""
        return {"_id": self.id([row[k] for k in self.primary_key]), **self.fields(row)}

    def select_list(self, columns: Sequence[str] | None = None,
                    alias: str | None = None) -> sql.Composable:
        """`ValueForm.select` of `columns` (all by default), comma-separated."""
        out = []
        for c in columns or self.columns:
            ident = sql.Identifier(alias, c) if alias else sql.Identifier(c)
            out.append(self.forms[c].select(ident))
        return sql.SQL(", ").join(out)

    def values(self, doc: Mapping[str, Any]) -> list[Any]:
        """A stored document's values in column order (key columns from `_id`)."""
        _id = doc.get("_id")
        out = []
        for c in self.columns:
            if c in self.primary_key:
                out.append(_id if len(self.primary_key) == 1 else
                           (_id.get(c) if isinstance(_id, dict) else None))
            else:
                out.append(doc.get(c))
        return out


def _is_marker(value: Any) -> bool:
    """The decoder's sentinels (decoding.UNCHANGED / FROM_SOURCE) — not imported: no cycle."""
    return type(value).__name__ in ("_Unchanged", "_FromSource")


def supports_decimal128(build_info: Mapping[str, Any]) -> bool:
    """Whether a server (its `buildInfo` reply) stores Decimal128; FerretDB 1.x does not."""
    return "ferretdbVersion" not in build_info


# ----------------------------------------------------------------------------- comparing
def canonical(value: Any) -> str:
    """A stored value's comparison text: equal values, equal texts (see the module doc)."""
    if value is None:
        return "n"
    if value is True or value is False:
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{int(value)}"
    if isinstance(value, float):
        return f"f{value!r}"
    if isinstance(value, str):
        return "s" + json.dumps(value, ensure_ascii=False)
    if isinstance(value, Decimal128):
        return f"d{value.to_decimal()}"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return "t" + value.isoformat()
    if isinstance(value, Binary):
        return f"x{value.subtype}:{bytes(value).hex()}"
    if isinstance(value, bytes):
        return f"x0:{value.hex()}"
    if isinstance(value, Mapping):
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + canonical(value[k])
                              for k in sorted(value, key=str)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return f"?{type(value).__name__}:{value!r}"


def display(value: Any) -> str | None:
    """A stored value as people read it (None stays None)."""
    if value is None:
        return None
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, Binary) and value.subtype == 4:
        return str(value.as_uuid())
    if isinstance(value, Binary | bytes):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, Mapping | list | tuple):
        return canonical(value)
    return str(value)


def row_hash(texts: Iterable[str]) -> int:
    """A row's 64-bit hash from its values' canonical texts (md5's first 8 bytes, signed)."""
    digest = hashlib.md5("\x1f".join(texts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# ----------------------------------------------------------------------------- keys back
#: key kinds whose `_id` reads back into the value psycopg returns for the source's key
READABLE_KEY_KINDS = {"int", "numeric", "text", "uuid", "date", "timestamp", "timestamptz",
                      "bytea", "bool"}


def key_value(value: Any, column: pg.Column) -> Any:
    """A key column's value as psycopg returns it from the source, from its `_id` form
    (raises ValueError/TypeError when it cannot be one)."""
    kind = kind_of(column.value_type, column.enum)
    base = _PRECISION.sub("", column.value_type.lower()).strip()
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("not an integer")
        return int(value)
    if kind == "numeric":
        return value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))
    if kind == "uuid":
        if isinstance(value, Binary) and value.subtype == 4:
            return uuid.UUID(bytes=bytes(value))
        raise TypeError("not a uuid")
    if kind in ("date", "timestamp", "timestamptz"):
        if not isinstance(value, dt.datetime):
            raise TypeError("not a date")
        aware = value if value.tzinfo else value.replace(tzinfo=_UTC)
        if kind == "date":
            return aware.date()
        return aware if kind == "timestamptz" else aware.replace(tzinfo=None)
    if kind == "bytea":
        if not isinstance(value, Binary | bytes):
            raise TypeError("not binary")
        return bytes(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError("not a boolean")
        return value
    if kind == "text" and isinstance(value, str):
        if base == "inet":
            return ipaddress.ip_interface(value) if "/" in value else \
                ipaddress.ip_address(value)
        if base == "cidr":
            return ipaddress.ip_network(value)
        return value
    raise TypeError(f"a {column.value_type} key cannot be read back from _id")


__all__ = ["DocumentForm", "ValueForm", "canonical", "display",
           "interval_text", "kind_of", "parse_interval", "row_hash", "supports_decimal128"]
