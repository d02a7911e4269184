"""The CDC applier: a Kafka consumer that applies Debezium change events to the target.

Why it is built this way:
- Batches are collapsed to the last event per primary key (a primary-key change arrives from
  Debezium as a delete of the old key and a create of the new one), then written with one COPY into
  a staging table plus one upsert and one delete per table — in ONE target transaction that also
  records the applied position and the next Kafka offsets. Kafka offsets are committed only after
  that transaction; on (re)assignment the consumer seeks to the offsets stored on the target, so a
  crash at any point neither loses nor double-applies an event (PostgreSQL targets).
- MongoDB targets get the same collapsed batch as ordered bulk writes (a transaction is used only
  where the server has one); replays are idempotent because every write is by `_id`.
- An event that cannot be decoded or applied goes to the dead-letter topic with the reason in its
  headers and is counted; the rest of the batch still applies.
- Rebalances: kafka-python 3 can leave a group leader's join half done (the member drops out of
  its group while `poll()` keeps returning nothing); the applier re-arms such a join after every
  poll and fails loudly if it stays outside its group longer than any rebalance may take. A Kafka
  commit refused by a rebalance is not an error: the offsets are on the target.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from psycopg import sql

from migwatch import metrics, names, positions
from migwatch.config import MigrationSpec, StackSettings, TableSpec
from migwatch.connectors import kafka as kafka_conn
from migwatch.connectors import mongo
from migwatch.connectors import postgres as pg
from migwatch.decoding import FROM_SOURCE, UNCHANGED, ColumnDecoder, SkipEvent, load_value
from migwatch.errors import MigwatchError, PermanentError, TransientError, UnsupportedValue
from migwatch.targets.mongo_values import SOURCE_SESSION, DocumentForm, supports_decimal128

log = logging.getLogger("migwatch.applier")



SNAPSHOT_LAST = {"last", "last_in_data_collection"}
#: on the create event of an UPDATE that changed the key: the row's key before it
OLD_KEY_HEADER = "__debezium.oldkey"
# kafka-python fetch sizes: 1 MiB per partition (Kafka's default) reads and decodes 1.3-1.8×
# faster than 16 MiB (bench/applier.py, 3.2 kB events), whose large responses the client
# buffers slowly
FETCH_SIZES: dict[str, int] = {"fetch_max_bytes": 64 << 20, "max_partition_fetch_bytes": 1 << 20}


#: (table, keys, columns, as text) → the source's current values of those columns by key (a
#: key whose row is gone is left out)
SourceRows = Callable[[str, list[tuple[Any, ...]], list[str], bool],
                      "dict[tuple[Any, ...], dict[str, Any]]"]


@dataclass
class Change:
    """One decoded change: `row` is None for a delete; `key` is the row's key tuple (None for a
    table without a key, whose update or delete finds its row by the `before` image)."""

    table: TableSpec
    op: str  # r c u d t (truncate)
    key: tuple[Any, ...] | None
    row: dict[str, Any] | None
    source_ts_ms: int
    lsn: int | None
    snapshot: str
    before: dict[str, Any] | None = None
    #: the key the row had before an UPDATE changed its key (Debezium's `__debezium.oldkey`)
    old_key: tuple[Any, ...] | None = None


@dataclass
class Batch:
    """Changes collapsed per table and key (in order, for tables without a key), plus what the
    position rows need."""

    upserts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    deletes: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    truncates: set[str] = field(default_factory=set)
    #: tables without a key: every change in source order (duplicates are rows of their own)
    ordered: dict[str, list[Change]] = field(default_factory=dict)
    events: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op) -> count
    max_ts: dict[str, int] = field(default_factory=dict)
    max_lsn: dict[str, int] = field(default_factory=dict)
    snapshot_rows: dict[str, int] = field(default_factory=dict)
    snapshot_done: set[str] = field(default_factory=set)
    dlq: dict[str, int] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read
    #: first offset of each partition in the batch: the target refuses a batch that starts at
    #: or below what it already applied (a rebalance rewound the consumer)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    #: rows this batch deleted, by table and key: a key change's new row takes the values of
    #: its unchanged TOASTed columns from them
    removed: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    #: rows still missing unchanged TOASTed values, by table: new key → old key (the writer
    #: reads them from the target's old row before deleting it)
    moved: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=dict)

    def add(self, ch: Change) -> None:
        t = ch.table.source
        if ch.key is None and ch.op != "t":
            self.ordered.setdefault(t, []).append(ch)
        elif ch.op == "t":
            self.upserts.setdefault(t, {}).clear()
            self.deletes.setdefault(t, set()).clear()
            self.ordered.pop(t, None)
            self.ordered.setdefault(t, [])
            self.truncates.add(t)
        elif ch.op == "d":
            assert ch.key is not None
            gone = self.upserts.setdefault(t, {}).pop(ch.key, None)
            if gone is not None:
                self.removed.setdefault(t, {})[ch.key] = gone
            self.deletes.setdefault(t, set()).add(ch.key)
        else:
            assert ch.row is not None and ch.key is not None
            ups = self.upserts.setdefault(t, {})
            self.deletes.setdefault(t, set()).discard(ch.key)
            row = ch.row
            if any(v is UNCHANGED for v in row.values()):
                # an unchanged TOASTed column keeps what an earlier change of this batch wrote —
                # under this key, or under the key the row had before this change
                earlier = ups.get(ch.key)
                if earlier is None and ch.old_key is not None:
                    earlier = self.removed.get(t, {}).get(ch.old_key)
                if earlier is not None:
                    row = {k: earlier.get(k, v) if v is UNCHANGED else v for k, v in row.items()}
                if ch.old_key is not None and any(v is UNCHANGED for v in row.values()):
                    self.moved.setdefault(t, {})[ch.key] = ch.old_key
            ups[ch.key] = row
        if ch.op == "r":
            self.snapshot_rows[t] = self.snapshot_rows.get(t, 0) + 1
        self.events[(t, ch.op)] = self.events.get((t, ch.op), 0) + 1
        self.note_position(t, ch.source_ts_ms, ch.lsn)
        if ch.snapshot in SNAPSHOT_LAST:
            self.snapshot_done.add(t)
            if ch.snapshot == "last":
                self.snapshot_done.add(names.ALL_TABLES)

    def note_position(self, table: str, ts: int | None, lsn: int | None) -> None:
        for key in (table, names.ALL_TABLES):
            if ts is not None:
                self.max_ts[key] = max(self.max_ts.get(key, 0), ts)
            if lsn is not None:
                self.max_lsn[key] = max(self.max_lsn.get(key, 0), lsn)

    def note_offset(self, rec: Any) -> None:
        tp = TopicPartition(rec.topic, rec.partition)
        self.offsets[tp] = max(self.offsets.get(tp, 0), rec.offset + 1)
        self.first_offsets[tp] = min(self.first_offsets.get(tp, rec.offset), rec.offset)

    @property
    def tables(self) -> list[str]:
        return sorted(set(self.upserts) | set(self.deletes) | self.truncates | set(self.ordered))

    @property
    def event_count(self) -> int:
        return sum(self.events.values())


class StaleBatch(Exception):
    """The target already applied part of a batch (a rebalance rewound the consumer to its
    stored offsets while records were gathered): `stored` are the target's next offsets."""

    def __init__(self, stored: dict[TopicPartition, int]) -> None:
        self.stored = stored
        super().__init__(f"batch overlaps applied offsets: {stored}")


