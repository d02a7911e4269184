"""The definition each change event carries: its row's columns and their source types *as of
the change*.

The connector sends schemas-on envelopes with `column.propagate.source.type` (connector_config),
so every field of an event's row carries the PostgreSQL type Debezium read from pgoutput's
Relation message — the historic catalog logical decoding uses — with its length and scale
(`__debezium.source.column.type/length/scale`). An applier behind several schema changes, or a
user's acceptance of a changed type while older events wait, therefore reads each event by the
definition it was written under, not by the catalog as it is now. Only a column's optionality
and default are Debezium's reading of the *current* catalog (DBZ-2790): neither is used from
here — a default never stands in for a value.

A field's type is compared with the catalog's as a `Signature` — the type's name without schema
or quotes, upper case (Debezium's spelling: snapshot events quote and qualify a type outside
`public`, streamed ones do not), and the modifiers that change what a value is (a varchar's
length, a numeric's precision and scale, a timestamp's fractional digits, a bit string's length).
Where the catalog's column has the event's signature the catalog's definition is taken whole
(its `format_type`, domain base, enum); where it does not (the column changed again since the
event was written) the type is looked up by name and formatted with the event's modifiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from migwatch.connectors import postgres as pg
from migwatch.errors import PermanentError

log = logging.getLogger("migwatch.applier")

_PARAM = "__debezium.source.column."
#: Debezium's length of a type without one (varchar, text, bytea, …)
_UNBOUNDED = 2147483647
_CHARS = ("VARCHAR", "BPCHAR")
_BITS = ("BIT", "VARBIT")
_TIMES = ("TIMESTAMP", "TIMESTAMPTZ", "TIME", "TIMETZ")

#: (type name, modifiers): see the module doc
Signature = tuple[str, Any]


class UnknownEventType(PermanentError):
    """An event's column has a type the source no longer has (dropped since the event)."""


@dataclass(frozen=True)
class Field:
    """One column of an event's row as the event defines it."""

    name: str
    type: str           # Debezium's spelling, e.g. INT4, _VARCHAR, "S2"."COLOR"
    length: int | None
    scale: int | None

    @property
    def signature(self) -> Signature:
        return event_signature(self.type, self.length, self.scale)


def row_fields(schema: Any) -> tuple[Field, ...] | None:
    """The fields of an envelope schema's row (`after`, else `before`), or None when the schema
    carries no source types (a connector without `column.propagate.source.type`)."""
    parsed = orjson.loads(bytes(schema)) if not isinstance(schema, dict) else schema
    rows = {f.get("field"): f for f in (parsed or {}).get("fields", [])}
    row = rows.get("after") or rows.get("before")
    if not row or not isinstance(row.get("fields"), list):
        return None
    out = []
    for f in row["fields"]:
        params = f.get("parameters") or {}
        source_type = params.get(_PARAM + "type")
        if source_type is None:
            return None
        out.append(Field(str(f["field"]), str(source_type), _int(params.get(_PARAM + "length")),
                         _int(params.get(_PARAM + "scale"))))
    return tuple(out)


