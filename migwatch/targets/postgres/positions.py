"""What the applier stores on a PostgreSQL target beside the data — `migwatch.applied_position`
(one row per migration and table, see `migwatch.positions`), `migwatch.applied_offsets` (the
next Kafka offset per partition) and `migwatch.schema_changes` (the source's schema changes seen
and what was done, `migwatch.schema_changes.SchemaChange`) — defined, read and cleared here
only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from migwatch import names
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.errors import PermanentError
from migwatch.schema_changes import ColumnChange, SchemaChange
from migwatch.targets.base import Position, TargetSession

_COLUMNS = ("table_name", "source_ts_ms", "lsn", "events", "snapshot_rows", "snapshot_done",
            "dlq_events")
POSITIONS = sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)
OFFSETS = sql.Identifier(names.POSITION_SCHEMA, names.OFFSETS_TABLE)
SCHEMA_CHANGES = sql.Identifier(names.POSITION_SCHEMA, names.SCHEMA_CHANGES_TABLE)
LOAD_RANGES = sql.Identifier(names.POSITION_SCHEMA, names.LOAD_RANGES_TABLE)


def ensure_tables(conn: Any) -> None:
    """The position and offset tables (their shapes are defined here only)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
        sql.Identifier(names.POSITION_SCHEMA)))
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (migration_id text NOT NULL,"
        " table_name text NOT NULL,"
        " source_ts_ms bigint, lsn bigint, events bigint NOT NULL DEFAULT 0,"
        " snapshot_rows bigint NOT NULL DEFAULT 0,"
        " snapshot_done boolean NOT NULL DEFAULT false,"
        " dlq_events bigint NOT NULL DEFAULT 0,"
        " updated_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (migration_id, table_name))").format(POSITIONS))
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (migration_id text NOT NULL, topic text NOT NULL,"
        " partition integer NOT NULL, next_offset bigint NOT NULL,"
        " PRIMARY KEY (migration_id, topic, partition))").format(OFFSETS))
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, migration_id text NOT NULL,"
        " seen_at timestamptz NOT NULL DEFAULT clock_timestamp(), table_name text NOT NULL,"
        " outcome text NOT NULL, changes jsonb NOT NULL, note text)").format(SCHEMA_CHANGES))
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (migration_id text NOT NULL, table_name text NOT NULL,"
        " range_no integer NOT NULL, range_count integer NOT NULL, key_column text NOT NULL,"
        " low text, high text, rows bigint NOT NULL DEFAULT 0,"
        " done boolean NOT NULL DEFAULT false,"
        " PRIMARY KEY (migration_id, table_name, range_no))").format(LOAD_RANGES))


def record_schema_change(conn: Any, migration_id: str, record: SchemaChange) -> None:
    """Append `record` (its time is the target's clock), in the caller's transaction."""
    ensure_tables(conn)
    conn.execute(sql.SQL(
        "INSERT INTO {} (migration_id, table_name, outcome, changes, note)"
        " VALUES (%s, %s, %s, %s, %s)").format(SCHEMA_CHANGES),
        [migration_id, record.table, record.outcome,
         Jsonb([c.to_dict() for c in record.changes]), record.note])


def read_schema_changes(conn: Any, migration_id: str) -> list[SchemaChange]:
    """The migration's schema-change records, oldest first."""
    with pg.translated("target: read schema changes"):
        if not pg.table_exists(conn, names.POSITION_SCHEMA, names.SCHEMA_CHANGES_TABLE):
            return []
        rows = conn.execute(sql.SQL(
            "SELECT extract(epoch FROM seen_at)::float8, table_name, outcome, changes, note"
            " FROM {} WHERE migration_id = %s ORDER BY id").format(SCHEMA_CHANGES),
            [migration_id]).fetchall()
    return [SchemaChange(r[0], r[1], r[2], tuple(ColumnChange.from_dict(c) for c in r[3]),
                         r[4]) for r in rows]


