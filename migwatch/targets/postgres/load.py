"""The initial load into a PostgreSQL target by COPY: a source table's rows (or one key range
of them) streamed from `COPY … TO STDOUT` into `COPY … FROM STDIN`, in one target transaction
that also records it — the table's position row (snapshot rows, done) or the range's row in the
load plan: loaded and recorded, or neither."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from psycopg import sql

from migwatch import names
from migwatch.config import Endpoint, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.load.ranges import KeyRange
from migwatch.targets.postgres.positions import LOAD_RANGES, POSITIONS, ensure_tables
from migwatch.targets.postgres.writer import may_set_replica_role

APPLICATION = "migwatch-load"
#: rows relayed between two progress reports
REPORT_ROWS = 5000
#: the loader's threads create the position table once, not in a race (CREATE SCHEMA IF NOT
#: EXISTS run at once from two sessions fails on pg_namespace's unique index)
_ENSURED = threading.Lock()


def copy_into(endpoint: Endpoint, migration_id: str, table: TableSpec, info: pg.TableInfo,
              source: Any, empty_first: bool, key_range: KeyRange | None = None,
              on_rows: Callable[[int, int], None] | None = None) -> int:
    """`COPY (SELECT <columns> … [WHERE <range>]) TO STDOUT` on `source` (in the load's
    snapshot) streamed into `COPY … FROM STDIN` on the target; generated columns are left to
    each side."""
    for statement in pg.COPY_SESSION:
        source.execute(statement)
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in info.columns)
    query = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT").format(
        cols, sql.Identifier(table.schema_name, table.name),
        key_range.condition() if key_range else sql.SQL("true"))
    with source.cursor() as cur, cur.copy(query) as rows_out:
        return _copy_into(endpoint, migration_id, table, cols, rows_out, empty_first,
                          key_range, on_rows)


def _copy_into(endpoint: Endpoint, migration_id: str, table: TableSpec, cols: sql.Composable,
               rows_out: Any, empty_first: bool, key_range: KeyRange | None,
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
        # as the applier writes (and only where it may: the pre-flight refused a target
        # whose triggers or foreign keys would fire without it) — replicated rows fire no
        # trigger or foreign key (post-data objects are built after the load anyway)
        if may_set_replica_role(conn):
            conn.execute("SET session_replication_role = replica")
        if empty_first:
            conn.execute(sql.SQL("TRUNCATE {}").format(target))
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, cols)) as into:
                # COPY TO sends one CopyData message per row: rows and bytes are counted
                # as they pass and told every REPORT_ROWS (a call per row costs the relay)
                count = size = 0
                for data in rows_out:
                    into.write(data)
                    count += 1
                    size += len(data)
                    if count >= REPORT_ROWS and on_rows is not None:
                        on_rows(count, size)
                        count = size = 0
                if count and on_rows is not None:
                    on_rows(count, size)
            rows = max(0, cur.rowcount)
        if key_range is None:
            record_loaded(conn, migration_id, table.source, rows)
        else:
            conn.execute(sql.SQL(
                "UPDATE {} SET rows = %s, done = true WHERE migration_id = %s AND "
                "table_name = %s AND range_no = %s").format(LOAD_RANGES),
                [rows, migration_id, table.source, key_range.number])
        conn.commit()
    return rows


def record_loaded(conn: Any, migration_id: str, table: str, rows: int) -> None:
    """The table's position row says it is loaded (in the caller's transaction)."""
    conn.execute(sql.SQL(
        "INSERT INTO {} AS p (migration_id, table_name, snapshot_rows, snapshot_done, "
        "updated_at) VALUES (%s, %s, %s, true, now()) ON CONFLICT (migration_id, table_name) "
        "DO UPDATE SET snapshot_rows = EXCLUDED.snapshot_rows, snapshot_done = true, "
        "updated_at = now()").format(POSITIONS), [migration_id, table, rows])


def read_plan(endpoint: Endpoint, migration_id: str, table: str) -> list[KeyRange]:
    with pg.connect_endpoint(endpoint, "target", autocommit=True,
                             application=APPLICATION) as conn, \
            pg.translated(f"target: load plan of {table}"):
        if not pg.table_exists(conn, names.POSITION_SCHEMA, names.LOAD_RANGES_TABLE):
            return []
        rows = conn.execute(sql.SQL(
            "SELECT range_no, range_count, key_column, low, high, rows, done FROM {} "
            "WHERE migration_id = %s AND table_name = %s ORDER BY range_no").format(LOAD_RANGES),
            [migration_id, table]).fetchall()
    return [KeyRange(table, r[0], r[1], r[2], r[3], r[4], int(r[5]), bool(r[6])) for r in rows]


def save_plan(endpoint: Endpoint, migration_id: str, table: str,
              ranges: list[KeyRange]) -> None:
    """The table's ranges, none loaded, in place of any plan it had."""
    with pg.connect_endpoint(endpoint, "target", application=APPLICATION) as conn, \
            pg.translated(f"target: save the load plan of {table}"):
        with _ENSURED:
            ensure_tables(conn)
            conn.commit()
        conn.execute(sql.SQL("DELETE FROM {} WHERE migration_id = %s AND table_name = %s"
                             ).format(LOAD_RANGES), [migration_id, table])
        with conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {} (migration_id, table_name, range_no, range_count, key_column, "
                "low, high) VALUES (%s, %s, %s, %s, %s, %s, %s)").format(LOAD_RANGES),
                [(migration_id, table, r.number, r.count, r.column, r.low, r.high)
                 for r in ranges])
        conn.commit()


def finish(endpoint: Endpoint, migration_id: str, table: str, rows: int) -> None:
    with pg.connect_endpoint(endpoint, "target", application=APPLICATION) as conn, \
            pg.translated(f"target: record {table} loaded"):
        record_loaded(conn, migration_id, table, rows)
        conn.commit()
