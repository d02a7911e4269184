"""The independent comparator: target == source, decided by PostgreSQL's own text output.

It shares no code with migwatch's applier, mapping or validator (it imports nothing from
migwatch). Each side computes, per row, the text PostgreSQL gives the whole row (`t::text`: every
column's output function, so array bounds, json whitespace and numeric scales all count) under
the same session settings, keyed by the JSON text of the key columns. One documented exception,
written here in the comparator's own SQL: a timetz column is compared as the same instant at
+00 (`v AT TIME ZONE 'UTC'`; a timetz[] element by element, with its dimensions and bounds),
because Debezium carries the instant, not the offset (docs/types.md). Keyed tables
are compared key by key; keyless tables as multisets of row texts (with counts). The first few
differing keys are reported with both sides' values column by column.

A side is anything that yields (key text, row fingerprint) pairs and can describe given keys
column by column — `PgSide` here; a MongoDB side re-encodes documents the same way (see
`compare_mongo.py`), so one `compare_sides` judges both.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql

from tests.differential.schema import ColumnDef, TableDef

#: every setting that changes a type's text output, fixed on both sides
SESSION = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "xmloption": "content",
}
SHOWN = 100  # characters of a value shown in a report (its length is always shown)
ROWS_SHOWN = 5  # differing rows a report quotes (a limit class's comparison holds them all)


@dataclass
class RowDiff:
    """One differing key: missing on the target, extra on it, or changed (or, keyless, a row
    text whose count differs)."""

    kind: str
    key: str
    columns: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    counts: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.counts is not None:
            return f"row {_short(self.key)}: source×{self.counts[0]} target×{self.counts[1]}"
        head = f"{self.kind} key={_short(self.key)}"
        cols = "; ".join(f"{c}: source={_short(s)} target={_short(t)}"
                         for c, (s, t) in self.columns.items())
        return f"{head} {cols}" if cols else head


@dataclass
class TableComparison:
    table: str
    source_rows: int = 0
    target_rows: int = 0
    missing: int = 0
    extra: int = 0
    changed: int = 0
    first: list[RowDiff] = field(default_factory=list)
    error: str | None = None
    #: MongoDB target: rows the contract refuses (key → column: why), not compared
    refused: dict[str, str] = field(default_factory=dict)
    #: MongoDB target, refused rows: the refused source value (PostgreSQL's JSON of it) and
    #: what the target holds for the key (its canonical payload; None: not on the target)
    refused_values: dict[str, tuple[Any, dict[str, Any] | None]] = field(default_factory=dict)
    #: MongoDB target, rows set aside for a limit (compare_mongo's `aside`) that the target
    #: holds exactly as the contract maps the source (the validator finds them equal)
    refused_exact: set[str] = field(default_factory=set)
    #: limit classes: every source row's column texts, as compared (key → column → text)
    source_values: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return self.error is None and not (self.missing or self.extra or self.changed)

    def describe(self) -> str:
        if self.error:
            return f"{self.table}: cannot compare: {self.error}"
        head = (f"{self.table}: source {self.source_rows} rows, target {self.target_rows}; "
                f"missing {self.missing}, extra {self.extra}, changed {self.changed}")
        if self.refused:
            example = next(iter(self.refused.items()))
            head += (f"; {len(self.refused)} refused by the contract, e.g. {example[0]} "
                     f"({example[1]})")
        if self.equal:
            return (f"{self.table}: equal ({self.source_rows} rows"
                    + (f", {len(self.refused)} refused" if self.refused else "") + ")")
        more = len(self.first) - ROWS_SHOWN
        return head + "".join(f"\n    {d.describe()}" for d in self.first[:ROWS_SHOWN]) + (
            f"\n    … {more} more" if more > 0 else "")


def _short(v: str | None) -> str:
    if v is None:
        return "NULL"
    text = json.dumps(v, ensure_ascii=False)
    if len(v) <= SHOWN:
        return text
    return f"{json.dumps(v[:SHOWN], ensure_ascii=False)}… ({len(v)} chars)"


class Side(Protocol):
    def rows(self, table: TableDef) -> Iterable[tuple[str, str]]:
        """(key text, row fingerprint) per row; keyless tables: key text is the fingerprint."""

    def columns(self, table: TableDef, keys: list[str]) -> dict[str, dict[str, str | None]]:
        """Column → text for each given key that exists (as compared)."""


# ----------------------------------------------------------------------------- PostgreSQL
def connect(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    for name, value in SESSION.items():
        conn.execute("SELECT set_config(%s, %s, false)", [name, value])
    return conn


_TIMETZ = re.compile(r"^(time(\(\d\))? with time zone|timetz)$")


def _timetz(col: ColumnDef) -> str | None:
    """"scalar" or "array" for a timetz or timetz[] column (compared at UTC), else None."""
    kind = col.sql_type.lower().strip()
    if _TIMETZ.match(kind):
        return "scalar"
    if kind.endswith("[]") and _TIMETZ.match(kind[:-2].strip()):
        return "array"
    return None


def _value(col: ColumnDef) -> sql.Composable:
    """A column as the comparator compares it: itself, except timetz at UTC (the contract)."""
    ref = sql.SQL("t.{}").format(sql.Identifier(col.name))
    which = _timetz(col)
    if which == "scalar":
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(ref)
    if which == "array":
        # element by element, in order; dimensions and bounds kept in front unless they are
        # the plain one-dimensional [1:n] (so `{…}` reads as PostgreSQL writes it)
        return sql.SQL(
            "(CASE WHEN {c} IS NULL THEN NULL ELSE "
            "(CASE WHEN array_ndims({c}) = 1 AND array_lower({c}, 1) = 1 THEN '' "
            "ELSE coalesce(array_dims({c}) || '=', '') END) || coalesce("
            "(SELECT array_agg(x AT TIME ZONE 'UTC' ORDER BY o) "
            "FROM unnest({c}) WITH ORDINALITY AS u(x, o))::text, '{{}}') END)").format(c=ref)
    return ref


def _row(table: TableDef) -> sql.Composable:
    """The row's text: `t::text`, or the same record of the normalised columns."""
    if not any(_timetz(c) for c in table.columns):
        return sql.SQL("t::text")
    return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(_value(c) for c in table.columns))