# ------------------------------------------------------------------------------ target writers
class PostgresWriter:
    """Applies batches to a PostgreSQL target in one transaction each, with position and offsets.

    Tables with a key: one COPY into a staging table, one upsert, one delete. A row whose
    unchanged TOASTed columns the event did not carry updates only the columns it carries.
    Tables without a key (REPLICA IDENTITY FULL): each change in source order, an update or
    delete touching exactly one row that equals its before image (by ctid), duplicates included.
    """

    #: the staging table's extra column: names of the columns a row does not carry
    UNCHANGED_COLUMN = "migwatch unchanged columns"

    def __init__(self, spec: MigrationSpec, migration_id: str,
                 infos: dict[str, pg.TableInfo], tables: list[TableSpec],
                 keyless: set[str] | None = None,
                 source_rows: SourceRows | None = None) -> None:
        self.spec = spec
        self.mid = migration_id
        self.infos = infos
        self.keyless = keyless or set()
        self.source_rows = source_rows
        self.tables = {t.source: t for t in tables}
        self._table_index = {t.source: i for i, t in enumerate(tables)}
        self.conn = pg.connect_endpoint(spec.target, "target", application="migwatch-applier")
        self._stage: dict[str, sql.Identifier] = {}
        self._prepare()

    def _live(self) -> None:
        """A connection the target dropped (restart, failover) is opened again: TransientError
        while the target is still away, for the applier to wait out."""
        if not (self.conn.closed or self.conn.broken):
            return
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - it is broken already
            log.debug("closing a broken connection failed", exc_info=True)
        self._stage.clear()  # temp tables went with the session
        self.conn = pg.connect_endpoint(self.spec.target, "target",
                                        application="migwatch-applier")
        log.warning("applier %s: reconnected to the target", self.mid)

    @property
    def broken(self) -> bool:
        """The connection is gone: a failure seen on it says nothing about the data."""
        return bool(self.conn.closed or self.conn.broken)

    def _prepare(self) -> None:
        with pg.translated("target: prepare position tables"), self.conn.transaction():
            positions.ensure_table_pg(self.conn)
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (migration_id text NOT NULL, topic text NOT NULL,"
                " partition integer NOT NULL, next_offset bigint NOT NULL,"
                " PRIMARY KEY (migration_id, topic, partition))"
            ).format(self._offsets_table))

    @property
    def _offsets_table(self) -> sql.Identifier:
        return sql.Identifier(names.POSITION_SCHEMA, "applied_offsets")

    def stored_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = {(tp.topic, tp.partition): tp for tp in partitions}
        with pg.translated("target: read offsets"):
            self._live()
            rows = self.conn.execute(sql.SQL(
                "SELECT topic, partition, next_offset FROM {} WHERE migration_id = %s"
            ).format(self._offsets_table), [self.mid]).fetchall()
            self.conn.commit()
        return {wanted[(t, p)]: o for t, p, o in rows if (t, p) in wanted}

    def _staging(self, table: str) -> sql.Identifier:
        ident = self._stage.get(table)
        if ident is None:
            # a stable name per table: temp tables outlive the transactions that use them (only
            # their rows go at commit), so a name must never be reused for another table's shape
            ident = sql.Identifier(f"migwatch_stage_{self._table_index[table]}")
            self.conn.execute(sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
            ).format(ident, sql.Identifier(*self._target_name(table))))
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text[]").format(
                ident, sql.Identifier(self.UNCHANGED_COLUMN)))
            self._stage[table] = ident
        return ident

    def _target_name(self, table: str) -> tuple[str, str]:
        return self.tables[table].target_parts

    def apply(self, batch: Batch) -> None:
        with pg.translated("target: reconnect"):
            self._live()
        try:
            with pg.translated("target: apply batch"), self.conn.transaction():
                self._refuse_stale(batch)
                for table in batch.tables:
                    if table in self.keyless:
                        self._apply_in_order(table, batch)
                    else:
                        self._apply_table(table, batch)
                self._record(batch)
        except (MigwatchError, StaleBatch):
            self._stage.clear()  # staging tables created in the rolled-back transaction are gone
            raise

    def apply_one(self, batch: Batch) -> None:
        """Apply a single-change batch inside a savepoint-free transaction (DLQ fallback path)."""
        self.apply(batch)

    def _refuse_stale(self, batch: Batch) -> None:
        """Inside the batch's transaction, with the offset rows locked: the batch must start
        past what the target applied, else StaleBatch (nothing written)."""
        if not batch.first_offsets:
            return
        rows = self.conn.execute(sql.SQL(
            "SELECT topic, partition, next_offset FROM {} WHERE migration_id = %s FOR UPDATE"
        ).format(self._offsets_table), [self.mid]).fetchall()
        stored = {TopicPartition(t, p): o for t, p, o in rows}
        if any(first < stored.get(tp, 0) for tp, first in batch.first_offsets.items()):
            raise StaleBatch(stored)

    def _apply_table(self, table: str, batch: Batch) -> None:
        info = self.infos[table]
        target = sql.Identifier(*self._target_name(table))
        pk = info.primary_key
        if table in batch.truncates:
            self.conn.execute(sql.SQL("TRUNCATE {}").format(target))
        self._fill_unchanged(table, target, pk, batch)
        dels = batch.deletes.get(table) or set()
        if dels:
            cols = sql.SQL(", ").join(sql.Identifier(k) for k in pk)
            placeholders = sql.SQL(", ").join(sql.Placeholder() * len(pk))
            with self.conn.cursor() as cur:
                cur.executemany(
                    sql.SQL("DELETE FROM {} WHERE ({}) = ({})").format(target, cols, placeholders),
                    [list(k) for k in dels],
                )
        ups = batch.upserts.get(table) or {}
        if not ups:
            return
        stage = self._staging(table)
        names_ = [c.name for c in info.columns]
        marker = sql.Identifier(self.UNCHANGED_COLUMN)
        col_ids = sql.SQL(", ").join(sql.Identifier(n) for n in names_)
        partial = False
        with self.conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}, {}) FROM STDIN").format(
                    stage, col_ids, marker)) as copy:
                for row in ups.values():
                    kept = [n for n in names_ if row.get(n) is UNCHANGED]
                    partial = partial or bool(kept)
                    copy.write_row([None if n in kept else _pg_value(row.get(n)) for n in names_]
                                   + [kept or None])
            non_key = [n for n in names_ if n not in pk]
            conflict = sql.SQL(", ").join(sql.Identifier(k) for k in pk)
            action: sql.Composable
            if non_key:
                action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
                    for n in non_key))
            else:
                action = sql.SQL("DO NOTHING")
            cur.execute(sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} IS NULL ON CONFLICT ({}) {}"
            ).format(target, col_ids, col_ids, stage, marker, conflict, action))
            if partial:
                self._apply_partial(cur, target, stage, names_, pk)

    def _fill_unchanged(self, table: str, target: sql.Identifier, pk: tuple[str, ...],
                        batch: Batch) -> None:
        """Rows that left out unchanged TOASTed columns and whose key the target does not hold
        (a key change, possibly split over two batches): take the values from the target's row
        under the old key, read before this batch deletes it — else from the source's current
        row (any later change of the column arrives as its own event, so the end state is
        exact)."""
        ups = batch.upserts.get(table) or {}
        self._resolve_from_source(table, ups)
        partial = {k: r for k, r in ups.items() if any(v is UNCHANGED for v in r.values())}
        if not partial:
            return
        cols = sql.SQL(", ").join(sql.Identifier(k) for k in pk)
        one = sql.SQL(", ").join(sql.Placeholder() * len(pk))
        held = self._held_keys(table, target, list(partial))
        for key, row in partial.items():
            if key in held:
                continue  # the target's row keeps its values (see _apply_partial)
            wanted = [k for k, v in row.items() if v is UNCHANGED]
            old_key = (batch.moved.get(table) or {}).get(key)
            found = None
            # both read as PostgreSQL's text of each value: COPY takes it back exactly (json
            # keeps its spacing, arrays their bounds)
            if old_key is not None:
                found = self.conn.execute(sql.SQL("SELECT {} FROM {} WHERE ({}) = ({})").format(
                    sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k))
                                       for k in wanted), target, cols, one),
                    list(old_key)).fetchone()
            if found is None and self.source_rows is not None:
                current = self.source_rows(table, [key], wanted, True).get(key)
                found = None if current is None else tuple(current[k] for k in wanted)
            row.update(zip(wanted, found if found is not None else [None] * len(wanted),
                           strict=True))

    def _held_keys(self, table: str, target: sql.Identifier,
                   keys: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        """Which of `keys` the target holds, in one query (keys matched by position: a decoded
        key and the driver's value of it need not print alike)."""
        info = self.infos[table]
        query = _rows_by_position(target, sql.SQL(""), list(info.primary_key),
                                  {c.name: c.type for c in info.columns}, len(keys))
        found = self.conn.execute(query, [v for k in keys for v in k]).fetchall()
        return {keys[int(r[0])] for r in found}

    def _resolve_from_source(self, table: str, ups: dict[tuple[Any, ...], dict[str, Any]],
                             ) -> None:
        """Values an event could not tell from NULL (`FROM_SOURCE`): the source's current ones,
        one query for the batch's rows of the table."""
        doubtful = {k: r for k, r in ups.items() if any(v is FROM_SOURCE for v in r.values())}
        if not doubtful:
            return
        columns = sorted({c for r in doubtful.values() for c, v in r.items() if v is FROM_SOURCE})
        current = self.source_rows(table, list(doubtful), columns, True) \
            if self.source_rows is not None else {}
        for key, row in doubtful.items():
            now = current.get(key) or {}
            for c in columns:
                if row.get(c) is FROM_SOURCE:
                    row[c] = now.get(c)

    def _apply_partial(self, cur: Any, target: sql.Identifier, stage: sql.Identifier,
                       names_: list[str], pk: tuple[str, ...]) -> None:
        """Rows whose event left out unchanged TOASTed columns: the target keeps those."""
        marker = sql.Identifier(self.UNCHANGED_COLUMN)
        keep = sql.SQL(", ").join(
            sql.SQL("{0} = CASE WHEN {1} = ANY(s.{2}) THEN t.{0} ELSE s.{0} END").format(
                sql.Identifier(n), sql.Literal(n), marker)
            for n in names_ if n not in pk)
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in pk)
        cur.execute(sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE s.{} IS NOT NULL AND {}")
                    .format(target, keep, stage, marker, match))
        # a row the target lacks cannot take its old values: inserted as carried (the columns
        # the event left out are NULL), and validation names the difference
        col_ids = sql.SQL(", ").join(sql.Identifier(n) for n in names_)
        cur.execute(sql.SQL(
            "INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} IS NOT NULL ON CONFLICT DO NOTHING"
        ).format(target, col_ids, col_ids, stage, marker))
        if cur.rowcount:
            log.warning("applier %s: %d row(s) updated without their unchanged TOASTed columns "
                        "were missing on the target", self.mid, cur.rowcount)

    def _apply_in_order(self, table: str, batch: Batch) -> None:
        """A table without a key: each change in order, an update or delete touching exactly one
        row equal to its before image (compared by the type's text form, NULL-safe)."""
        info = self.infos[table]
        target = sql.Identifier(*self._target_name(table))
        names_ = [c.name for c in info.columns]
        col_ids = sql.SQL(", ").join(sql.Identifier(n) for n in names_)
        values = sql.SQL(", ").join(
            sql.SQL("CAST(%s AS {})").format(sql.SQL(c.type)) for c in info.columns)
        one_row = sql.SQL("(SELECT ctid FROM {} WHERE {} LIMIT 1)").format(
            target, sql.SQL(" AND ").join(
                sql.SQL("{}::text IS NOT DISTINCT FROM CAST(%s AS {})::text").format(
                    sql.Identifier(c.name), sql.SQL(c.type)) for c in info.columns))
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(target, col_ids, values)
        update = sql.SQL("UPDATE {} SET ({}) = ROW({}) WHERE ctid = {}").format(
            target, col_ids, values, one_row)
        delete = sql.SQL("DELETE FROM {} WHERE ctid = {}").format(target, one_row)
        if table in batch.truncates:
            self.conn.execute(sql.SQL("TRUNCATE {}").format(target))
        with self.conn.cursor() as cur:
            for ch in batch.ordered.get(table) or ():
                new = [_pg_value((ch.row or {}).get(n)) for n in names_]
                old = [_pg_value((ch.before or {}).get(n)) for n in names_]
                if ch.op in ("r", "c"):
                    cur.execute(insert, new)
                elif ch.op == "u":
                    cur.execute(update, new + old)
                elif ch.op == "d":
                    cur.execute(delete, old)
                if ch.op in ("u", "d") and cur.rowcount != 1:
                    log.warning("applier %s: %s of %s matched no row on the target",
                                self.mid, "update" if ch.op == "u" else "delete", table)

    def _record(self, batch: Batch) -> None:
        tables = set(batch.max_ts) | set(batch.max_lsn) | set(batch.dlq) | batch.snapshot_done
        if batch.dlq:
            tables.add(names.ALL_TABLES)
        rows = []
        for t in tables:
            events = sum(n for (tt, _), n in batch.events.items()
                         if tt == t or t == names.ALL_TABLES)
            rows.append((self.mid, t, batch.max_ts.get(t), batch.max_lsn.get(t), events,
                         batch.snapshot_rows.get(t, 0) if t != names.ALL_TABLES
                         else sum(batch.snapshot_rows.values()),
                         t in batch.snapshot_done,
                         batch.dlq.get(t, 0) if t != names.ALL_TABLES else sum(batch.dlq.values())))
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql.SQL(
                    "INSERT INTO {0} AS p (migration_id, table_name, source_ts_ms, lsn, events,"
                    " snapshot_rows, snapshot_done, dlq_events, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
                    " ON CONFLICT (migration_id, table_name) DO UPDATE SET"
                    " source_ts_ms = greatest(p.source_ts_ms, EXCLUDED.source_ts_ms),"
                    " lsn = greatest(p.lsn, EXCLUDED.lsn), events = p.events + EXCLUDED.events,"
                    " snapshot_rows = p.snapshot_rows + EXCLUDED.snapshot_rows,"
                    " snapshot_done = p.snapshot_done OR EXCLUDED.snapshot_done,"
                    " dlq_events = p.dlq_events + EXCLUDED.dlq_events, updated_at = now()"
                ).format(sql.Identifier(names.POSITION_SCHEMA, names.POSITION_TABLE)), rows)
        if batch.offsets:
            with self.conn.cursor() as cur:
                cur.executemany(sql.SQL(
                    "INSERT INTO {} AS p (migration_id, topic, partition, next_offset)"
                    " VALUES (%s,%s,%s,%s)"
                    " ON CONFLICT (migration_id, topic, partition) DO UPDATE SET"
                    " next_offset = greatest(p.next_offset, EXCLUDED.next_offset)"
                ).format(self._offsets_table),
                    [(self.mid, tp.topic, tp.partition, o) for tp, o in batch.offsets.items()])

    def close(self) -> None:
        self.conn.close()


