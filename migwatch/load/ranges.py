"""Large tables split into key ranges, copied side by side and recorded one by one.

A table whose row estimate passes `snapshot.split_rows` is cut on the first column of its key
into `⌈estimate / split_rows⌉` ranges (at most `MAX_RANGES`): `k < b1`, `b1 ≤ k < b2`, …,
`k ≥ bn` — every row in exactly one range whatever the bounds are, because the bounds are key
values the source itself sorted (`ORDER BY k` over a page sample, `TABLESAMPLE SYSTEM`) and
each range is the source's own comparison with them. Bounds travel as the key's text form and
come back as untyped literals, so PostgreSQL reads them as the key's type.

The plan is stored on the target before any range is copied, and each range is recorded done
in the same target transaction as its rows (PostgreSQL; on MongoDB right after them), so a load
cut off resumes with the ranges left — from the plan it made, not a new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from psycopg import sql

from migwatch.config import TableSpec
from migwatch.connectors import postgres as pg

#: ranges one table is cut into at most (the sample gives ~50 bounds to pick from per range)
MAX_RANGES = 256
#: rows and pages sampled per range wanted, to place its bounds (pages: rows of one page
#: are often neighbours in key order)
_SAMPLE_ROWS = 50
_SAMPLE_PAGES = 8


@dataclass(frozen=True)
class KeyRange:
    """Range `number` (0-based) of `count` over the key column `column`: `low ≤ k < high`,
    an absent bound unbounded. `rows` and `done` are filled in as it is loaded."""

    table: str
    number: int
    count: int
    column: str
    low: str | None
    high: str | None
    rows: int = 0
    done: bool = False

    def condition(self) -> sql.Composable:
        """The range as a WHERE condition; its bounds are literals of unknown type, which
        PostgreSQL reads as the column's type."""
        key = sql.Identifier(self.column)
        parts: list[sql.Composable] = []
        if self.low is not None:
            parts.append(sql.SQL("{} >= {}").format(key, sql.Literal(self.low)))
        if self.high is not None:
            parts.append(sql.SQL("{} < {}").format(key, sql.Literal(self.high)))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def describe(self) -> str:
        return f"{self.table} range {self.number + 1}/{self.count}"

    def finished(self, rows: int) -> KeyRange:
        return replace(self, rows=rows, done=True)


def ranges_wanted(estimate: int, split_rows: int) -> int:
    return max(1, min(MAX_RANGES, math.ceil(estimate / split_rows))) if estimate > 0 else 1


def plan(conn: Any, table: TableSpec, info: pg.TableInfo, estimate: int,
         split_rows: int) -> list[KeyRange]:
    """The table's ranges, or [] when it stays whole (small, keyless, or too few distinct
    keys sampled to cut). `conn`: an autocommit source connection."""
    wanted = ranges_wanted(estimate, split_rows)
    if wanted < 2 or not info.primary_key:
        return []
    column = info.primary_key[0]
    key = sql.Identifier(column)
    ident = sql.Identifier(table.schema_name, table.name)
    with pg.translated(f"source: key ranges of {table.source}"):
        for statement in pg.COPY_SESSION:  # the bounds' text forms as the loaders read them
            conn.execute(statement)
        pages = conn.execute("SELECT greatest(1, pg_relation_size(%s::regclass) / "
                             "current_setting('block_size')::int)",
                             [ident.as_string(conn)]).fetchone()[0]
        percent = 100.0 * min(1.0, max(wanted * _SAMPLE_ROWS / estimate,
                                       wanted * _SAMPLE_PAGES / pages))
        sampled = [r[0] for r in conn.execute(sql.SQL(
            "SELECT s.k::text FROM (SELECT {key} AS k FROM {table} TABLESAMPLE SYSTEM (%s) "
            "REPEATABLE (0)) s GROUP BY s.k ORDER BY s.k").format(
                key=key, table=ident),
            [percent]).fetchall()]
    if len(sampled) < wanted:
        return []
    bounds = [sampled[len(sampled) * i // wanted] for i in range(1, wanted)]
    edges: list[str | None] = [None, *bounds, None]
    return [KeyRange(table.source, i, wanted, column, edges[i], edges[i + 1])
            for i in range(wanted)]