def _int(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


#: the JDBC driver's names for a serial column's type (snapshot events use them)
_ALIASES = {"SERIAL": "INT4", "SERIAL4": "INT4", "BIGSERIAL": "INT8", "SERIAL8": "INT8",
            "SMALLSERIAL": "INT2", "SERIAL2": "INT2"}


def type_name(debezium_type: str) -> str:
    """'"S2"."COLOR"' → 'COLOR'; 'INT4' → 'INT4'; 'BIGSERIAL' → 'INT8'."""
    name = debezium_type.rsplit(".", 1)[-1].replace('"', "").upper()
    return _ALIASES.get(name, name)


def event_signature(debezium_type: str, length: int | None, scale: int | None) -> Signature:
    name = type_name(debezium_type)
    base = name.removeprefix("_")
    if base in _CHARS or base in _BITS:
        return name, None if length in (None, _UNBOUNDED) else length
    if base == "NUMERIC":
        # unconstrained numeric: length 0 in snapshot events, 131089 in streamed ones
        return name, None if length in (None, 0, 131089) else (length, scale or 0)
    if base in _TIMES:
        return name, 6 if scale is None else scale
    return name, None


def catalog_signature(typname: str, typmod: int) -> Signature:
    name = typname.upper()
    base = name.removeprefix("_")
    if base in _CHARS:
        return name, None if typmod < 0 else typmod - 4
    if base in _BITS:
        return name, None if typmod < 0 else typmod
    if base == "NUMERIC":
        return name, None if typmod < 0 else ((typmod - 4) >> 16, (typmod - 4) & 0xFFFF)
    if base in _TIMES:
        return name, 6 if typmod < 0 else typmod
    return name, None


def typmod_of(sig: Signature) -> int:
    """The catalog's type modifier for a signature (-1: none, the type's full range)."""
    name, mod = sig
    base = name.removeprefix("_")
    if mod is None:
        return -1
    if base in _CHARS:
        return int(mod) + 4
    if base in _BITS:
        return int(mod)
    if base == "NUMERIC":
        return ((int(mod[0]) << 16) | int(mod[1])) + 4
    if base in _TIMES:
        return -1 if mod == 6 else int(mod)
    return -1


def resolve(conn: psycopg.Connection, schema: str, table: str, fields: tuple[Field, ...],
            info: pg.TableInfo | None) -> tuple[list[pg.Column], frozenset[str]]:
    """The event's columns as PostgreSQL types: the catalog's column where its signature is the
    event's (`info` is the table as the catalog has it now), else the event's type looked up by
    name (UnknownEventType when the source has no such type any more); and the event's fields
    that are generated columns on the source (snapshot reads carry them; each side computes
    them itself: their values go nowhere)."""
    now, generated = _catalog_signatures(conn, schema, table)
    skipped = frozenset(f.name for f in fields if f.name in generated)
    out = []
    for f in fields:
        if f.name in skipped:
            continue
        if info is not None and now.get(f.name) == f.signature:
            out.append(info.column(f.name))
            continue
        try:
            out.append(_column_of_type(conn, f, schema))
        except UnknownEventType:
            if info is None or f.name not in now or \
                    all(c.name != f.name for c in info.columns):
                raise
            # a spelling of the type this module does not know: the catalog's column, as
            # events without a definition are read
            log.warning("table %s.%s: column %r: type %s not found by name; read by the "
                        "source's current definition", schema, table, f.name, f.type)
            out.append(info.column(f.name))
    return out, skipped


def _catalog_signatures(conn: psycopg.Connection, schema: str, table: str,
                        ) -> tuple[dict[str, Signature], set[str]]:
    """The table's columns' signatures, and its generated columns' names."""
    ident = sql.Identifier(schema, table).as_string(conn)
    rows = conn.execute(
        "SELECT a.attname, t.typname, a.atttypmod, a.attgenerated <> '' FROM pg_attribute a "
        "JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        [ident]).fetchall()
    return ({r[0]: catalog_signature(r[1], int(r[2])) for r in rows if not r[3]},
            {r[0] for r in rows if r[3]})


def _column_of_type(conn: psycopg.Connection, f: Field, schema: str) -> pg.Column:
    """A column of the event's type (not NULL-constrained: the event cannot say)."""
    sig = f.signature
    name = sig[0]
    qualifier = f.type.rsplit(".", 1)[0].replace('"', "").upper() if "." in f.type else None
    row = conn.execute(
        "SELECT t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE upper(t.typname) = %s AND (%s::text IS NULL OR upper(n.nspname) = %s) "
        "ORDER BY n.nspname = 'pg_catalog' DESC, n.nspname = %s DESC, n.nspname = 'public' DESC "
        "LIMIT 1", [name, qualifier, qualifier, schema]).fetchone()
    if row is None:
        raise UnknownEventType(f"column {f.name!r}: its type {f.type} when the event was "
                               "written is no longer on the source")
    typ = pg.describe_type(conn, int(row[0]), typmod_of(sig))
    return pg.Column(f.name, typ[0], False, base=typ[1], enum=typ[2])