def _key_json(table: TableDef) -> sql.Composable:
    return sql.SQL("json_build_array({})::text").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in table.key))


class PgSide:
    """One PostgreSQL database; tables are found by the same schema and name."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def rows(self, table: TableDef) -> Iterable[tuple[str, str]]:
        key = _key_json(table) if table.key else _row(table)
        yield from self.conn.execute(sql.SQL(
            'SELECT {k}, {r} FROM {t} t ORDER BY {k} COLLATE "C"').format(
            k=key, r=_row(table), t=table.ident)).fetchall()

    def columns(self, table: TableDef, keys: list[str] | None,
                ) -> dict[str, dict[str, str | None]]:
        """Column → text (as compared) for each given key that exists; None: every row."""
        if keys is not None and not keys:
            return {}
        names = [c.name for c in table.columns]
        key = _key_json(table) if table.key else _row(table)
        cur = self.conn.execute(sql.SQL("SELECT {k}, {cols} FROM {t} t{where}").format(
            k=key, t=table.ident,
            cols=sql.SQL(", ").join(sql.SQL("{}::text").format(_value(c))
                                    for c in table.columns),
            where=sql.SQL("") if keys is None else sql.SQL(" WHERE {} = ANY(%s)").format(key)),
            None if keys is None else [keys])
        return {r[0]: dict(zip(names, r[1:], strict=True)) for r in cur.fetchall()}


def compare_sides(source: Side, target: Side, table: TableDef, limit: int | None = 5,
                  ) -> TableComparison:
    """Compare one table on two sides; `first` holds up to `limit` differences (None: all), in
    key order (byte order of the key's JSON text)."""
    out = TableComparison(table.qualified)
    try:
        src = list(source.rows(table))
    except Exception as exc:
        out.error = f"source: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        return out
    try:
        tgt = list(target.rows(table))
    except Exception as exc:
        out.error = f"target: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        return out
    out.source_rows, out.target_rows = len(src), len(tgt)
    if not table.key:
        return _compare_multiset(out, src, tgt, limit)
    s, t = dict(src), dict(tgt)
    order = sorted(set(s) | set(t), key=lambda k: k.encode())
    bad: list[tuple[str, str]] = []
    for k in order:
        if k not in t:
            out.missing += 1
            bad.append(("missing", k))
        elif k not in s:
            out.extra += 1
            bad.append(("extra", k))
        elif s[k] != t[k]:
            out.changed += 1
            bad.append(("changed", k))
    shown = bad[:limit]
    keys = [k for _, k in shown]
    scols = source.columns(table, keys)
    tcols = target.columns(table, keys)
    for kind, k in shown:
        a, b = scols.get(k), tcols.get(k)
        diff = RowDiff(kind, k)
        if a is not None and b is not None:
            diff.columns = {c: (a.get(c), b.get(c)) for c in a if a.get(c) != b.get(c)}
        elif a is not None:
            diff.columns = {c: (v, None) for c, v in a.items() if c not in table.key}
        elif b is not None:
            diff.columns = {c: (None, v) for c, v in b.items() if c not in table.key}
        out.first.append(diff)
    return out


def _compare_multiset(out: TableComparison, src: list[tuple[str, str]],
                      tgt: list[tuple[str, str]], limit: int | None) -> TableComparison:
    s = Counter(r for _, r in src)
    t = Counter(r for _, r in tgt)
    for row in sorted(set(s) | set(t), key=lambda r: r.encode()):
        a, b = s.get(row, 0), t.get(row, 0)
        if a == b:
            continue
        if a > b:
            out.missing += a - b
        else:
            out.extra += b - a
        if limit is None or len(out.first) < limit:
            out.first.append(RowDiff("count", row, counts=(a, b)))
    return out


def compare_pg(source_dsn: str, target_dsn: str, tables: list[TableDef],
               limit: int = 5, every: frozenset[str] = frozenset(),
               ) -> dict[str, TableComparison]:
    """Every table of `tables`, source database against target database; the tables named in
    `every` (qualified) describe every difference, and keep every source row's column texts in
    `source_values` (a limit class's check reads them all)."""
    with connect(source_dsn) as s, connect(target_dsn) as t:
        src, tgt = PgSide(s), PgSide(t)
        out = {}
        for tb in tables:
            full = tb.qualified in every
            out[tb.qualified] = compare_sides(src, tgt, tb, None if full else limit)
            if full and out[tb.qualified].error is None:
                out[tb.qualified].source_values = src.columns(tb, None)
        return out
