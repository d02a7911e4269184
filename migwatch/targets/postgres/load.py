"""The initial load into a PostgreSQL target by COPY: a source table's rows streamed from
`COPY … TO STDOUT` into `COPY … FROM STDIN`, in one target transaction that also records the
table's position row (snapshot rows, done) — a table is loaded and recorded, or neither."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from psycopg import sql

from migwatch.config import Endpoint, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.targets.postgres.positions import POSITIONS, ensure_tables

APPLICATION = "migwatch-load"
#: the loader's threads create the position table once, not in a race (CREATE SCHEMA IF NOT
#: EXISTS run at once from two sessions fails on pg_namespace's unique index)
_ENSURED = threading.Lock()


def copy_into(endpoint: Endpoint, migration_id: str, table: TableSpec, info: pg.TableInfo,
              source: Any, empty_first: bool,
              on_rows: Callable[[int, int], None] | None = None) -> int:
    """`COPY (SELECT <columns> …) TO STDOUT` on `source` (in the load's snapshot) streamed
    into `COPY … FROM STDIN` on the target; generated columns are left to each side."""
    for statement in pg.COPY_SESSION:
        source.execute(statement)
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in info.columns)
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
        cols, sql.Identifier(table.schema_name, table.name))
    with source.cursor() as cur, cur.copy(query) as rows_out:
        return _copy_into(endpoint, migration_id, table, cols, rows_out, empty_first, on_rows)


def _copy_into(endpoint: Endpoint, migration_id: str, table: TableSpec, cols: sql.Composable,
               rows_out: Any, empty_first: bool,
               on_rows: Callable[[int, int], None] | None) -> int:
    schema, name = table.target_parts
    target = sql.Identifier(schema, name)
    with pg.connect_endpoint(endpoint, "target", application=APPLICATION) as conn, \
            pg.translated(f"target: load {table.target_name}"):
        with _ENSURED:
            ensure_tables(conn)
            conn.commit()
        for statement in pg.COPY_SESSION:
            conn.execute(statement)
        # the applier writes as replication does: the target's triggers and foreign keys
        # do not fire on replicated rows (post-data objects are built after the load anyway)
        conn.execute("SET session_replication_role = replica")
        if empty_first:
            conn.execute(sql.SQL("TRUNCATE {}").format(target))
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, cols)) as into:
                for data in rows_out:
                    into.write(data)
                    if on_rows is not None:  # text COPY ends each row, and only a row, in \n
                        chunk = bytes(data)
                        on_rows(chunk.count(b"\n"), len(chunk))
            rows = max(0, cur.rowcount)
        conn.execute(sql.SQL(
            "INSERT INTO {} AS p (migration_id, table_name, snapshot_rows, snapshot_done, "
            "updated_at) VALUES (%s, %s, %s, true, now()) ON CONFLICT (migration_id, table_name) "
            "DO UPDATE SET snapshot_rows = EXCLUDED.snapshot_rows, snapshot_done = true, "
            "updated_at = now()").format(POSITIONS), [migration_id, table.source, rows])
        conn.commit()
    return rows
