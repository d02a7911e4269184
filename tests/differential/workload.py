"""The seeded random workload on the source: everything it does follows from `random.Random(seed)`.

`load` writes the initial rows (what Debezium's snapshot reads): every edge value of every column
at least once, then random rows. `run` then streams operations, one transaction of one to three
statements at a time, paced over a given number of seconds:

    insert       a fresh key (a deleted key may come back), edge values drawn often (and the
                 stream-only ones: values Debezium carries when streamed, not in its snapshot)
    update       a random subset of the columns
    update-small only the small column `n` — a TOASTed neighbour stays untouched, so pgoutput
                 sends it as "unchanged" and Debezium as its placeholder
    pk-change    the key itself moves (with `n`)
    delete       one row
    truncate     rare; the table then fills again through inserts
Keyless tables (REPLICA IDENTITY FULL) get exact duplicates and have single rows updated and
deleted by ctid, so one of two identical rows changes.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from tests.differential.schema import ColumnDef, TableDef

TRUNCATE_CHANCE = 0.002
EDGE_CHANCE = 0.2
STREAM_EDGE_CHANCE = 0.3  # a column's stream-only edge values (ColumnDef.stream_edges)
HISTORY = 8  # operations remembered per key, shown beside a differing key
NUMBERS = ("smallint", "integer", "bigint")


@dataclass
class TableState:
    """What the workload knows of a table: its live keys (keyed) or row count and some rows."""

    keys: list[tuple[str, ...]] = field(default_factory=list)
    live: set[tuple[str, ...]] = field(default_factory=set)
    rows: int = 0
    seen: list[tuple[str | None, ...]] = field(default_factory=list)

    def add(self, key: tuple[str, ...]) -> None:
        self.keys.append(key)
        self.live.add(key)

    def remove(self, key: tuple[str, ...]) -> None:
        self.keys.remove(key)
        self.live.discard(key)

    def clear(self) -> None:
        self.keys.clear()
        self.live.clear()
        self.rows = 0
        self.seen.clear()


def _cast(col: ColumnDef) -> sql.Composable:
    return sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(col.sql_type))


class Workload:
    """Operations on `tables`, all following from `seed`.

    Each table draws its values, keys and operations from its own `random.Random(f"{seed}/
    {schema.table}")` and gets `per_weight × weight` operations, so what happens to a table
    depends on the seed and the table only — a run of one class replays exactly what that
    class saw in a run of all. `random.Random(seed)` only interleaves the tables' operations
    into transactions."""

    def __init__(self, tables: list[TableDef], seed: int) -> None:
        self.tables = tables
        self.seed = seed
        self.schedule = random.Random(seed)
        self.rngs = {t.qualified: random.Random(f"{seed}/{t.qualified}") for t in tables}
        self.rng = self.schedule  # the current table's generator while it is written
        self.state = {t.qualified: TableState() for t in tables}
        self.counts: Counter[str] = Counter()
        self.per_table: Counter[str] = Counter()
        #: per table, per key (as the comparator writes it: the JSON array of the key), the
        #: last operations on it — so a differing key says how it got there
        self.history: dict[str, dict[str, list[str]]] = {t.qualified: {} for t in tables}

    def _note(self, table: TableDef, key: tuple[str, ...], what: str) -> None:
        values = [int(v) if table.column(k).sql_type in NUMBERS else v
                  for k, v in zip(table.key, key, strict=True)]
        text = json.dumps(values, ensure_ascii=False)
        ops = self.history[table.qualified].setdefault(text, [])
        ops.append(what)
        del ops[:-HISTORY]

    # ------------------------------------------------------------------ values
    def _value(self, col: ColumnDef, initial_row: int | None = None) -> str | None:
        if initial_row is not None and initial_row < len(col.edges):
            return col.edges[initial_row]
        if initial_row is None and col.stream_edges and self.rng.random() < STREAM_EDGE_CHANCE:
            return self.rng.choice(col.stream_edges)
        if col.edges and self.rng.random() < EDGE_CHANCE:
            return self.rng.choice(col.edges)
        return col.gen(self.rng)

    def _new_key(self, table: TableDef, initial_row: int | None = None) -> tuple[str, ...]:
        assert table.new_key is not None
        live = self.state[table.qualified].live
        first = table.column(table.key[0])
        if (initial_row is not None and len(table.key) == 1 and initial_row < len(first.edges)
                and (first.edges[initial_row],) not in live):
            return (first.edges[initial_row],)
        for _ in range(1000):
            key = table.new_key(self.rng)
            if key not in live:
                return key
        raise RuntimeError(f"{table.qualified}: no fresh key after 1000 draws")

    # ------------------------------------------------------------------ statements
    def _insert(self, conn: psycopg.Connection, table: TableDef,
                initial_row: int | None = None) -> None:
        st = self.state[table.qualified]
        values: dict[str, str | None]
        if table.key:
            key = self._new_key(table, initial_row)
            values = dict(zip(table.key, key, strict=True))
            for c in table.payload:
                values[c.name] = self._value(c, initial_row)
            st.add(key)
            self._note(table, key, "initial" if initial_row is not None else "insert")
        elif table.duplicates and st.seen and self.rng.random() < 0.3:
            row: tuple[str | None, ...] = self.rng.choice(st.seen)
            values = dict(zip([c.name for c in table.columns], row, strict=True))
            self.counts["insert-duplicate"] += 1
        else:
            values = {c.name: self._value(c, initial_row) for c in table.columns}
            st.seen.append(tuple(values.values()))
        st.rows += 1
        cols = list(table.columns)
        conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table.ident, sql.SQL(", ").join(sql.Identifier(c.name) for c in cols),
            sql.SQL(", ").join(_cast(c) for c in cols)), [values[c.name] for c in cols])

    def _where_key(self, table: TableDef) -> sql.Composable:
        return sql.SQL("({}) = ({})").format(
            sql.SQL(", ").join(sql.Identifier(k) for k in table.key),
            sql.SQL(", ").join(_cast(table.column(k)) for k in table.key))

    def _set(self, cols: list[ColumnDef]) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c.name), _cast(c))
                                  for c in cols)

    def _update(self, conn: psycopg.Connection, table: TableDef, small_only: bool) -> None:
        payload = table.payload
        if small_only and table.small:
            cols = [table.column(table.small)]
        else:
            cols = self.rng.sample(payload, self.rng.randint(1, len(payload)))
        values = [self._value(c) for c in cols]
        st = self.state[table.qualified]
        if table.key:
            key = self.rng.choice(st.keys)
            conn.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(
                table.ident, self._set(cols), self._where_key(table)), [*values, *key])
            self._note(table, key, "update-small" if small_only and table.small
                       else "update(" + ",".join(c.name for c in cols) + ")")
        else:
            conn.execute(sql.SQL(
                "UPDATE {} SET {} WHERE ctid = (SELECT ctid FROM {} OFFSET %s LIMIT 1)").format(
                table.ident, self._set(cols), table.ident), [*values, self.rng.randrange(st.rows)])

    def _pk_change(self, conn: psycopg.Connection, table: TableDef) -> None:
        st = self.state[table.qualified]
        old = self.rng.choice(st.keys)
        new = self._new_key(table)
        key_cols = [table.column(k) for k in table.key]
        cols = key_cols + ([table.column(table.small)] if table.small else [])
        values = [*new, *([self._value(table.column(table.small))] if table.small else [])]
        conn.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(
            table.ident, self._set(cols), self._where_key(table)), [*values, *old])
        st.remove(old)
        st.add(new)
        self._note(table, old, "pk-change away")
        self._note(table, new, "pk-change here")

    def _delete(self, conn: psycopg.Connection, table: TableDef) -> None:
        st = self.state[table.qualified]
        if table.key:
            key = self.rng.choice(st.keys)
            conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(
                table.ident, self._where_key(table)), list(key))
            st.remove(key)
            self._note(table, key, "delete")
        else:
            conn.execute(sql.SQL(
                "DELETE FROM {} WHERE ctid = (SELECT ctid FROM {} OFFSET %s LIMIT 1)").format(
                table.ident, table.ident), [self.rng.randrange(st.rows)])
            st.rows -= 1

    def _truncate(self, conn: psycopg.Connection, table: TableDef) -> None:
        conn.execute(sql.SQL("TRUNCATE {}").format(table.ident))
        for key in self.state[table.qualified].keys:
            self._note(table, key, "truncate")
        self.state[table.qualified].clear()

    def _one(self, conn: psycopg.Connection, table: TableDef) -> None:
        self.rng = self.rngs[table.qualified]
        st = self.state[table.qualified]
        count = len(st.keys) if table.key else st.rows
        r = self.rng.random()
        if r < TRUNCATE_CHANCE and count and table.truncate:
            op = "truncate"
        elif count < 3 or r < 0.30:
            op = "insert"
        elif r < 0.62:
            op = "update"
        elif r < 0.80:
            op = "update-small" if table.small else "update"
        elif r < 0.88 and table.key:
            op = "pk-change"
        else:
            op = "delete"
        if op == "insert":
            self._insert(conn, table)
        elif op == "update":
            self._update(conn, table, small_only=False)
        elif op == "update-small":
            self._update(conn, table, small_only=True)
        elif op == "pk-change":
            self._pk_change(conn, table)
        elif op == "delete":
            self._delete(conn, table)
        else:
            self._truncate(conn, table)
        self.counts[op] += 1
        self.per_table[table.qualified] += 1

    # ------------------------------------------------------------------ public
    def load(self, dsn: str, rows: int) -> int:
        """The initial rows of every table (one transaction per table); returns how many."""
        total = 0
        with psycopg.connect(dsn) as conn:
            for table in self.tables:
                self.rng = self.rngs[table.qualified]
                with conn.transaction():
                    for i in range(rows):
                        self._insert(conn, table, initial_row=i)
                total += rows
        self.counts["initial"] += total
        return total

    def plan(self, per_weight: float) -> list[TableDef]:
        """Every table `round(per_weight × weight)` times, interleaved by the seed."""
        slots = [t for t in self.tables for _ in range(max(1, round(per_weight * t.weight)))]
        self.schedule.shuffle(slots)
        return slots

    def run(self, dsn: str, per_weight: float, seconds: float,
            stop: threading.Event | None = None) -> Counter[str]:
        """`per_weight` operations per unit of table weight, spread evenly over `seconds`
        (later if the source is slow to keep up, never sooner); stops early when `stop` is
        set."""
        slots = self.plan(per_weight)
        operations = len(slots)
        start = time.monotonic()
        done = 0
        with psycopg.connect(dsn) as conn:
            while done < operations and not (stop and stop.is_set()):
                n = min(operations - done, self.schedule.randint(1, 3))
                try:
                    with conn.transaction():
                        for table in slots[done:done + n]:
                            self._one(conn, table)
                except psycopg.Error as exc:
                    raise RuntimeError(f"workload (seed {self.seed}) wrote something the source "
                                       f"refused after {done} operations: {exc}") from exc
                done += n
                self.counts["transactions"] += 1
                ahead = start + seconds * done / operations - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        return self.counts

    def summary(self) -> dict[str, Any]:
        return dict(sorted(self.counts.items()))
