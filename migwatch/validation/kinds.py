"""The kind of a PostgreSQL column for validation: how its keys order and how its values compare."""

from __future__ import annotations

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
