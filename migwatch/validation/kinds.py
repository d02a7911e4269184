"""The kind of a PostgreSQL column for validation: how its keys order and how its values compare."""

from __future__ import annotations

import psycopg
from psycopg import sql

from migwatch.connectors import postgres as pg

#: the precision a comparison holds timestamps to (`TableResult.precision`)
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


#: strings that no linguistic collation orders as bytes do ('B' < 'a', '_' between them, ...)
_PROBE = ["a", "B", "ä", "Z", "_x", "a b", "ab", "aB", "A", "é", "e", "~", "😀", "東京", "1", ""]
_BYTEWISE_LOCALES = {"c", "posix", "c.utf8", "c.utf-8"}


def byte_ordered_keys(conn: psycopg.Connection, info: pg.TableInfo,
                      ) -> tuple[set[str], set[str]]:
    """The primary-key columns that have a collation, and those among them whose collation
    already orders keys bytewise: C or POSIX, or a C.UTF-8 locale (code point order, the same as
    UTF-8 bytes) — checked by ordering a probe of strings that linguistic collations order
    differently. Keys of the first set but not the second are compared `COLLATE "C"`."""
    if not info.primary_key:
        return set(), set()
    rows = conn.execute(
        "SELECT a.attname, a.attcollation <> 0, co.collname, co.collprovider, co.collcollate, "
        "ns.nspname, d.datcollate, to_jsonb(d) ->> 'datlocprovider' "
        "FROM pg_attribute a LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        "LEFT JOIN pg_namespace ns ON ns.oid = co.collnamespace "
        "CROSS JOIN pg_database d WHERE d.datname = current_database() "
        "AND a.attrelid = %s::regclass AND a.attname = ANY(%s)",
        [sql.Identifier(info.schema, info.name).as_string(conn), list(info.primary_key)],
    ).fetchall()
    collated: set[str] = set()
    bytewise: set[str] = set()
    for name, has, coll, provider, locale, schema, db_locale, db_provider in rows:
        if not has:
            continue
        collated.add(name)
        if coll in ("C", "POSIX", "ucs_basic"):
            bytewise.add(name)
            continue
        if coll == "default":
            provider, locale = db_provider or "c", db_locale
        if provider in ("c", "d") and (locale or "").lower() in _BYTEWISE_LOCALES:
            ordered = conn.execute(sql.SQL(
                "SELECT array_agg(x ORDER BY x COLLATE {}) = array_agg(x ORDER BY x COLLATE "
                '"C") FROM unnest(%s::text[]) x').format(sql.Identifier(schema, coll)),
                [_PROBE]).fetchone()
            if ordered is not None and ordered[0]:
                bytewise.add(name)
    return collated, bytewise
