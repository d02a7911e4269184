"""The applier's position rows on the target, read in one place.

The applier writes, in the same transaction as each batch, one row per (migration_id, table) —
plus `table_name = '*'` for the newest event of any table, heartbeats included: the source
commit time and LSN of the newest applied event, events applied, snapshot rows and whether the
table's snapshot is done, events dead-lettered, and when the row was written (the target's
clock). PostgreSQL keeps them in `migwatch.applied_position`, MongoDB in the collection
`migwatch_applied_position`. The monitor, the snapshot follower, revalidation and the report all
read them through `read` (or `read_pg` / `read_mongo` on a connection they hold).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from migwatch import names
from migwatch.config import MigrationSpec
from migwatch.connectors import mongo
from migwatch.connectors import postgres as pg


@dataclass(frozen=True)
class Position:
    """One position row: how far the applier got for a table (or '*', every table)."""

    table_name: str
    source_ts_ms: int | None = None
    lsn: int | None = None
    events: int = 0
    snapshot_rows: int = 0
    snapshot_done: bool = False
    dlq_events: int = 0
    #: when the applier last wrote the row (epoch seconds, the target's clock)
    updated_at: float | None = None


def ensure_table_pg(conn: Any) -> None:
    """The position table on a PostgreSQL target (its shape is defined here only)."""
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
        " PRIMARY KEY (migration_id, table_name))"
    ).format(sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)))


_COLUMNS = ("table_name", "source_ts_ms", "lsn", "events", "snapshot_rows", "snapshot_done",
            "dlq_events")


def read(spec: MigrationSpec, migration_id: str, tables: Sequence[str] | None = None,
         application: str = "migwatch") -> dict[str, Position]:
    """The migration's position rows (only `tables` when given) by table; {} before any."""
    if spec.target.kind == "postgres":
        with pg.connect_endpoint(spec.target, "target", autocommit=True,
                                 application=application) as conn:
            return read_pg(conn, migration_id, tables)
    with mongo.database(spec.target, appname=application) as db:
        return read_mongo(db, migration_id, tables)


def read_pg(conn: Any, migration_id: str, tables: Sequence[str] | None = None
            ) -> dict[str, Position]:
    """`read` on an open PostgreSQL connection to the target."""
    with pg.translated("target: read applied position"):
        if not pg.table_exists(conn, names.POSITION_SCHEMA, names.POSITION_TABLE):
            return {}
        query = sql.SQL("SELECT {}, extract(epoch FROM updated_at)::float8 FROM {} "
                        "WHERE migration_id = %s").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
            sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE))
        params: list[Any] = [migration_id]
        if tables is not None:
            query += sql.SQL(" AND table_name = ANY(%s)")
            params.append(list(tables))
        rows = conn.execute(query, params).fetchall()
    return {r[0]: Position(r[0], r[1], r[2], int(r[3] or 0), int(r[4] or 0), bool(r[5]),
                           int(r[6] or 0), r[7]) for r in rows}


def read_mongo(db: Any, migration_id: str, tables: Sequence[str] | None = None
               ) -> dict[str, Position]:
    """`read` on an open MongoDB database (the target's)."""
    query: dict[str, Any] = {"_id.migration_id": migration_id}
    if tables is not None:
        query["_id.table_name"] = {"$in": list(tables)}
    with mongo.translated("target: read applied position"):
        docs = list(db[names.POSITION_COLLECTION].find(query))
    out = {}
    for d in docs:
        name = d["_id"]["table_name"]
        out[name] = Position(
            name, _int(d.get("source_ts_ms")), _int(d.get("lsn")), int(d.get("events") or 0),
            int(d.get("snapshot_rows") or 0), bool(d.get("snapshot_done")),
            int(d.get("dlq_events") or 0), _epoch(d.get("updated_at")))
    return out


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _epoch(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return None
