"""The independent comparator for a MongoDB target: both sides re-encoded into one canonical form
by the documented PostgreSQL → MongoDB contract (docs/types.md), with no code from migwatch (not
its mapping, applier or validator).

The source side asks PostgreSQL for every value in a JSON form of its own (numbers kept exact:
`to_json`, or the type's text output where the contract stores PostgreSQL's text), the target
side reads documents with pymongo. Each column becomes a canonical value by the source column's
type (a domain counts as its base type, an enum as text):

    smallint, integer, bigint   int (outside int64: refused)
    numeric, money (its amount) {"$decimal": the exact decimal, scale kept} — a Decimal128 on
                                MongoDB, on FerretDB the string `format(d, 'f')` (exponent within
                                [-30, 30]) or `str(d)`; NaN, ±Infinity (and, on MongoDB, more
                                than 34 digits) refused
    real, double precision      {"$double": repr of the double} (a real: its shortest decimal
                                read as a double); NaN, ±Infinity refused (on FerretDB, whose
                                storage loses a zero's sign, -0.0 compares as 0.0)
    boolean                     bool
    text-like                   the string PostgreSQL prints (`format('%s', v)`: char(n) keeps its
                                padding) — text, varchar, char, citext, name, enum, inet, cidr,
                                macaddr(8), xml, tsvector, ranges, bit(n), time(p)
    timetz                      the string of `v AT TIME ZONE 'UTC'` ('03:04:58.123+00')
    interval                    the string PostgreSQL prints under IntervalStyle iso_8601
    date, timestamp(tz)         {"$date": UTC at milliseconds, truncated} (a timestamp's wall
                                clock read as UTC, a date at midnight); ±infinity, BC and years
                                past 9999 refused
    bytea                       {"$binary": hex} of Binary subtype 0
    uuid                        {"$uuid": text} of Binary subtype 4 (a string is a failure)
    json, jsonb                 the parsed value: objects {"$doc": [[key, value], …]} in key
                                order, arrays, strings, bool, null; integers (written without
                                fraction or exponent) int — outside int64 refused — other
                                numbers {"$double"}; keys with '.', a leading '$' or NUL, and an
                                array directly inside an array refused
    hstore                      {"$map": [[key, string or null], …]} sorted (order does not
                                count); keys with '.' or a leading '$' refused
    point                       {"$doc": [["x", {"$double"}], ["y", {"$double"}]]}
    arrays (one dimension)      lists of the element's form (NULL → null, bounds dropped);
                                multi-dimensional: refused
A target value of another BSON type becomes {"$unexpected": its type and repr}; a missing field
{"$missing": …}: never equal to a source value. A row holding a refused value is not compared:
its class must instead have dead-lettered events of its table naming the column (run.py checks
that). A table the contract refuses as a whole — no key for `_id`, a column name holding '.',
a leading '$' or NUL, a column type without a mapping — is `preflight_refusal`'s: pre-flight
must refuse it naming the table and those columns.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from tests.differential.compare import SESSION, TableComparison, compare_sides
from tests.differential.schema import TableDef
from tests.differential.types import PREREQUISITES

INT64 = (-(2**63), 2**63 - 1)
#: settings of the comparator's own source session, on top of compare.SESSION
MONGO_SESSION = {"IntervalStyle": "iso_8601"}
#: the exponent range in which FerretDB's decimal string is written without an exponent
PLAIN_EXPONENTS = (-30, 30)

# the harness's own user-defined types (types.PREREQUISITES): a domain is its base type, an enum
# text
DOMAINS = {m.group(1).lower(): m.group(2).lower() for p in PREREQUISITES
           if (m := re.match(r"CREATE DOMAIN (\w+) AS ([\w ]+?)(?: CHECK|$)", p))}
ENUMS = {m.group(1).lower() for p in PREREQUISITES
         if (m := re.match(r"CREATE TYPE (\w+) AS ENUM", p))}


class Refused(Exception):
    """The contract refuses this value: the row is not compared, it must be dead-lettered."""


class JFloat(Decimal):
    """A JSON number written with a fraction or an exponent (a double on the target); numbers
    written as integers parse as plain Decimal."""


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=JFloat, parse_int=Decimal)


# ----------------------------------------------------------------------------- types
@dataclass(frozen=True)
class Kind:
    """How a column's values are encoded: `name` picks the canonical form, `expr` the SQL
    giving the source value as JSON; `element` for arrays."""

    name: str
    expr: Callable[[sql.Composable], sql.Composable]
    element: Kind | None = None


def _to_json(ref: sql.Composable) -> sql.Composable:
    return sql.SQL("to_json({})").format(ref)


def _printed(ref: sql.Composable) -> sql.Composable:
    """The type's own output text (format's %s: char(n) keeps its padding), as JSON."""
    return sql.SQL("to_json(CASE WHEN {r} IS NULL THEN NULL ELSE format('%s', {r}) END)").format(
        r=ref)


def _timetz(ref: sql.Composable) -> sql.Composable:
    return _printed(sql.SQL("({} AT TIME ZONE 'UTC')").format(ref))


def _money(ref: sql.Composable) -> sql.Composable:
    return sql.SQL("to_json({}::numeric)").format(ref)


def _point(ref: sql.Composable) -> sql.Composable:
    return sql.SQL("CASE WHEN {r} IS NULL THEN NULL ELSE json_build_object('x', {r}[0], 'y', "
                   "{r}[1]) END").format(r=ref)


def _array(element: Kind) -> Callable[[sql.Composable], sql.Composable]:
    def expr(ref: sql.Composable) -> sql.Composable:
        # one dimension: element by element (bounds dropped); more: marked, never compared
        return sql.SQL(
            "CASE WHEN {r} IS NULL THEN NULL WHEN array_ndims({r}) > 1 THEN "
            "json_build_object('$multidim', to_json({r})) ELSE (SELECT coalesce(json_agg({e} "
            "ORDER BY u.o), '[]'::json) FROM unnest({r}) WITH ORDINALITY AS u(x, o)) END"
        ).format(r=ref, e=element.expr(sql.SQL("u.x")))
    return expr


INTEGERS = {"smallint", "integer", "bigint", "int", "int2", "int4", "int8"}
STRINGS = {"text", "citext", "name", "inet", "cidr", "macaddr", "macaddr8", "xml", "tsvector",
           "int4range", "int8range", "numrange", "daterange", "tsrange", "tstzrange", "bpchar",
           "varchar"}
_PRECISION = re.compile(r"\(\d+(,\s*-?\d+)?\)")


def kind_of(sql_type: str) -> Kind | None:
    """The contract's encoding of a column type; None: no mapping (pre-flight refuses it)."""
    t = sql_type.lower().strip()
    if t.endswith("[]"):
        element = kind_of(t[:-2])
        if element is None or element.name == "interval" or element.element is not None:
            return None  # interval[]: Debezium leaves it out of every event (as on PostgreSQL)
        return Kind("array", _array(element), element)
    t = DOMAINS.get(t, t)
    if t in ENUMS:
        return Kind("string", _printed)
    bare = _PRECISION.sub("", t).strip()
    if bare in INTEGERS:
        return Kind("int", _to_json)
    if bare in ("numeric", "decimal"):
        return Kind("numeric", _to_json)
    if bare == "money":
        return Kind("numeric", _money)
    if bare in ("real", "float4", "double precision", "float8"):
        return Kind("float", _to_json)
    if bare in ("boolean", "bool"):
        return Kind("bool", _to_json)
    if bare in STRINGS or bare in ("character varying", "character", "char", "bit"):
        return Kind("string", _printed)
    if bare == "date":
        return Kind("date", _to_json)
    if bare in ("timestamp with time zone", "timestamptz"):
        return Kind("timestamptz", _to_json)
    if bare in ("timestamp", "timestamp without time zone"):
        return Kind("timestamp", _to_json)
    if bare in ("time", "time without time zone"):
        return Kind("string", _printed)
    if bare in ("time with time zone", "timetz"):
        return Kind("timetz", _timetz)
    if bare.startswith("interval"):
        return Kind("interval", _printed)
    if bare in ("json", "jsonb"):
        return Kind("json", _to_json)
    if bare == "bytea":
        return Kind("bytea", _to_json)
    if bare == "uuid":
        return Kind("uuid", _to_json)
    if bare == "hstore":
        return Kind("hstore", _to_json)
    if bare == "point":
        return Kind("point", _point)
    return None  # bit varying, composite, box, line, polygon, …


