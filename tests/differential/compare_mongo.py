"""The independent comparator for a MongoDB target: both sides re-encoded into one canonical form
by the documented contract (DESIGN.md, "PostgreSQL → MongoDB value mapping"), with no code from
migwatch (not its mapping, applier or validator).

The source side reads every row as PostgreSQL's own JSON (`row_to_json`, numbers kept exact);
the target side reads documents with pymongo. Each column becomes a canonical value by the
source column's type:

    integers        int (outside int64: refused)
    numeric         its exact decimal text (Decimal128, or a string on FerretDB); NaN, ±Infinity
                    and more than 34 digits: refused
    double          repr of the float; NaN, ±Infinity: refused
    timestamptz,    UTC at milliseconds (a timestamp's wall clock read as UTC; a date at
    timestamp, date midnight); ±infinity, BC and years past 9999: refused
    bytea           hex;  uuid: its text (binary subtype 4 or a string);  boolean: boolean
    json, jsonb     the document with numbers as doubles or int64; keys with '.' or a leading
                    '$', nested arrays, integers outside int64: refused
    arrays          lists (lower bounds dropped); multi-dimensional: refused
    text-like       the text
A row holding a refused value is not compared: the class must instead have dead-lettered events
of its table naming the column (run.py checks that).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from tests.differential.compare import SESSION, TableComparison, compare_sides
from tests.differential.schema import TableDef

INT64 = (-(2**63), 2**63 - 1)
INTEGERS = ("smallint", "integer", "bigint", "dw_posint")
EPOCH = dt.datetime(1970, 1, 1)


class Refused(Exception):
    """The contract refuses this value: the row is not compared, it must be dead-lettered."""


def _kind(sql_type: str) -> str:
    t = sql_type.lower()
    if t.endswith("[]"):
        return "array:" + _kind(t[:-2])
    if t in INTEGERS:
        return "int"
    if t.startswith("numeric"):
        return "numeric"
    if t in ("double precision", "real"):
        return "float"
    if t.startswith("timestamp") and "with time zone" in t:
        return "timestamptz"
    if t.startswith("timestamp"):
        return "timestamp"
    if t == "date":
        return "date"
    if t == "bytea":
        return "bytea"
    if t == "uuid":
        return "uuid"
    if t in ("json", "jsonb"):
        return "json"
    if t == "boolean":
        return "bool"
    return "text"


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Refused(f"not an integer: {v!r}")
    if not INT64[0] <= v <= INT64[1]:
        raise Refused("integer outside int64")
    return v


def _ms(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=value.microsecond // 1000 * 1000).isoformat(
        timespec="milliseconds")


def _pg_datetime(text: str) -> str:
    """PostgreSQL's JSON form of a timestamp(tz) or date; infinities, BC and years past 9999
    have no BSON date through the contract."""
    if text in ("infinity", "-infinity") or text.endswith(" BC"):
        raise Refused(text)
    try:
        return _ms(dt.datetime.fromisoformat(text))
    except ValueError as exc:
        raise Refused(f"{text}: {exc}") from exc


def _pg_json(v: Any, depth_in_array: bool = False) -> Any:
    """A json/jsonb value as the contract stores it (numbers as doubles or int64)."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if "." in k or k.startswith("$"):
                raise Refused(f"key {k!r}")
            out[k] = _pg_json(x)
        return out
    if isinstance(v, list):
        if depth_in_array:
            raise Refused("nested array")
        return [_pg_json(x, True) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return _int(v)
    return repr(float(v))


#: whether the target server stores Decimal128 (34 digits at most); FerretDB 1.x stores an exact
#: decimal string instead, which holds any number of digits (set by compare_mongo)
DECIMAL128 = {"on": True}


def source_value(kind: str, v: Any) -> Any:
    """Canonical form of a value from PostgreSQL's JSON (row_to_json with exact numbers)."""
    if v is None:
        return None
    if kind.startswith("array:"):
        element = kind[len("array:"):]
        if any(isinstance(x, list) for x in v):
            raise Refused("multi-dimensional array")
        return [source_value(element, x) for x in v]
    if kind == "int":
        return _int(v)
    if kind == "numeric":
        if isinstance(v, str):  # NaN, Infinity, -Infinity come as JSON strings
            raise Refused(f"numeric {v}")
        d = Decimal(v)
        if DECIMAL128["on"] and len(d.as_tuple().digits) > 34:
            raise Refused("more than the 34 digits of Decimal128")
        return str(d)
    if kind == "float":
        if isinstance(v, str):
            raise Refused(f"float {v}")
        return repr(float(v))
    if kind in ("timestamptz", "timestamp", "date"):
        return _pg_datetime(v)
    if kind == "bytea":
        return v[2:] if v.startswith("\\x") else v
    if kind == "json":
        return _pg_json(v)
    if kind == "bool":
        return v
    return v if isinstance(v, str) else json.dumps(v)


def target_value(kind: str, v: Any) -> Any:
    """Canonical form of a value as pymongo reads it from the target."""
    from bson import Binary, Decimal128, Int64

    if v is None:
        return None
    if kind.startswith("array:"):
        if not isinstance(v, list):
            return f"not an array: {v!r}"
        return [target_value(kind[len("array:"):], x) for x in v]
    if kind == "int":
        return int(v) if isinstance(v, int | Int64) and not isinstance(v, bool) else repr(v)
    if kind == "numeric":
        if isinstance(v, Decimal128):
            return str(v.to_decimal())
        if isinstance(v, str):
            return str(Decimal(v))
        return f"not exact: {v!r}"
    if kind == "float":
        return repr(float(v)) if isinstance(v, float) and math.isfinite(v) else repr(v)
    if kind in ("timestamptz", "timestamp", "date"):
        return _ms(v) if isinstance(v, dt.datetime) else f"not a date: {v!r}"
    if kind == "bytea":
        return bytes(v).hex() if isinstance(v, bytes | Binary) else f"not binary: {v!r}"
    if kind == "uuid":
        if isinstance(v, Binary) and v.subtype == 4:
            return str(v.as_uuid())
        if isinstance(v, uuid.UUID):
            return str(v)
        return v if isinstance(v, str) else f"not a uuid: {v!r}"
    if kind == "json":
        return _mongo_json(v)
    if kind == "bool":
        return v if isinstance(v, bool) else f"not a boolean: {v!r}"
    return v


def _mongo_json(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _mongo_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_mongo_json(x) for x in v]
    if isinstance(v, float):
        return repr(v)
    return v


def _row(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, ensure_ascii=False)


class MongoSourceSide:
    """The PostgreSQL source, re-encoded into the contract's canonical form; keys of rows that
    hold a refused value are collected in `refused` instead of being yielded."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.refused: dict[str, dict[str, str]] = {}  # table -> key -> column: reason
        #: table -> key -> the refused value, as PostgreSQL's JSON gives it
        self.refused_raw: dict[str, dict[str, Any]] = {}
        self._cols: dict[str, dict[str, dict[str, Any]]] = {}

    def rows(self, table: TableDef) -> Iterable[tuple[str, str]]:
        kinds = {c.name: _kind(c.sql_type) for c in table.columns}
        refused = self.refused.setdefault(table.qualified, {})
        cols = self._cols.setdefault(table.qualified, {})
        cur = self.conn.execute(sql.SQL("SELECT row_to_json(t)::text FROM {} t").format(
            table.ident))
        out = []
        for (text,) in cur.fetchall():
            raw = json.loads(text, parse_float=Decimal)
            try:
                key = json.dumps([source_value(kinds[k], raw[k]) for k in table.key],
                                 ensure_ascii=False)
            except Refused as exc:
                refused[json.dumps([str(raw[k]) for k in table.key])] = f"key: {exc}"
                continue
            values: dict[str, Any] = {}
            try:
                for c in table.payload:
                    column = c.name
                    values[c.name] = source_value(kinds[c.name], raw[c.name])
            except Refused as exc:
                refused[key] = f"{column}: {exc}"
                self.refused_raw.setdefault(table.qualified, {})[key] = raw[column]
                continue
            cols[key] = {k: json.dumps(v, ensure_ascii=False) for k, v in values.items()}
            out.append((key, _row(values)))
        return out

    def columns(self, table: TableDef, keys: list[str]) -> dict[str, dict[str, str | None]]:
        cols = self._cols.get(table.qualified, {})
        return {k: dict(cols[k]) for k in keys if k in cols}


class MongoTargetSide:
    """One MongoDB database; a table's collection is named by the table (no schema)."""

    def __init__(self, db: Any, skip: dict[str, dict[str, str]]) -> None:
        self.db = db
        self.skip = skip  # refused keys: not compared
        self._cols: dict[str, dict[str, dict[str, Any]]] = {}
        #: what the target holds for refused keys (a refusal must not be an alteration)
        self.held: dict[str, dict[str, str]] = {}
        self.held_values: dict[str, dict[str, dict[str, Any]]] = {}

    def rows(self, table: TableDef) -> Iterable[tuple[str, str]]:
        kinds = {c.name: _kind(c.sql_type) for c in table.columns}
        cols = self._cols.setdefault(table.qualified, {})
        skip = self.skip.get(table.qualified, {})
        out = []
        for doc in self.db[table.name].find():
            _id = doc.pop("_id")
            parts = [_id.get(k) for k in table.key] if isinstance(_id, dict) else [_id]
            key = json.dumps([target_value(kinds[k], v) for k, v in zip(table.key, parts,
                                                                         strict=False)],
                             ensure_ascii=False)
            values = {c.name: target_value(kinds[c.name], doc.pop(c.name, None))
                      for c in table.payload}
            if key in skip:
                self.held.setdefault(table.qualified, {})[key] = _row(values)
                self.held_values.setdefault(table.qualified, {})[key] = values
                continue
            values.update({f"(extra field) {k}": repr(v) for k, v in doc.items()})
            cols[key] = {k: json.dumps(v, ensure_ascii=False) for k, v in values.items()}
            out.append((key, _row(values)))
        return out

    def columns(self, table: TableDef, keys: list[str]) -> dict[str, dict[str, str | None]]:
        cols = self._cols.get(table.qualified, {})
        return {k: dict(cols[k]) for k in keys if k in cols}


def compare_mongo(source_dsn: str, mongo_uri: str, database: str, tables: list[TableDef],
                  limit: int = 5) -> dict[str, TableComparison]:
    """Every table of `tables`: the source against its collection; `refused` counts the rows
    the contract refuses (not compared)."""
    from pymongo import MongoClient

    client: Any = MongoClient(mongo_uri, tz_aware=False)
    DECIMAL128["on"] = "ferretdbVersion" not in client.admin.command("buildInfo")
    try:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            for name, value in SESSION.items():
                conn.execute("SELECT set_config(%s, %s, false)", [name, value])
            source = MongoSourceSide(conn)
            target = MongoTargetSide(client[database], source.refused)
            out = {}
            for t in tables:
                if not t.key:
                    out[t.qualified] = TableComparison(t.qualified, error="a MongoDB target "
                                                       "needs a key for _id (refused)")
                    continue
                result = compare_sides(source, target, t, limit)
                held = target.held.get(t.qualified, {})
                result.refused = {
                    k: why + (f"; the target holds {held[k][:160]}" if k in held else
                              "; not on the target")
                    for k, why in source.refused.get(t.qualified, {}).items()}
                raw = source.refused_raw.get(t.qualified, {})
                values = target.held_values.get(t.qualified, {})
                result.refused_values = {k: (raw.get(k), values.get(k)) for k in result.refused}
                out[t.qualified] = result
            return out
    finally:
        client.close()