def _pg_value(v: Any) -> Any:
    return orjson.dumps(v).decode() if isinstance(v, dict) else v


#: statements per write command sent to FerretDB (see MongoWriter)
FERRETDB_WRITE_CHUNK = 50


class MongoWriter:
    """Applies batches to a MongoDB target with ordered bulk writes keyed by `_id`."""

    def __init__(self, spec: MigrationSpec, migration_id: str,
                 infos: dict[str, pg.TableInfo], tables: list[TableSpec],
                 source_rows: SourceRows | None = None) -> None:
        from pymongo.errors import PyMongoError

        self._errors = PyMongoError
        self.source_rows = source_rows
        self.spec = spec
        self.mid = migration_id
        self.infos = infos
        self.tables = {t.source: t for t in tables}
        self.client: Any = mongo.client(spec.target, appname="migwatch-applier", tz_aware=False)
        try:
            self.client.admin.command("ping")
            # numeric → Decimal128 only where the server stores it, else an exact string
            build_info = self.client.admin.command("buildInfo")
            self.decimal128 = supports_decimal128(build_info)
            # FerretDB 1.x (SQLite) holds one pooled connection per statement of a write
            # command until the command ends; past its pool (100) the command waits forever
            self.chunk = FERRETDB_WRITE_CHUNK if "ferretdbVersion" in build_info else None
        except PyMongoError as exc:
            raise TransientError(f"target ({spec.target.redacted()}): unreachable: "
                                 f"{type(exc).__name__}") from exc
        self.db = self.client[spec.target.database]
        #: each table's document form, decided once (numeric's form depends on the server)
        self.forms = {t: DocumentForm(info, decimal128=self.decimal128,
                                      json_string_columns=self.tables[t].json_string_columns)
                      for t, info in infos.items() if t in self.tables}

    def stored_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = {(tp.topic, tp.partition): tp for tp in partitions}
        out = {}
        for doc in self.db["migwatch_applied_offsets"].find({"_id.migration_id": self.mid}):
            k = (doc["_id"]["topic"], doc["_id"]["partition"])
            if k in wanted:
                out[wanted[k]] = int(doc["next_offset"])
        return out

    def apply(self, batch: Batch) -> None:
        from pymongo import DeleteMany, DeleteOne, ReplaceOne, UpdateOne

        try:
            self._refuse_stale(batch)
            for table in batch.tables:
                spec = self.tables[table]
                form = self.forms[table]
                coll = self.db[spec.target_table]
                gone = [form.id(key) for key in batch.deletes.get(table) or ()]
                docs = self._documents(coll, table, batch)
                if self.chunk is not None:
                    self._replace_by_delete_and_insert(coll, table in batch.truncates, gone, docs)
                    continue
                ops: list[Any] = [DeleteMany({})] if table in batch.truncates else []
                ops += [DeleteOne({"_id": _id}) for _id in gone]
                ops += [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
                self._bulk(coll, ops)
            pos = []
            tables = set(batch.max_ts) | set(batch.max_lsn) | set(batch.dlq) | \
                batch.snapshot_done | ({names.ALL_TABLES} if batch.dlq else set())
            for t in tables:
                inc = {"events": sum(n for (tt, _), n in batch.events.items()
                                     if tt == t or t == names.ALL_TABLES),
                       "snapshot_rows": batch.snapshot_rows.get(t, 0) if t != names.ALL_TABLES
                       else sum(batch.snapshot_rows.values()),
                       "dlq_events": batch.dlq.get(t, 0) if t != names.ALL_TABLES
                       else sum(batch.dlq.values())}
                upd: dict[str, Any] = {"$inc": inc, "$currentDate": {"updated_at": True},
                                       "$max": {}}
                if t in batch.max_ts:
                    upd["$max"]["source_ts_ms"] = batch.max_ts[t]
                if t in batch.max_lsn:
                    upd["$max"]["lsn"] = batch.max_lsn[t]
                if t in batch.snapshot_done:
                    upd["$set"] = {"snapshot_done": True}
                if not upd["$max"]:
                    del upd["$max"]
                pos.append(UpdateOne({"_id": {"migration_id": self.mid, "table_name": t}}, upd,
                                     upsert=True))
            self._bulk(self.db[names.POSITION_COLLECTION], pos)
            self._bulk(self.db["migwatch_applied_offsets"], [
                ReplaceOne({"_id": {"migration_id": self.mid, "topic": tp.topic,
                                    "partition": tp.partition}},
                           {"next_offset": o}, upsert=True)
                for tp, o in batch.offsets.items()])
        except self._errors as exc:
            from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

            if isinstance(exc, AutoReconnect | ServerSelectionTimeoutError):
                raise TransientError(f"target: {type(exc).__name__}") from exc
            raise PermanentError(f"target: {type(exc).__name__}: {str(exc)[:300]}") from exc

    def apply_one(self, batch: Batch) -> None:
        self.apply(batch)

    #: pymongo reconnects by itself; its connection failures are TransientErrors already
    broken = False

    def _refuse_stale(self, batch: Batch) -> None:
        """The batch must start past what the target applied (no transaction here: the offsets
        are read first; one applier owns a partition at a time)."""
        if not batch.first_offsets:
            return
        stored = self.stored_offsets(batch.first_offsets)
        if any(first < stored.get(tp, 0) for tp, first in batch.first_offsets.items()):
            raise StaleBatch(stored)

    def _documents(self, coll: Any, table: str, batch: Batch) -> list[dict[str, Any]]:
        """The batch's rows as documents (their fields mapped when decoded: `Applier._change`);
        a row whose event left out unchanged TOASTed columns takes those fields from the
        document the target holds."""
        form = self.forms[table]
        moved = batch.moved.get(table) or {}
        ups = batch.upserts.get(table) or {}
        doubtful = [k for k, r in ups.items() if any(v is FROM_SOURCE for v in r.values())]
        if doubtful and self.source_rows is not None:
            columns = [c.name for c in self.infos[table].columns]
            current = self.source_rows(table, doubtful, columns, True)
            for key in doubtful:
                wanted = [k for k, v in ups[key].items() if v is FROM_SOURCE]
                now = form.fields({k: (current.get(key) or {}).get(k) for k in wanted})
                ups[key] = {k: now[k] if v is FROM_SOURCE else v for k, v in ups[key].items()}
        docs, partial = [], []
        for key, row in ups.items():
            fields = {k: v for k, v in row.items()
                      if v is not UNCHANGED and k not in form.primary_key}
            doc = {"_id": form.id(key), **fields}
            docs.append(doc)
            if any(v is UNCHANGED for v in row.values()):
                # where the held values are: this key's document, or the old key's (key change)
                old = moved.get(key)
                source_id = doc["_id"] if old is None else form.id(old)
                partial.append((key, doc, source_id))
        if partial:
            ids = [source_id for _, _, source_id in partial]
            held = {_id_key(d["_id"]): d for d in coll.find({"_id": {"$in": ids}})}
            for key, doc, source_id in partial:
                got = held.get(_id_key(source_id))
                if got is None:
                    got = self._from_source(table, key)
                for k, v in (got or {}).items():
                    if k != "_id":
                        doc.setdefault(k, v)
        return docs

    def _from_source(self, table: str, key: tuple[Any, ...]) -> dict[str, Any]:
        """The fields of the source's current row, for fields the target does not hold."""
        if self.source_rows is None:
            return {}
        columns = [c.name for c in self.infos[table].columns]
        current = self.source_rows(table, [key], columns, True).get(key)
        return {} if current is None else self.forms[table].fields(current)

    def _bulk(self, coll: Any, ops: list[Any]) -> None:
        """Ordered writes, in commands FerretDB can finish (see FERRETDB_WRITE_CHUNK)."""
        step = self.chunk or max(1, len(ops))
        for i in range(0, len(ops), step):
            coll.bulk_write(ops[i:i + step], ordered=True)

    def _replace_by_delete_and_insert(self, coll: Any, truncate: bool, gone: list[Any],
                                      docs: list[dict[str, Any]]) -> None:
        """FerretDB 1.x: one delete of every key the batch touches, then one insert of the
        batch's rows — not a replace per row, which FerretDB runs as a scan of the whole
        collection for integer and composite `_id`s (quadratic: 10k rows took 15 minutes), and
        which must stay under its connection pool per command. Without transactions the rows
        are briefly absent between the two; a crash there is mended by the replay (offsets and
        position are written after)."""
        if truncate:
            coll.delete_many({})
        keys = gone + [d["_id"] for d in docs]
        step = FERRETDB_WRITE_CHUNK * 10
        for i in range(0, len(keys), step):
            coll.delete_many({"_id": {"$in": keys[i:i + step]}})
        for i in range(0, len(docs), step):
            coll.insert_many(docs[i:i + step], ordered=True)

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------ the applier
@dataclass
class ApplierStats:
    batches: int = 0
    events: int = 0
    dlq: int = 0
    started: float = field(default_factory=time.monotonic)


class Applier:
    """Consumes the migration's topics and applies them until `stop()` (or SIGTERM)."""

    def __init__(self, spec: MigrationSpec, migration_id: str, *, metrics_enabled: bool = True,
                 batch_size: int | None = None, max_wait_ms: int = 200) -> None:
        self.spec = spec
        self.mid = migration_id
        self.metrics_enabled = metrics_enabled
        self.batch_size = batch_size or spec.kafka.batch_size
        self.max_wait_ms = max_wait_ms
        self.stats = ApplierStats()
        self._stop = threading.Event()
        self._outage = _Outage(migration_id, self._stop, metrics_enabled)
        self.heartbeat = self._heartbeat_table()
        #: events are routed by their `source.schema` and `source.table`, never by topic name:
        #: Debezium's topic names are sanitised and two tables can share one (`a b`, `a_b`)
        self.by_source: dict[tuple[str, str], TableSpec] = {
            (t.schema_name, t.name): t for t in self.tables}
        self.topics = sorted({names.table_topic(migration_id, t.source) for t in self.tables})
        self.infos: dict[str, pg.TableInfo] = {}
        self.decoders: dict[str, ColumnDecoder] = {}
        #: tables without a key (REPLICA IDENTITY FULL) on a PostgreSQL target: applied in order
        self.keyless: set[str] = set()
        #: tables without a key on a MongoDB target, which needs one for _id: dead-lettered
        self.unkeyed: set[str] = set()
        #: a MongoDB target's document forms (from its writer): values are mapped as decoded,
        #: so a value the target cannot hold dead-letters its own event
        self.forms: dict[str, DocumentForm] | None = None
        self._source: Any = None
        #: since when the consumer has not been a stable group member (None: it is)
        self._unstable_since: float | None = None

    def _heartbeat_table(self) -> TableSpec | None:
        hb = self.spec.monitor.heartbeat_table
        if any(t.source == TableSpec(source=hb).source for t in self.spec.tables):
            return None
        return TableSpec(source=hb)

    @property
    def tables(self) -> list[TableSpec]:
        return [*self.spec.tables, *([self.heartbeat] if self.heartbeat else [])]

    def stop(self) -> None:
        self._stop.set()

    def _load_tables(self) -> None:
        """Read each table's columns and key from the source — the truth the target mirrors."""
        with pg.connect_endpoint(self.spec.source, "source",
                                 application="migwatch-applier") as conn:
            for t in self.tables:
                with pg.translated(f"source: describe {t.source}"):
                    info = pg.describe_table(conn, t.schema_name, t.name)
                if info is None:
                    log.warning("table %s is missing on the source", t.source)
                    continue
                if not info.primary_key:
                    (self.keyless if self.spec.target.kind == "postgres"
                     else self.unkeyed).add(t.source)
                self.infos[t.source] = info
                self.decoders[t.source] = ColumnDecoder(
                    info.columns, full_identity=info.replica_identity == "f")

    def _writer(self) -> PostgresWriter | MongoWriter:
        if self.spec.target.kind == "postgres":
            return PostgresWriter(self.spec, self.mid, self.infos, self.tables, self.keyless,
                                  source_rows=self.source_rows)
        writer = MongoWriter(self.spec, self.mid, self.infos, self.tables,
                             source_rows=self.source_rows)
        self.forms = writer.forms
        return writer

    def source_rows(self, table: str, keys: list[tuple[Any, ...]], columns: list[str],
                    as_text: bool) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The source's current values of `columns` of the rows `keys` (a key with no row is
        left out) — for an unchanged TOASTed value the target cannot keep, or a NULL that may
        mean unchanged — as PostgreSQL's text of each value, or as Python values. One
        connection, opened on first use; one query per call."""
        if not keys:
            return {}
        info = self.infos[table]
        spec = next(t for t in self.tables if t.source == table)
        pk = list(info.primary_key)
        with pg.translated(f"source: read {table}"):
            if self._source is None or self._source.closed or self._source.broken:
                self._source = pg.connect_endpoint(self.spec.source, "source", autocommit=True,
                                                   application="migwatch-applier")
                self._source.execute(SOURCE_SESSION)  # text forms: UTC, ISO, hex
            if as_text and self.forms is not None:
                values = self.forms[table].select_list(columns, alias="t")
            else:
                values = sql.SQL(", ").join(sql.SQL("t.{}::text" if as_text else "t.{}").format(
                    sql.Identifier(c)) for c in columns)
            query = _rows_by_position(
                sql.Identifier(spec.schema_name, spec.name), sql.SQL(", ") + values,
                pk, {c.name: c.type for c in info.columns}, len(keys))
            found = self._source.execute(query, [v for k in keys for v in k]).fetchall()
        out = {}
        for r in found:
            out[keys[int(r[0])]] = dict(zip(columns, r[1:], strict=True))
        return out

    # -------------------------------------------------------------- decoding one record
    def decode(self, record: Any) -> Change | None:
        """A Change, None for a tombstone (the delete before it applied), or SkipEvent."""
        if record.value is None:
            return None
        value, schema = load_value(record.value)
        if not isinstance(value, dict):
            raise SkipEvent("invalid_envelope", "value is not an object")
        source = value.get("source")
        if not isinstance(source, dict):
            raise SkipEvent("invalid_envelope", "no source block")
        table = self.by_source.get((str(source.get("schema")), str(source.get("table"))))
        if table is None:
            raise SkipEvent("unknown_table", f"table {source.get('schema')!r}."
                                             f"{source.get('table')!r} is not in the spec")
        try:
            return self._change(table, value, source, schema, record.headers)
        except SkipEvent as exc:
            exc.table = table.source
            raise

    def _change(self, table: TableSpec, value: dict[str, Any], source: dict[str, Any],
                schema: Any, headers: Any = None) -> Change:
        if table.source not in self.infos:
            raise SkipEvent("unknown_table", f"table {table.source!r} not found on the source")
        op = value.get("op")
        if op not in ("r", "c", "u", "d", "t"):
            raise SkipEvent("invalid_envelope", f"unknown op {op!r}")
        if table.source in self.unkeyed:
            raise SkipEvent("unsupported_value", f"table {table.source}: no primary key (nor "
                                                 "REPLICA IDENTITY USING INDEX): a MongoDB "
                                                 "target needs a key for _id")
        info = self.infos[table.source]
        decoder = self.decoders[table.source]
        ts = int(source.get("ts_ms") or value.get("ts_ms") or 0)
        lsn = source.get("lsn")
        snap = str(source.get("snapshot") or "false").lower()
        if op == "t":
            return Change(table, "t", (), None, ts, lsn, snap)
        image = value.get("before") if op == "d" else value.get("after")
        if not isinstance(image, dict):
            raise SkipEvent("invalid_envelope", f"op {op!r} without a row image")
        key_change = op == "c" and bool(headers) and OLD_KEY_HEADER in dict(headers)
        # an update's new image and a delete's old one may leave columns out (a delete under
        # REPLICA IDENTITY USING INDEX carries the key only)
        row = decoder.decode(image, schema, update=op in ("u", "d") or key_change)
        if table.source in self.keyless:
            before = value.get("before")
            if op in ("u", "d") and not isinstance(before, dict):
                raise SkipEvent("invalid_envelope", f"op {op!r} of a table without a key "
                                                    "carries no before image")
            old = decoder.decode(before, schema) if op == "u" and isinstance(before, dict) \
                else row if op == "d" else None
            if old is not None and op == "u":  # REPLICA IDENTITY FULL: the old row is whole
                row = {k: old.get(k) if v is UNCHANGED or v is FROM_SOURCE else v
                       for k, v in row.items()}
            return Change(table, op, None, None if op == "d" else row, ts, lsn, snap, old)
        try:
            key = tuple(row[k] for k in info.primary_key)
        except KeyError as exc:
            raise SkipEvent("invalid_envelope", f"primary key column {exc} missing") from exc
        if any(k is UNCHANGED for k in key):
            raise SkipEvent("invalid_envelope", "a key column's value is not in the event")
        old_key = None
        if op == "c" and headers:
            raw = dict(headers).get(OLD_KEY_HEADER)
            if raw:
                old = decoder.decode(orjson.loads(raw), update=True)  # the key columns only
                old_key = tuple(old.get(k) for k in info.primary_key)
        if self.forms is not None:
            row = self._mapped(table.source, op, key, row, old_key)
        return Change(table, op, key, None if op == "d" else row, ts, lsn, snap,
                      old_key=old_key)

    def _mapped(self, table: str, op: str, key: tuple[Any, ...], row: dict[str, Any],
                old_key: tuple[Any, ...] | None) -> dict[str, Any]:
        """A MongoDB target: the row's fields in their document form (key columns stay as
        decoded: the writer maps them to `_id`); a value the target cannot hold dead-letters
        this event, naming its column."""
        assert self.forms is not None
        form = self.forms[table]
        try:
            form.id(key)
            if old_key is not None:
                form.id(old_key)
            return row if op == "d" else {**row, **form.fields(row)}
        except UnsupportedValue as exc:
            raise SkipEvent("unsupported_value", str(exc)) from exc

    # -------------------------------------------------------------- main loop
    def run(self, on_batch: Callable[[Batch], None] | None = None,
            idle_exit_seconds: float | None = None) -> ApplierStats:
        """Consume and apply until stopped (or idle for `idle_exit_seconds`, for benchmarks).

        Rides through outages: a source, target or broker that is away is waited for, with
        backoff and jitter, for as long as it takes — the batch in hand is rewound and applied
        again once it is back; nothing is lost or applied twice (offsets live on the target)."""
        try:
            self._until_ready("source", self._load_tables)
            writer = self._until_ready("target", self._writer)
        except _Stopped:
            return self.stats
        boot = self.spec.kafka.bootstrap_servers
        dlq: Any = None
        consumer: Any = None
        try:
            dlq = self._until_ready("kafka", lambda: kafka_conn.producer(boot))
            consumer, listener = self._until_ready("kafka", lambda: self._subscribe(writer))
            idle_since = time.monotonic()
            while not self._stop.is_set():
                try:
                    records = self._poll(consumer)
                    self._commit_owed(consumer, listener)
                except _StuckConsumer as exc:
                    log.error("%s; replacing the Kafka consumer", exc)
                    _close_quietly(consumer)
                    consumer, listener = self._until_ready(
                        "kafka", lambda: self._subscribe(writer))
                    continue
                except TransientError as exc:
                    self._outage.wait("kafka", exc)
                    continue
                if not records:
                    if idle_exit_seconds is not None and \
                            time.monotonic() - idle_since > idle_exit_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                try:
                    batch = self._process(records, writer, dlq)
                except TransientError as exc:
                    # target or broker away: rewind to the batch start, wait, try again
                    for tp, first in _first_offsets(records).items():
                        consumer.seek(tp, first)
                    self._outage.wait(_dependency(exc), exc)
                    continue
                self._outage.ok()
                self._commit(consumer, batch.offsets, listener)
                if on_batch:
                    on_batch(batch)
        except _Stopped:
            pass
        finally:
            for closer in (consumer, dlq, self._source):
                if closer is not None:
                    _close_quietly(closer)
            writer.close()
        return self.stats

    def _subscribe(self, writer: PostgresWriter | MongoWriter) -> tuple[Any, _SeekToStored]:
        consumer = kafka_conn.consumer(self.spec.kafka.bootstrap_servers,
                                       names.consumer_group(self.mid),
                                       max_poll_records=self.batch_size,
                                       **FETCH_SIZES,
                                       session_timeout_ms=10000, heartbeat_interval_ms=2000,
                                       # a table's topic appears with its first change: notice
                                       # it within seconds, not the 5-minute default
                                       metadata_max_age_ms=5000)
        listener = _SeekToStored(consumer, writer)
        try:
            with kafka_conn.translated("subscribe"):
                consumer.subscribe(topics=[*self.topics, names.heartbeat_topic(self.mid)],
                                   listener=listener)
        except MigwatchError:
            _close_quietly(consumer)
            raise
        self._unstable_since = None
        return consumer, listener

    def _until_ready(self, dependency: str, make: Callable[[], Any]) -> Any:
        """`make()` once the dependency it needs answers; waits out TransientErrors."""
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                out = make()
            except TransientError as exc:
                self._outage.wait(dependency, exc)
                continue
            self._outage.ok()
            return out

    def _commit(self, consumer: Any, offsets: dict[TopicPartition, int],
                listener: _SeekToStored | None = None) -> bool:
        """Kafka offsets, after the target transaction that stored them; False when refused.

        A commit the group refuses because it is rebalancing (or has dropped this member) is no
        failure: the target holds the offsets with the data, whoever is assigned the partitions
        next seeks to them, and the assignment brings them to Kafka too (`_commit_owed`)."""
        from kafka.structs import OffsetAndMetadata

        try:
            with kafka_conn.translated("commit offsets"):
                try:
                    consumer.commit({tp: OffsetAndMetadata(o, "", -1)
                                     for tp, o in offsets.items()})
                except kafka_conn.REBALANCED as exc:
                    log.info("applier %s: Kafka commit refused by a rebalance (%s); the offsets "
                             "are on the target", self.mid, type(exc).__name__)
                    return False
        except TransientError as exc:
            # never fatal: the offsets are on the target; Kafka gets them with a later commit
            log.warning("applier %s: Kafka commit failed (%s); retried later", self.mid, exc)
            if listener is not None:
                listener.owed = {**offsets, **listener.owed}
            return False
        return True

    def _commit_owed(self, consumer: Any, listener: _SeekToStored) -> None:
        """Commit to Kafka the stored offsets of newly assigned partitions. The group's committed
        offsets are what consumer lag is measured from; after a refused commit (or a crash
        between the target's commit and Kafka's) they stay behind the target until the next
        batch of that partition — forever for a table nobody writes to any more."""
        owed, listener.owed = listener.owed, {}
        if not owed:
            return
        assigned = consumer.assignment()
        owed = {tp: o for tp, o in owed.items() if tp in assigned}
        if owed and not (kafka_conn.stable_member(consumer)
                         and self._commit(consumer, owed, listener)):
            listener.owed = {**owed, **listener.owed}  # the next assignment reads them again

    def _poll(self, consumer: Any) -> list[Any]:
        out: list[Any] = []
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while len(out) < self.batch_size and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with kafka_conn.translated("poll"):
                polled = consumer.poll(timeout_ms=max(1, int(left * 1000)),
                                       max_records=self.batch_size - len(out))
            self._keep_membership(consumer)
            for recs in polled.values():
                out.extend(recs)
            if not polled and out:
                break
        return out

    def _keep_membership(self, consumer: Any) -> None:
        """After every poll: re-arm a group join the Kafka client left half done (see
        `kafka_conn.rejoin_if_dropped`), and fail loudly — TransientError, so the process exits
        non-zero and is replaced — when the applier has not been a stable member of its group
        for longer than any rebalance may take, instead of polling on outside the group."""
        if kafka_conn.rejoin_if_dropped(consumer):
            log.warning("applier %s: the Kafka client left a group join half done; rejoining",
                        self.mid)
            if self.metrics_enabled:
                metrics.APPLIER_REJOINS.labels(self.mid).inc()
        now = time.monotonic()
        if kafka_conn.stable_member(consumer):
            self._unstable_since = None
            return
        if self._unstable_since is None:
            self._unstable_since = now
            return
        bound = membership_bound_seconds(consumer.config)
        if now - self._unstable_since > bound:
            stacks = _thread_stacks()
            log.error("applier %s: not a stable member of its consumer group for %.0f s; "
                      "threads:\n%s", self.mid, now - self._unstable_since, stacks)
            raise _StuckConsumer(
                f"applier {self.mid}: not a stable member of consumer group "
                f"{names.consumer_group(self.mid)} for {now - self._unstable_since:.0f} s "
                f"(bound {bound:.0f} s): the Kafka client is stuck; restart the applier")

    def _process(self, records: list[Any], writer: PostgresWriter | MongoWriter,
                 dlq: Any) -> Batch:
        """Apply one gathered batch. Records read twice (a rebalance rewound the consumer while
        polls were gathered) count once, in offset order; records the target already applied are
        dropped inside the apply transaction, so an older image never wins over a newer one."""
        start = time.perf_counter()
        records = _in_offset_order(records)
        while True:
            try:
                batch = self._apply_records(records, writer, dlq)
                break
            except StaleBatch as stale:
                kept = [r for r in records
                        if r.offset >= stale.stored.get(TopicPartition(r.topic, r.partition), 0)]
                log.info("applier %s: %d record(s) of the batch were applied already (a "
                         "rebalance rewound the consumer); dropped", self.mid,
                         len(records) - len(kept))
                if len(kept) == len(records):
                    raise TransientError(f"applier {self.mid}: the target refused a batch as "
                                         "already applied, but no record is") from stale
                records = kept
                if not records:
                    return Batch()
        self._count(batch, time.perf_counter() - start)
        return batch

    def _apply_records(self, records: list[Any], writer: PostgresWriter | MongoWriter,
                       dlq: Any) -> Batch:
        batch = Batch()
        bad: list[tuple[Any, SkipEvent]] = []
        changes: list[tuple[Any, Change]] = []
        hb_topic = names.heartbeat_topic(self.mid)
        for rec in records:
            batch.note_offset(rec)
            if rec.topic == hb_topic:
                ts = _heartbeat_ts(rec.value)
                if ts is not None:
                    batch.note_position(names.ALL_TABLES, ts, None)
                continue
            try:
                ch = self.decode(rec)
            except SkipEvent as exc:
                bad.append((rec, exc))
                continue
            if ch is not None:
                changes.append((rec, ch))
                batch.add(ch)
        batch.dlq = self._dlq_counts(bad)  # recorded with the batch, in its transaction
        if bad:
            # dead letters are acknowledged by Kafka before the target stores the offsets past
            # them; a batch the target applied already sends none
            stored = writer.stored_offsets(batch.first_offsets)
            if any(first < stored.get(tp, 0) for tp, first in batch.first_offsets.items()):
                raise StaleBatch(stored)
            self._send_dead_letters(dlq, bad)
        try:
            writer.apply(batch)
        except PermanentError as exc:
            if writer.broken:  # the target went away mid-batch: nothing is wrong with the data
                raise TransientError(f"target: connection lost: {exc}") from exc
            # one change poisons the batch: apply one by one, dead-letter the ones that fail
            batch = self._apply_singly(changes, records, writer, bad, dlq)
        return batch

    def _apply_singly(self, changes: list[tuple[Any, Change]], records: list[Any],
                      writer: PostgresWriter | MongoWriter,
                      bad: list[tuple[Any, SkipEvent]], dlq: Any) -> Batch:
        if isinstance(writer, PostgresWriter):
            writer.conn.rollback()
        total = Batch()
        failed: list[tuple[Any, SkipEvent]] = []
        for rec, ch in changes:
            one = Batch()
            one.add(ch)
            try:
                writer.apply_one(one)
            except PermanentError as exc:
                if writer.broken:
                    raise TransientError(f"target: connection lost: {exc}") from exc
                failed.append((rec, SkipEvent("apply_failed", str(exc)[:500])))
                continue
            total.add(ch)
        self._send_dead_letters(dlq, failed)
        bad.extend(failed)
        # position and offsets of everything (good and dead-lettered) in one last write
        for rec in records:
            total.note_offset(rec)
        marker = Batch(offsets=total.offsets, max_ts=dict(total.max_ts),
                       max_lsn=dict(total.max_lsn), dlq=self._dlq_counts(bad))
        # a snapshot's end marks count even on a dead-lettered record: the snapshot was read to
        # its end, and whoever follows it must not wait for a record that will never land
        for _, ch in changes:
            if ch.snapshot in SNAPSHOT_LAST:
                marker.snapshot_done.add(ch.table.source)
                if ch.snapshot == "last":
                    marker.snapshot_done.add(names.ALL_TABLES)
        writer.apply(marker)
        total.dlq = dict(marker.dlq)
        total.upserts.clear()
        total.deletes.clear()
        total.ordered.clear()
        return total

    def _dlq_counts(self, bad: list[tuple[Any, SkipEvent]]) -> dict[str, int]:
        """Dead-lettered events per source table (`*` when the table is not known), each
        (topic, partition, offset) once."""
        counts: dict[str, int] = {}
        seen: set[tuple[str, int, int]] = set()
        for rec, exc in bad:
            where = (rec.topic, rec.partition, rec.offset)
            if where in seen:
                continue
            seen.add(where)
            key = exc.table or names.ALL_TABLES
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _send_dead_letters(self, dlq: Any, bad: list[tuple[Any, SkipEvent]]) -> None:
        """Send every dead letter and wait until Kafka has acknowledged each one."""
        if not bad:
            return
        with kafka_conn.translated("dead-letter"):
            sent = [dlq.send(self.spec.dlq_topic(self.mid), value=rec.value, key=rec.key,
                             headers=_dlq_headers(rec, exc)) for rec, exc in bad]
            dlq.flush(timeout=30)
            for future in sent:
                future.get(timeout=30)
        for rec, exc in bad:
            log.warning("dead-lettered %s[%d]@%d: %s %s", rec.topic, rec.partition, rec.offset,
                        exc.reason, exc.detail[:300])
            self.stats.dlq += 1
            if self.metrics_enabled:
                metrics.DLQ_EVENTS.labels(self.mid, exc.reason).inc()

    def _count(self, batch: Batch, seconds: float) -> None:
        self.stats.batches += 1
        self.stats.events += batch.event_count
        if not self.metrics_enabled:
            return
        metrics.APPLY_BATCH_DURATION.labels(self.mid).observe(seconds)
        now_ms = time.time() * 1000
        for (table, op), n in batch.events.items():
            metrics.CDC_EVENTS.labels(self.mid, "postgres", table, op).inc(n)
        for table in set(batch.upserts) | set(batch.deletes):
            rows = len(batch.upserts.get(table) or ()) + len(batch.deletes.get(table) or ())
            metrics.MIGRATION_ROWS.labels(self.mid, table).inc(rows)
            if table in batch.max_ts:
                spec = next((t for t in self.tables if t.source == table), None)
                metrics.CDC_REPLICATION_LAG.labels(
                    self.mid, table, spec.target_name if spec else table
                ).set(max(0.0, (now_ms - batch.max_ts[table]) / 1000))
        if names.ALL_TABLES in batch.max_ts:
            metrics.APPLIED_SOURCE_TS.labels(self.mid).set(batch.max_ts[names.ALL_TABLES] / 1000)
            metrics.EVENT_TIME_LAG.labels(self.mid).set(
                max(0.0, (now_ms - batch.max_ts[names.ALL_TABLES]) / 1000))


def _rows_by_position(table: sql.Identifier, columns: sql.Composable, pk: list[str],
                      types: dict[str, str], count: int) -> sql.Composed:
    """SELECT the ordinal of each of `count` keys (bound as parameters, cast to the key
    columns' types) with `columns` of its row in `table` — keys matched by position, since a
    decoded key and the driver's value of it need not print alike."""
    slots = [sql.Identifier(f"k{i}") for i in range(len(pk))]
    return sql.SQL("SELECT v.i{} FROM {} AS t JOIN (VALUES {}) AS v(i, {}) ON ({}) = ({})").format(
        columns, table,
        sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(n), sql.SQL(", ").join(
            sql.SQL("CAST(%s AS {})").format(sql.SQL(types[k])) for k in pk))
            for n in range(count)),
        sql.SQL(", ").join(slots),
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in pk),
        sql.SQL(", ").join(sql.SQL("v.{}").format(slot) for slot in slots))