#: the values of a column type without a mapping (refused at pre-flight): any non-NULL one
UNMAPPED = Kind("unmapped", _printed)


def _bad_name(name: str) -> bool:
    return "." in name or name.startswith("$") or "\x00" in name


def preflight_refusal(table: TableDef) -> list[str] | None:
    """Why the contract refuses the table as a whole: the columns pre-flight must name (empty:
    the table itself — it has no key for `_id`); None when pre-flight must let it through."""
    columns = [c.name for c in table.columns if _bad_name(c.name) or kind_of(c.sql_type) is None]
    if columns or not table.key:
        return columns
    if '"' in table.name:  # FerretDB 1.x (the local stack's server) cannot create it
        return []
    return None


# ----------------------------------------------------------------------------- canonical forms
#: whether the target server stores Decimal128 (34 digits at most); FerretDB 1.x stores the
#: exact decimal string instead, which holds any number of digits (set by compare_mongo)
DECIMAL128 = {"on": True}
#: whether the target is FerretDB (set by compare_mongo): its storage (SQLite backend) reads a
#: double's negative zero back as 0.0 whatever was written, so there the two zeros compare
#: equal — a limit of the server, not of the contract (a real MongoDB keeps -0.0)
FERRETDB = {"on": False}


def _double_text(f: float) -> str:
    return repr(0.0 if f == 0 and FERRETDB["on"] else f)


