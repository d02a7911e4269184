"""The applier's position rows on the target, read in one place.

The applier writes, in the same transaction as each batch, one row per (migration_id, table) —
plus `table_name = '*'` for the newest event of any table, heartbeats included: the source
commit time and LSN of the newest applied event, events applied, snapshot rows and whether the
table's snapshot is done, events dead-lettered, and when the row was written (the target's
clock). PostgreSQL keeps them in `migwatch.applied_position`, MongoDB in the collection
`migwatch_applied_position`. The monitor, the snapshot follower, revalidation and the report all
read them through `read` (or `read_pg` / `read_mongo` on a connection they hold).

`AppliedThrough` owns the one question revalidation, the cutover's drain, the health check and
scale-out ask: has the target applied every change of a table up to source position L?
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
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


# ----------------------------------------------------------------------------- applied through L
def lsn_text(lsn: int) -> str:
    """A numeric LSN as PostgreSQL prints it (`16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def handed_over_lsn(offsets: Sequence[dict[str, Any]]) -> int | None:
    """The source LSN up to which Debezium's changes are in Kafka, from Connect's committed
    source offsets: the last processed event's LSN, or the last fully processed transaction's
    commit. Transactions are decoded in commit order, so every change committed before it is
    in Kafka too (Connect commits an offset only once every record before it is acknowledged)."""
    found = [int(o["offset"][k]) for o in offsets if isinstance(o.get("offset"), dict)
             for k in ("lsn_proc", "lsn_commit", "lsn") if o["offset"].get(k) is not None]
    return max(found) if found else None


@dataclass(frozen=True)
class Through:
    """The answer for one table: applied through L, or why not (and whether nobody knows)."""

    done: bool
    why: str | None = None
    unknown: bool = False


class AppliedThrough:
    """Has the target applied every change of a table up to source LSN `lsn`? (`check`)

    1. Debezium has handed every change up to `lsn` to Kafka: the connector's committed source
       offset is past it — else a change can still sit in Connect's producer while every topic
       reads as applied. (With no connector to ask, this step is skipped and step 2 needs the
       all-tables position past `lsn` too.)
    2. The table's own applied position is at or past `lsn` — or, for a table with no event
       after `lsn`, every partition of its topic is applied to its end (the target's stored
       offsets against Kafka's end offsets, read after step 1).
    One connection each to the target and Connect for the life of a `with` block."""

    def __init__(self, spec: MigrationSpec, migration_id: str,
                 clock: Callable[[], float] = time.monotonic, poll_seconds: float = 0.25,
                 application: str = "migwatch") -> None:
        self.spec = spec
        self.migration_id = migration_id
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.application = application
        self._conn: Any = None
        self._client: Any = None
        self._connect: Any = None

    def __enter__(self) -> AppliedThrough:
        from migwatch.connectors.connect import ConnectClient

        if self.spec.target.kind == "postgres":
            self._conn = pg.connect_endpoint(self.spec.target, "target", autocommit=True,
                                             application=self.application)
        else:
            self._client = mongo.client(self.spec.target, appname=self.application,
                                        tz_aware=False)
        self._connect = ConnectClient(self.spec.connect.url, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        for closer in (self._conn, self._client, self._connect):
            if closer is not None:
                with suppress(Exception):
                    closer.close()

    # --- what it reads -----------------------------------------------------------------------
    def positions(self, table: str) -> tuple[int | None, int | None]:
        """(LSN of the table's newest applied event, LSN of the newest of any table)."""
        wanted = [table, names.ALL_TABLES]
        if self._conn is not None:
            found = read_pg(self._conn, self.migration_id, wanted)
        else:
            found = read_mongo(self._client[self.spec.target.database], self.migration_id,
                               wanted)
        tbl, every = found.get(table), found.get(names.ALL_TABLES)
        return (None if tbl is None else tbl.lsn), (None if every is None else every.lsn)

    def handed_over(self) -> int | None:
        """Connect's committed source LSN; None when there is no connector to ask."""
        from migwatch.errors import MigwatchError

        try:
            offsets = self._connect.source_offsets(names.connector_name(self.migration_id))
        except MigwatchError:
            return None
        return None if offsets is None else handed_over_lsn(offsets)

    def unapplied(self, table: str) -> int:
        """Messages of the table's topic past what the target has applied (its stored offsets
        against Kafka's end offsets)."""
        from migwatch.measures import group_lag

        topic = names.table_topic(self.migration_id, table)
        lag = group_lag(self.spec.kafka.bootstrap_servers,
                        names.consumer_group(self.migration_id), [topic])
        stored = self._stored_offsets(topic)
        return sum(max(0, p.end_offset - stored[p.partition]) if p.partition in stored
                   else p.lag for p in lag.partitions)

    def _stored_offsets(self, topic: str) -> dict[int, int]:
        if self._conn is not None:
            with pg.translated("target: read applied offsets"):
                if not pg.table_exists(self._conn, names.POSITION_SCHEMA, "applied_offsets"):
                    return {}
                rows = self._conn.execute(sql.SQL(
                    "SELECT partition, next_offset FROM {} WHERE migration_id = %s AND topic = %s"
                ).format(sql.Identifier(names.POSITION_SCHEMA, "applied_offsets")),
                    [self.migration_id, topic]).fetchall()
            return {int(p): int(o) for p, o in rows}
        db = self._client[self.spec.target.database]
        with mongo.translated("target: read applied offsets"):
            docs = db["migwatch_applied_offsets"].find(
                {"_id.migration_id": self.migration_id, "_id.topic": topic})
            return {int(d["_id"]["partition"]): int(d["next_offset"]) for d in docs}

    # --- the answer --------------------------------------------------------------------------
    def check(self, table: str, lsn: int) -> Through:
        own, every = self.positions(table)
        handed = self.handed_over()
        if handed is not None and handed < lsn:
            return Through(False, f"Debezium has handed changes to Kafka up to "
                                  f"{lsn_text(handed)}, not yet past {lsn_text(lsn)}")
        if own is not None and own >= lsn:
            return Through(True)
        if handed is None:
            if every is None:
                return Through(False, "applier position unknown", unknown=True)
            if every < lsn:
                return Through(False, f"the applier is at {lsn_text(every)}, not yet past "
                                      f"{lsn_text(lsn)}")
        pending = self.unapplied(table)
        if pending == 0:
            return Through(True)
        return Through(False, f"{pending} message(s) of the table not applied yet")

    def wait(self, table: str, lsn: int, seconds: float,
             unknown_seconds: float) -> tuple[str | None, bool]:
        """Wait until `check` holds: (None, _) once it does, else (why not, whether the applier's
        position is unknown) after `seconds` — or `unknown_seconds` while it is unknown."""
        started = self.clock()
        while True:
            through = self.check(table, lsn)
            if through.done:
                return None, False
            if self.clock() - started >= (unknown_seconds if through.unknown else seconds):
                return through.why, through.unknown
            time.sleep(self.poll_seconds)