def _id_key(value: Any) -> Any:
    """A hashable form of an `_id` (compound keys are documents)."""
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


def _in_offset_order(records: list[Any]) -> list[Any]:
    """Each (topic, partition, offset) once, in offset order per partition."""
    unique = {(r.topic, r.partition, r.offset): r for r in records}
    return [unique[k] for k in sorted(unique)]


def _dlq_headers(rec: Any, exc: SkipEvent) -> list[tuple[str, bytes]]:
    return [
        ("migwatch.reason", exc.reason.encode()),
        ("migwatch.error", exc.detail[:1000].encode()),
        ("migwatch.topic", rec.topic.encode()),
        ("migwatch.partition", str(rec.partition).encode()),
        ("migwatch.offset", str(rec.offset).encode()),
    ]


def _first_offsets(records: list[Any]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for rec in records:
        tp = TopicPartition(rec.topic, rec.partition)
        first[tp] = min(first.get(tp, rec.offset), rec.offset)
    return first


def _heartbeat_ts(value: bytes | None) -> int | None:
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and "payload" in doc:
        doc = doc["payload"]
    ts = doc.get("ts_ms") if isinstance(doc, dict) else None
    return int(ts) if isinstance(ts, int | float) else None


def membership_bound_seconds(config: dict[str, Any]) -> float:
    """How long a consumer may legitimately be outside a stable group: the broker waits up to
    the rebalance timeout (`max_poll_interval_ms`) for slow members, plus one session timeout,
    and never less than 30 s."""
    return max(30.0, (config["max_poll_interval_ms"] + config["session_timeout_ms"]) / 1000)


def _thread_stacks() -> str:
    """Every thread's stack (the Kafka client's IO thread included), for a stuck applier."""
    names_ = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(f"--- {names_.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
                     for ident, frame in sys._current_frames().items())


class _Stopped(Exception):
    """The applier was stopped while it waited for a dependency."""


class _StuckConsumer(TransientError):
    """The Kafka client stayed outside its group longer than any rebalance may take."""


def _dependency(exc: BaseException) -> str:
    """Which dependency a TransientError of a batch is about (for the log and the metric)."""
    text = str(exc).lower()
    return "target" if text.startswith("target") else "kafka"


def _close_quietly(closer: Any) -> None:
    try:
        if isinstance(closer, KafkaConsumer):
            closer.close(autocommit=False)
        else:
            closer.close()
    except Exception:  # noqa: BLE001 - closing what an outage already broke
        log.debug("close failed", exc_info=True)


class _Outage:
    """Waiting for a dependency that is away: backoff with jitter (0.5 s doubling to 30 s), the
    state said once per change in the log and in `migwatch_applier_waiting`."""

    def __init__(self, migration_id: str, stop: threading.Event, metrics_enabled: bool) -> None:
        self.mid = migration_id
        self.stop = stop
        self.metrics_enabled = metrics_enabled
        self.dependency: str | None = None
        self.since = 0.0
        self.attempt = 0

    def wait(self, dependency: str, exc: BaseException) -> None:
        if dependency != self.dependency:
            if self.dependency is not None:
                self._gauge(self.dependency, 0)
            log.warning("applier %s: waiting for %s: %s", self.mid, dependency, exc)
            self.dependency, self.since, self.attempt = dependency, time.monotonic(), 0
            self._gauge(dependency, 1)
            if self.metrics_enabled:
                metrics.APPLIER_OUTAGES.labels(self.mid, dependency).inc()
        self.attempt += 1
        delay = min(30.0, 0.5 * 2 ** min(self.attempt, 6)) * random.uniform(0.5, 1.0)
        self.stop.wait(delay)
        if self.stop.is_set():
            raise _Stopped

    def ok(self) -> None:
        if self.dependency is None:
            return
        log.warning("applier %s: %s is back after %.1f s", self.mid, self.dependency,
                    time.monotonic() - self.since)
        self._gauge(self.dependency, 0)
        self.dependency = None

    def _gauge(self, dependency: str, value: int) -> None:
        if self.metrics_enabled:
            metrics.APPLIER_WAITING.labels(self.mid, dependency).set(value)


class _SeekToStored(ConsumerRebalanceListener):
    """On assignment, continue from the offsets stored on the target with the data itself.

    kafka-python 3 calls it on its IO thread, but only while the applier's own thread is blocked
    inside `consumer.poll()` (the join that assigns runs within it), so the writer's connection
    is never used by two threads at once, and never inside an apply transaction.
    """

    def __init__(self, consumer: Any, writer: PostgresWriter | MongoWriter) -> None:
        self.consumer = consumer
        self.writer = writer
        #: stored offsets of the last assignment, for the applier's thread to commit to Kafka
        #: (a commit cannot be made from the IO thread)
        self.owed: dict[TopicPartition, int] = {}

    def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            stored = self.writer.stored_offsets(assigned)
        except MigwatchError as exc:
            log.warning("cannot read stored offsets (%s); using the group's committed ones", exc)
            return
        for tp, offset in stored.items():
            self.consumer.seek(tp, offset)
        self.owed = dict(stored)


def install_signal_handlers(applier: Applier) -> dict[int, Any]:
    """SIGTERM/SIGINT finish the current batch, commit and exit cleanly; returns the handlers
    they replace (main thread only)."""

    def _handler(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        applier.stop()

    return {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def serve(spec: MigrationSpec, migration_id: str, *, applier: Applier | None = None,
          metrics_port: int = 0, file_sd_dir: Path | None = None, handle_signals: bool = True,
          on_ready: Callable[[int], None] | None = None) -> ApplierStats:
    """Run the applier until it is stopped, serving /metrics and announcing itself to Prometheus
    with a file_sd target file that is removed on exit — what `migwatch apply` and the
    `cdc-applier` flow both run.

    `handle_signals` (main thread only) makes SIGTERM/SIGINT stop it after the current batch and
    puts the previous handlers back on return; a caller that owns the signals passes False and
    calls `applier.stop()` itself. `on_ready` gets the metrics port once it is served.
    """
    applier = applier or Applier(spec, migration_id)
    previous = install_signal_handlers(applier) if handle_signals else {}
    try:
        server = metrics.MetricsServer(file_sd_dir or StackSettings().file_sd_dir,
                                       "migwatch-applier", migration_id,
                                       metrics_port or spec.metrics.port).start()
        try:
            if on_ready is not None:
                on_ready(server.port)
            return applier.run()
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