def decimal_text(d: Decimal) -> str:
    """The contract's exact decimal text (FerretDB's string; a Decimal128's value)."""
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and PLAIN_EXPONENTS[0] <= exponent <= PLAIN_EXPONENTS[1]:
        return format(d, "f")
    return str(d)


def _unexpected(v: Any) -> dict[str, str]:
    return {"$unexpected": f"{type(v).__name__} {v!r}"[:300]}


def _int(v: Any) -> int:
    if not isinstance(v, Decimal) or isinstance(v, JFloat):
        raise Refused(f"not an integer: {v!r}")
    n = int(v)
    if not INT64[0] <= n <= INT64[1]:
        raise Refused(f"integer {n} outside int64")
    return n


def _double(v: Any) -> dict[str, str]:
    if not isinstance(v, Decimal):  # NaN, Infinity, -Infinity come as JSON strings
        raise Refused(f"double {v}")
    f = float(v)
    if not math.isfinite(f):
        raise Refused(f"double {v} overflows")
    return {"$double": _double_text(f)}


def _ms(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=value.microsecond // 1000 * 1000).isoformat(
        timespec="milliseconds")


def _pg_datetime(text: str) -> dict[str, str]:
    """PostgreSQL's JSON form of a timestamp(tz) or date; infinities, BC and years past 9999
    have no BSON date through the contract."""
    if not isinstance(text, str) or text in ("infinity", "-infinity") or text.endswith(" BC"):
        raise Refused(str(text))
    try:
        return {"$date": _ms(dt.datetime.fromisoformat(text))}
    except ValueError as exc:
        raise Refused(f"{text}: {exc}") from exc


def _key_ok(k: str) -> None:
    if _bad_name(k):
        raise Refused(f"key {k!r}")


def _json(v: Any, in_array: bool = False) -> Any:
    """A json/jsonb value as the contract stores it."""
    if isinstance(v, dict):
        pairs = []
        for k, x in v.items():
            _key_ok(k)
            pairs.append([k, _json(x)])
        return {"$doc": pairs}
    if isinstance(v, list):
        if in_array:
            raise Refused("an array inside an array")
        return [_json(x, True) for x in v]
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, JFloat):
        return _double(v)
    return _int(v)