def read_positions(conn: Any, migration_id: str, tables: Sequence[str] | None = None,
                   ) -> dict[str, Position]:
    """The migration's position rows on an open connection to the target."""
    with pg.translated("target: read applied position"):
        if not pg.table_exists(conn, names.POSITION_SCHEMA, names.POSITION_TABLE):
            return {}
        query = sql.SQL("SELECT {}, extract(epoch FROM updated_at)::float8 FROM {} "
                        "WHERE migration_id = %s").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS), POSITIONS)
        params: list[Any] = [migration_id]
        if tables is not None:
            query += sql.SQL(" AND table_name = ANY(%s)")
            params.append(list(tables))
        rows = conn.execute(query, params).fetchall()
    return {r[0]: Position(r[0], r[1], r[2], int(r[3] or 0), int(r[4] or 0), bool(r[5]),
                           int(r[6] or 0), r[7]) for r in rows}


def clear_positions(conn: Any, migration_id: str) -> int:
    """Delete the migration's position and offset rows (in the caller's transaction)."""
    removed = 0
    for table in (names.POSITION_TABLE, names.OFFSETS_TABLE, names.SCHEMA_CHANGES_TABLE,
                  names.LOAD_RANGES_TABLE):
        if pg.table_exists(conn, names.POSITION_SCHEMA, table):
            removed += conn.execute(sql.SQL("DELETE FROM {} WHERE migration_id = %s").format(
                sql.Identifier(names.POSITION_SCHEMA, table)), [migration_id]).rowcount
    return removed


class PostgresSession(TargetSession):
    """One autocommit connection to a PostgreSQL target."""

    def __init__(self, spec: MigrationSpec, application: str) -> None:
        self.conn = pg.connect_endpoint(spec.target, "target", autocommit=True,
                                        application=application)

    def positions(self, migration_id: str, tables: Sequence[str] | None = None,
                  ) -> dict[str, Position]:
        return read_positions(self.conn, migration_id, tables)

    def stored_offsets(self, migration_id: str, topic: str) -> dict[int, int]:
        with pg.translated("target: read applied offsets"):
            if not pg.table_exists(self.conn, names.POSITION_SCHEMA, names.OFFSETS_TABLE):
                return {}
            rows = self.conn.execute(sql.SQL(
                "SELECT partition, next_offset FROM {} WHERE migration_id = %s AND topic = %s"
            ).format(OFFSETS), [migration_id, topic]).fetchall()
        return {int(p): int(o) for p, o in rows}

    def heartbeat_at(self, migration_id: str, beat: TableSpec) -> float | None:
        schema, table = beat.target_parts
        with pg.translated("target: read heartbeat"):
            if not pg.table_exists(self.conn, schema, table):
                return None
            row = self.conn.execute(sql.SQL(
                "SELECT beat_at FROM {} WHERE migration_id = %s").format(
                sql.Identifier(schema, table)), [migration_id]).fetchone()
        return row[0].timestamp() if row and row[0] is not None else None

    def clear_positions(self, migration_id: str) -> int:
        with pg.translated("target: clear applied positions"), self.conn.transaction():
            return clear_positions(self.conn, migration_id)

    def clear_table_positions(self, migration_id: str, tables: Sequence[str]) -> int:
        with pg.translated("target: clear positions of tables"):
            removed = 0
            for name in (names.POSITION_TABLE, names.LOAD_RANGES_TABLE):
                if pg.table_exists(self.conn, names.POSITION_SCHEMA, name):
                    removed += int(self.conn.execute(sql.SQL(
                        "DELETE FROM {} WHERE migration_id = %s AND table_name = ANY(%s)").format(
                        sql.Identifier(names.POSITION_SCHEMA, name)),
                        [migration_id, list(tables)]).rowcount)
            return removed

    def schema_changes(self, migration_id: str) -> list[SchemaChange]:
        return read_schema_changes(self.conn, migration_id)

    def record_schema_change(self, migration_id: str, record: SchemaChange) -> None:
        with pg.translated("target: record a schema change"), self.conn.transaction():
            record_schema_change(self.conn, migration_id, record)

    def close(self) -> None:
        self.conn.close()


def session_or_none(spec: MigrationSpec, application: str) -> PostgresSession | None:
    """A session, or None when the target database no longer exists (nothing stored there)."""
    try:
        return PostgresSession(spec, application)
    except PermanentError as exc:
        if pg.database_missing(exc):
            return None
        raise
