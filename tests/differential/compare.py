"""The independent comparator: target == source, decided by PostgreSQL's own text output.

It shares no code with migwatch's applier, mapping or validator (it imports nothing from
migwatch). Each side computes, per row, the text PostgreSQL gives the whole row (`t::text`: every
column's output function, so array bounds, json whitespace, timetz offsets and numeric scales all
count) under the same session settings, keyed by the JSON text of the key columns. Keyed tables
are compared key by key; keyless tables as multisets of row texts (with counts). The first few
differing keys are reported with both sides' values column by column.

A side is anything that yields (key text, row fingerprint) pairs and can describe given keys
column by column — `PgSide` here; a MongoDB side re-encodes documents the same way (see
`compare_mongo.py`), so one `compare_sides` judges both.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from psycopg import sql

from tests.differential.schema import TableDef

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
        return head + "".join(f"\n    {d.describe()}" for d in self.first)


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
        """Column → text for each given key that exists."""


# ----------------------------------------------------------------------------- PostgreSQL
def connect(dsn: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    for name, value in SESSION.items():
        conn.execute("SELECT set_config(%s, %s, false)", [name, value])
    return conn


def _key_json(table: TableDef) -> sql.Composable:
    return sql.SQL("json_build_array({})::text").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in table.key))


class PgSide:
    """One PostgreSQL database; tables are found by the same schema and name."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def rows(self, table: TableDef) -> Iterable[tuple[str, str]]:
        key = _key_json(table) if table.key else sql.SQL("t::text")
        yield from self.conn.execute(sql.SQL(
            'SELECT {k}, t::text FROM {t} t ORDER BY {k} COLLATE "C"').format(
            k=key, t=table.ident)).fetchall()

    def columns(self, table: TableDef, keys: list[str]) -> dict[str, dict[str, str | None]]:
        if not keys:
            return {}
        names = [c.name for c in table.columns]
        key = _key_json(table) if table.key else sql.SQL("t::text")
        cur = self.conn.execute(sql.SQL("SELECT {k}, {cols} FROM {t} t WHERE {k} = ANY(%s)").format(
            k=key, t=table.ident,
            cols=sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(n))
                                    for n in names)), [keys])
        return {r[0]: dict(zip(names, r[1:], strict=True)) for r in cur.fetchall()}


def compare_sides(source: Side, target: Side, table: TableDef, limit: int = 5,
                  ) -> TableComparison:
    """Compare one table on two sides; `first` holds up to `limit` differences, in key order
    (byte order of the key's JSON text)."""
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
                      tgt: list[tuple[str, str]], limit: int) -> TableComparison:
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
        if len(out.first) < limit:
            out.first.append(RowDiff("count", row, counts=(a, b)))
    return out


def compare_pg(source_dsn: str, target_dsn: str, tables: list[TableDef],
               limit: int = 5) -> dict[str, TableComparison]:
    """Every table of `tables`, source database against target database."""
    with connect(source_dsn) as s, connect(target_dsn) as t:
        src, tgt = PgSide(s), PgSide(t)
        return {tb.qualified: compare_sides(src, tgt, tb, limit) for tb in tables}