def source_value(kind: Kind, v: Any) -> Any:
    """Canonical form of a value from the comparator's source query (`Kind.expr`)."""
    if v is None:
        return None
    name = kind.name
    if kind.element is not None:
        if isinstance(v, dict) and "$multidim" in v:
            raise Refused("multi-dimensional array")
        if kind.element.name == "json":  # a JSON array element: an array inside an array
            return [_json(x, True) for x in v]
        return [source_value(kind.element, x) for x in v]
    if name == "unmapped":
        raise Refused("no mapping for the type")
    if name == "int":
        return _int(v)
    if name == "numeric":
        if not isinstance(v, Decimal):  # NaN, Infinity, -Infinity come as JSON strings
            raise Refused(f"numeric {v}")
        d = Decimal(v)
        if DECIMAL128["on"] and len(d.as_tuple().digits) > 34:
            raise Refused("more than the 34 digits of Decimal128")
        return {"$decimal": decimal_text(d)}
    if name == "float":
        return _double(v)
    if name in ("timestamptz", "timestamp", "date"):
        return _pg_datetime(v)
    if name == "bytea":
        return {"$binary": v[2:] if v.startswith("\\x") else v}
    if name == "uuid":
        return {"$uuid": v}
    if name == "json":
        return _json(v)
    if name == "hstore":
        for k in v:
            _key_ok(k)
        return {"$map": sorted([k, x] for k, x in v.items())}
    if name == "point":
        return {"$doc": [["x", _double(v["x"])], ["y", _double(v["y"])]]}
    if name == "bool":
        return v
    return v  # string, timetz, interval: PostgreSQL's text


def target_value(kind: Kind, v: Any) -> Any:
    """Canonical form of a value as pymongo reads it from the target."""
    import uuid as uuidlib

    from bson import Binary, Decimal128

    if v is None:
        return None
    name = kind.name
    if kind.element is not None:
        return [target_value(kind.element, x) for x in v] if isinstance(v, list) \
            else _unexpected(v)
    if name == "int":
        return v if isinstance(v, int) and not isinstance(v, bool) else _unexpected(v)
    if name == "numeric":
        if DECIMAL128["on"]:
            return {"$decimal": decimal_text(v.to_decimal())} if isinstance(v, Decimal128) \
                else _unexpected(v)
        return {"$decimal": v} if isinstance(v, str) else _unexpected(v)
    if name == "float":
        return {"$double": _double_text(v)} if isinstance(v, float) and math.isfinite(v) \
            else _unexpected(v)
    if name in ("timestamptz", "timestamp", "date"):
        return {"$date": _ms(v)} if isinstance(v, dt.datetime) else _unexpected(v)
    if name == "bytea":
        if isinstance(v, bytes) and not (isinstance(v, Binary) and v.subtype != 0):
            return {"$binary": bytes(v).hex()}
        return _unexpected(v)
    if name == "uuid":
        if isinstance(v, Binary) and v.subtype == 4 and len(v) == 16:
            return {"$uuid": str(uuidlib.UUID(bytes=bytes(v)))}
        return _unexpected(v)
    if name == "json":
        return _mongo_json(v)
    if name == "hstore":
        if isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values()):
            return {"$map": sorted([k, x] for k, x in v.items())}
        return _unexpected(v)
    if name == "point":
        if isinstance(v, dict):
            return {"$doc": [[k, {"$double": _double_text(x)} if isinstance(x, float) else
                              _unexpected(x)] for k, x in v.items()]}
        return _unexpected(v)
    if name == "bool":
        return v if isinstance(v, bool) else _unexpected(v)
    if name == "unmapped":
        return _unexpected(v)
    return v if isinstance(v, str) else _unexpected(v)


def _mongo_json(v: Any) -> Any:
    if isinstance(v, dict):
        return {"$doc": [[k, _mongo_json(x)] for k, x in v.items()]}
    if isinstance(v, list):
        return [_mongo_json(x) for x in v]
    if isinstance(v, float):
        return {"$double": _double_text(v)} if math.isfinite(v) else _unexpected(v)
    if v is None or isinstance(v, bool | str | int):
        return v
    return _unexpected(v)


def _kinds(table: TableDef) -> dict[str, Kind]:
    return {c.name: kind_of(c.sql_type) or UNMAPPED for c in table.columns}


def _key_part(v: Any) -> Any:
    """A canonical key value as the harness writes keys (the workload's history): a tagged
    scalar as its text."""
    if isinstance(v, dict) and len(v) == 1:
        ((tag, text),) = v.items()
        return text if tag in ("$uuid", "$decimal", "$date", "$double", "$binary") \
            else f"{tag} {text}"
    return v


def _key(parts: list[Any]) -> str:
    return json.dumps([_key_part(p) for p in parts], ensure_ascii=False)


def _row(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, ensure_ascii=False)


def _cell(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


#: a limit table's rows set aside (not compared, judged by limits.py): the column and whether
#: PostgreSQL's text of its value (None: NULL) is one the limit is about; the predicate None:
#: nothing set aside, the texts only recorded (TableComparison.source_values)
Aside = tuple[str, Callable[[str | None], bool] | None]


class MongoSourceSide:
    """The PostgreSQL source, re-encoded into the contract's canonical form; keys of rows that
    hold a refused value (or a limit's value, `aside`) are collected in `refused` instead of
    being yielded."""

    def __init__(self, conn: psycopg.Connection, aside: dict[str, Aside] | None = None) -> None:
        self.conn = conn
        self.aside = aside or {}
        self.refused: dict[str, dict[str, str]] = {}  # table -> key -> "column: reason"
        #: table -> key -> the refused value, as the source query gives it (JSON)
        self.refused_raw: dict[str, dict[str, Any]] = {}
        #: table -> key -> the canonical payload of a row set aside although the contract
        #: maps it (a limit's value Debezium alters)
        self.aside_values: dict[str, dict[str, dict[str, Any]]] = {}
        #: table -> key -> column -> PostgreSQL's text (tables in `aside` only)
        self.texts: dict[str, dict[str, dict[str, str | None]]] = {}
        self._cols: dict[str, dict[str, dict[str, str]]] = {}

    def rows(self, table: TableDef) -> Iterable[tuple[str, str]]:
        kinds = _kinds(table)
        q = table.qualified
        refused = self.refused.setdefault(q, {})
        cols = self._cols.setdefault(q, {})
        aside_col, outside = self.aside.get(q, ("", None))
        names = [c.name for c in table.columns]
        exprs = [kinds[n].expr(sql.SQL("t.{}").format(sql.Identifier(n))) for n in names]
        text = (sql.SQL("t.{}::text").format(sql.Identifier(aside_col)) if aside_col
                else sql.SQL("NULL::text"))
        cur = self.conn.execute(sql.SQL("SELECT json_build_array({})::text, {} FROM {} t").format(
            sql.SQL(", ").join(exprs), text, table.ident))
        out = []
        for doc, pg_text in cur.fetchall():
            raw = dict(zip(names, _loads(doc), strict=True))
            if table.key:
                try:
                    key = _key([source_value(kinds[k], raw[k]) for k in table.key])
                except Refused as exc:
                    refused[json.dumps([str(raw[k]) for k in table.key])] = f"key: {exc}"
                    continue
            if aside_col and table.key:
                self.texts.setdefault(q, {})[key] = {aside_col: pg_text}
            values: dict[str, Any] = {}
            column = ""
            try:
                for c in table.payload:
                    column = c.name
                    values[c.name] = source_value(kinds[c.name], raw[c.name])
            except Refused as exc:
                if not table.key:
                    key = _row({k: repr(v) for k, v in raw.items()})
                refused[key] = f"{column}: {exc}"
                self.refused_raw.setdefault(q, {})[key] = _unwrapped(raw[column])
                continue
            if outside is not None and table.key and (
                    pg_text is None and outside(None) or pg_text is not None and outside(pg_text)):
                refused[key] = f"{aside_col}: the limit's value (not compared)"
                self.refused_raw.setdefault(q, {})[key] = _unwrapped(raw[aside_col])
                self.aside_values.setdefault(q, {})[key] = values
                continue
            row = _row(values)
            if not table.key:
                key = row
            cols[key] = {k: _cell(v) for k, v in values.items()}
            out.append((key, row))
        return out

    def columns(self, table: TableDef, keys: list[str]) -> dict[str, dict[str, str | None]]:
        cols = self._cols.get(table.qualified, {})
        return {k: dict(cols[k]) for k in keys if k in cols}


def _unwrapped(v: Any) -> Any:
    """A raw source value as limits.py reads it (a multi-dimensional array: its nested list)."""
    return v["$multidim"] if isinstance(v, dict) and "$multidim" in v else v


MISSING = {"$missing": "no such field"}


class MongoTargetSide:
    """One MongoDB database; a table's collection is named by the table (no schema)."""

    def __init__(self, db: Any, skip: dict[str, dict[str, str]]) -> None:
        self.db = db
        self.skip = skip  # refused keys: not compared
        self._cols: dict[str, dict[str, dict[str, str]]] = {}
        #: what the target holds for refused keys (a refusal must not be an alteration)
        self.held: dict[str, dict[str, str]] = {}
        self.held_values: dict[str, dict[str, dict[str, Any]]] = {}

    def _id_key(self, table: TableDef, kinds: dict[str, Kind], _id: Any) -> str:
        if len(table.key) == 1:
            if isinstance(_id, dict):
                return _key([_unexpected(_id)])
            return _key([target_value(kinds[table.key[0]], _id)])
        if not isinstance(_id, dict) or list(_id) != list(table.key):
            return _key([_unexpected(_id)])  # not {col: value} in key order
        return _key([target_value(kinds[k], _id[k]) for k in table.key])

    def rows(self, table: TableDef) -> Iterable[tuple[str, str]]:
        kinds = _kinds(table)
        cols = self._cols.setdefault(table.qualified, {})
        skip = self.skip.get(table.qualified, {})
        out = []
        for doc in self.db[table.name].find():
            _id = doc.pop("_id", None)
            values = {c.name: MISSING if c.name not in doc else
                      target_value(kinds[c.name], doc.pop(c.name)) for c in table.payload}
            extra = {f"(extra field) {k}": repr(v)[:300] for k, v in doc.items()}
            if not table.key:  # compared as a multiset of rows, `_id` whatever it is
                row = _row({**values, **extra})
                out.append((row, row))
                continue
            key = self._id_key(table, kinds, _id)
            if key in skip:
                self.held.setdefault(table.qualified, {})[key] = _row(values)
                self.held_values.setdefault(table.qualified, {})[key] = values
                continue
            values.update(extra)
            cols[key] = {k: _cell(v) for k, v in values.items()}
            out.append((key, _row(values)))
        return out

    def columns(self, table: TableDef, keys: list[str]) -> dict[str, dict[str, str | None]]:
        cols = self._cols.get(table.qualified, {})
        return {k: dict(cols[k]) for k in keys if k in cols}


def compare_mongo(source_dsn: str, mongo_uri: str, database: str, tables: list[TableDef],
                  limit: int = 5, aside: dict[str, Aside] | None = None,
                  ) -> dict[str, TableComparison]:
    """Every table of `tables`: the source against its collection; `refused` holds the rows the
    contract refuses (not compared) and, for the tables in `aside`, the rows holding a limit's
    value (`refused_exact`: those of them the target holds exactly as the contract maps the
    source); those tables' `source_values` get PostgreSQL's text of the aside column."""
    from pymongo import MongoClient

    client: Any = MongoClient(mongo_uri, tz_aware=False)
    FERRETDB["on"] = "ferretdbVersion" in client.admin.command("buildInfo")
    DECIMAL128["on"] = not FERRETDB["on"]
    try:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            for name, value in {**SESSION, **MONGO_SESSION}.items():
                conn.execute("SELECT set_config(%s, %s, false)", [name, value])
            source = MongoSourceSide(conn, aside)
            target = MongoTargetSide(client[database], source.refused)
            out = {}
            for t in tables:
                result = compare_sides(source, target, t, None if aside and t.qualified in aside
                                       else limit)
                q = t.qualified
                held = target.held.get(q, {})
                result.refused = {
                    k: why + (f"; the target holds {held[k][:160]}" if k in held else
                              "; not on the target")
                    for k, why in source.refused.get(q, {}).items()}
                raw = source.refused_raw.get(q, {})
                values = target.held_values.get(q, {})
                result.refused_values = {k: (raw.get(k), values.get(k)) for k in result.refused}
                mapped = source.aside_values.get(q, {})
                result.refused_exact = {k for k, v in mapped.items()
                                        if k in values and _row(values[k]) == _row(v)}
                result.source_values = source.texts.get(q, {})
                out[q] = result
            return out
    finally:
        client.close()
