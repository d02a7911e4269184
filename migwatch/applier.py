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

import base64
import datetime as dt
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import orjson
from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from psycopg import sql

from migwatch import metrics, names, positions
from migwatch.config import MigrationSpec, StackSettings, TableSpec
from migwatch.connectors import kafka as kafka_conn
from migwatch.connectors import mongo
from migwatch.connectors import postgres as pg
from migwatch.errors import MigwatchError, PermanentError, TransientError
from migwatch.mapping import key_to_id, row_to_document, supports_decimal128

log = logging.getLogger("migwatch.applier")

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
EPOCH_DATE = dt.date(1970, 1, 1)
SNAPSHOT_LAST = {"last", "last_in_data_collection"}
# kafka-python fetch sizes: 1 MiB per partition (Kafka's default) reads and decodes 1.3-1.8×
# faster than 16 MiB (bench/applier.py, 3.2 kB events), whose large responses the client
# buffers slowly
FETCH_SIZES: dict[str, int] = {"fetch_max_bytes": 64 << 20, "max_partition_fetch_bytes": 1 << 20}


class SkipEvent(Exception):
    """An event that cannot be applied; `reason` is a bounded class for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass
class Change:
    """One decoded change: `row` is None for a delete; `key` is the primary-key tuple."""

    table: TableSpec
    op: str  # r c u d t (truncate)
    key: tuple[Any, ...]
    row: dict[str, Any] | None
    source_ts_ms: int
    lsn: int | None
    snapshot: str


@dataclass
class Batch:
    """Changes collapsed per table and key, plus what the position rows need."""

    upserts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    deletes: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    truncates: set[str] = field(default_factory=set)
    events: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op) -> count
    max_ts: dict[str, int] = field(default_factory=dict)
    max_lsn: dict[str, int] = field(default_factory=dict)
    snapshot_rows: dict[str, int] = field(default_factory=dict)
    snapshot_done: set[str] = field(default_factory=set)
    dlq: dict[str, int] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read

    def add(self, ch: Change) -> None:
        t = ch.table.source
        ups = self.upserts.setdefault(t, {})
        dels = self.deletes.setdefault(t, set())
        if ch.op == "t":
            ups.clear()
            dels.clear()
            self.truncates.add(t)
        elif ch.op == "d":
            ups.pop(ch.key, None)
            dels.add(ch.key)
        else:
            dels.discard(ch.key)
            assert ch.row is not None
            ups[ch.key] = ch.row
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

    @property
    def event_count(self) -> int:
        return sum(self.events.values())


# ------------------------------------------------------------------------------ decoding
def _micros_to_datetime(v: int) -> dt.datetime:
    return (EPOCH + dt.timedelta(microseconds=v)).replace(tzinfo=None)


def _parse_ts(v: str) -> dt.datetime:
    return dt.datetime.fromisoformat(v.replace("Z", "+00:00"))


class ColumnDecoder:
    """Turns Debezium JSON values (schemas on or off) into Python values of the column's type.

    Expects the connector settings capture.py sets: decimal.handling.mode=string,
    binary.handling.mode=base64, time.precision.mode=adaptive_time_microseconds; with schemas on
    it also decodes Connect's Decimal bytes using the scale in the schema.
    """

    def __init__(self, columns: Iterable[pg.Column], json_as_text: bool = False) -> None:
        self.json_as_text = json_as_text
        self.kinds: dict[str, str] = {}
        #: per numeric column, from the embedded schema: the Decimal scale when Connect sent the
        #: value as bytes (decimal.handling.mode=precise), None when it sent text; kept with the
        #: size of the schema it came from, so a changed schema is read again
        self._decimal_bytes: dict[str, tuple[int, int | None]] = {}
        for c in columns:
            t = c.type.lower()
            if t.endswith("[]"):
                kind = "array"
            elif t.startswith(("numeric", "decimal", "money")):
                kind = "numeric"
            elif t in ("json", "jsonb"):
                kind = "json"
            elif t == "bytea":
                kind = "bytea"
            elif t.startswith("timestamp") and "with time zone" in t:
                kind = "timestamptz"
            elif t.startswith("timestamp"):
                kind = "timestamp"
            elif t == "date":
                kind = "date"
            elif t.startswith("time") and "with time zone" not in t:
                kind = "time"
            else:
                kind = "plain"
            self.kinds[c.name] = kind

    def decode(self, row: dict[str, Any], schema: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in row.items():
            kind = self.kinds.get(name)
            if kind is None:
                raise SkipEvent("unknown_column", f"column {name!r} is not in the table")
            out[name] = None if value is None else self._one(kind, name, value, schema)
        return out

    def _bytes_scale(self, name: str, schema: Any) -> int | None:
        size = len(schema) if isinstance(schema, msgspec.Raw) else len(str(schema))
        known = self._decimal_bytes.get(name)
        if known is None or known[0] != size:
            known = (size, _schema_decimal_scale(schema, name))
            self._decimal_bytes[name] = known
        return known[1]

    def _one(self, kind: str, name: str, v: Any, schema: Any) -> Any:
        try:
            if kind == "numeric":
                if isinstance(v, dict) and "value" in v:  # variable scale decimal
                    raw = int.from_bytes(base64.b64decode(v["value"]), "big", signed=True)
                    return Decimal(raw).scaleb(-int(v["scale"]))
                if isinstance(v, str):
                    # text, unless the schema says Connect's Decimal bytes (base64 text can
                    # look like a number: "1234" is both)
                    scale = self._bytes_scale(name, schema) if schema is not None else None
                    if scale is None:
                        return Decimal(v)
                    raw = int.from_bytes(base64.b64decode(v), "big", signed=True)
                    return Decimal(raw).scaleb(-scale)
                return Decimal(str(v))
            if kind == "json":
                if self.json_as_text:
                    return v if isinstance(v, str) else orjson.dumps(v).decode()
                return orjson.loads(v) if isinstance(v, str) else v
            if kind == "bytea":
                return base64.b64decode(v) if isinstance(v, str) else bytes(v)
            if kind == "timestamptz":
                return _parse_ts(v) if isinstance(v, str) else EPOCH + dt.timedelta(milliseconds=v)
            if kind == "timestamp":
                if isinstance(v, str):
                    return dt.datetime.fromisoformat(v)
                return _micros_to_datetime(v) if abs(v) > 10**13 else _micros_to_datetime(v * 1000)
            if kind == "date":
                if isinstance(v, int):
                    return EPOCH_DATE + dt.timedelta(days=v)
                return dt.date.fromisoformat(v)
            if kind == "time":
                if isinstance(v, int):
                    return (dt.datetime.min + dt.timedelta(microseconds=v)).time()
                return dt.time.fromisoformat(v)
            return v
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise SkipEvent("bad_value", f"column {name!r}: {type(exc).__name__}") from exc


class _WithSchema(msgspec.Struct):
    """JsonConverter's schemas-on form; the schema stays raw bytes until a value needs it."""

    schema: msgspec.Raw
    payload: Any


_WITH_SCHEMA = msgspec.json.Decoder(_WithSchema)


def _load_value(raw: bytes) -> tuple[Any, Any]:
    """(payload, schema or None) of a record value, for both JsonConverter forms.

    The schemas-on form is about three quarters schema, read only for Connect Decimal bytes:
    msgspec skips it unparsed (2.6× faster than parsing it, bench/applier.py). Anything else —
    schemas off, or a value msgspec refuses — goes through orjson as before.
    """
    if raw.startswith(b'{"schema":'):
        try:
            env = _WITH_SCHEMA.decode(raw)
            return env.payload, env.schema
        except msgspec.DecodeError:
            pass  # orjson below names what is wrong with it
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SkipEvent("invalid_json", f"not JSON: {exc.msg}") from exc
    if isinstance(value, dict) and "payload" in value and "schema" in value:
        return value["payload"], value["schema"]
    return value, None


def _schema_decimal_scale(schema: dict[str, Any] | msgspec.Raw, column: str) -> int | None:
    """The column's scale when the envelope's schema types it as Connect's Decimal (bytes),
    None when it is text (decimal.handling.mode=string)."""
    parsed = orjson.loads(bytes(schema)) if isinstance(schema, msgspec.Raw) else schema
    for f in (parsed or {}).get("fields", []):
        if f.get("field") in ("after", "before"):
            for col in f.get("fields", []):
                if col.get("field") == column:
                    if col.get("type") == "bytes":
                        return int((col.get("parameters") or {}).get("scale", 0))
                    return None
    raise SkipEvent("bad_value", f"column {column!r} is not in the event's schema")


# ------------------------------------------------------------------------------ target writers
class PostgresWriter:
    """Applies batches to a PostgreSQL target in one transaction each, with position and offsets."""

    def __init__(self, spec: MigrationSpec, migration_id: str,
                 infos: dict[str, pg.TableInfo], tables: list[TableSpec]) -> None:
        self.spec = spec
        self.mid = migration_id
        self.infos = infos
        self.tables = {t.source: t for t in tables}
        self._table_index = {t.source: i for i, t in enumerate(tables)}
        self.conn = pg.connect_endpoint(spec.target, "target", application="migwatch-applier")
        self._stage: dict[str, sql.Identifier] = {}
        with pg.translated("target: prepare position tables"), self.conn.transaction():
            positions.ensure_table_pg(self.conn)
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (migration_id text NOT NULL, topic text NOT NULL,"
                " partition integer NOT NULL, next_offset bigint NOT NULL,"
                " PRIMARY KEY (migration_id, topic, partition))"
            ).format(sql.Identifier(names.POSITION_SCHEMA, "applied_offsets")))

    def stored_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = {(tp.topic, tp.partition): tp for tp in partitions}
        with pg.translated("target: read offsets"):
            rows = self.conn.execute(sql.SQL(
                "SELECT topic, partition, next_offset FROM {} WHERE migration_id = %s"
            ).format(sql.Identifier(names.POSITION_SCHEMA, "applied_offsets")),
                [self.mid]).fetchall()
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
            self._stage[table] = ident
        return ident

    def _target_name(self, table: str) -> tuple[str, str]:
        schema, name = self.tables[table].target_name.split(".")
        return schema, name

    def apply(self, batch: Batch) -> None:
        try:
            with pg.translated("target: apply batch"), self.conn.transaction():
                for table in sorted(set(batch.upserts) | set(batch.deletes) | batch.truncates):
                    self._apply_table(table, batch)
                self._record(batch)
        except MigwatchError:
            self._stage.clear()  # staging tables created in the rolled-back transaction are gone
            raise

    def apply_one(self, batch: Batch) -> None:
        """Apply a single-change batch inside a savepoint-free transaction (DLQ fallback path)."""
        self.apply(batch)

    def _apply_table(self, table: str, batch: Batch) -> None:
        info = self.infos[table]
        target = sql.Identifier(*self._target_name(table))
        pk = info.primary_key
        if table in batch.truncates:
            self.conn.execute(sql.SQL("TRUNCATE {}").format(target))
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
        col_ids = sql.SQL(", ").join(sql.Identifier(n) for n in names_)
        with self.conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, col_ids)) as copy:
                for row in ups.values():
                    copy.write_row([_pg_value(row.get(n)) for n in names_])
            non_key = [n for n in names_ if n not in pk]
            conflict = sql.SQL(", ").join(sql.Identifier(k) for k in pk)
            action: sql.Composable
            if non_key:
                action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n))
                    for n in non_key))
            else:
                action = sql.SQL("DO NOTHING")
            cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                target, col_ids, col_ids, stage, conflict, action))

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
                    "INSERT INTO {} (migration_id, topic, partition, next_offset)"
                    " VALUES (%s,%s,%s,%s)"
                    " ON CONFLICT (migration_id, topic, partition)"
                    " DO UPDATE SET next_offset = EXCLUDED.next_offset"
                ).format(sql.Identifier(names.POSITION_SCHEMA, "applied_offsets")),
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
                 infos: dict[str, pg.TableInfo], tables: list[TableSpec]) -> None:
        from pymongo.errors import PyMongoError

        self._errors = PyMongoError
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
            for table in sorted(set(batch.upserts) | set(batch.deletes) | batch.truncates):
                spec = self.tables[table]
                pk = list(self.infos[table].primary_key)
                coll = self.db[spec.target_table]
                gone = [key_to_id(list(key), pk, decimal128=self.decimal128)
                        for key in batch.deletes.get(table) or ()]
                docs = [row_to_document(row, pk, spec.json_string_columns,
                                        decimal128=self.decimal128)
                        for row in (batch.upserts.get(table) or {}).values()]
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
        self.by_topic: dict[str, TableSpec] = {
            names.table_topic(migration_id, t.source): t for t in self.spec.tables
        }
        self.heartbeat = self._heartbeat_table()
        if self.heartbeat is not None:
            self.by_topic[names.table_topic(migration_id, self.heartbeat.source)] = self.heartbeat
        self.infos: dict[str, pg.TableInfo] = {}
        self.decoders: dict[str, ColumnDecoder] = {}
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
                    # replica identity full: the whole row is the key
                    info = pg.TableInfo(info.schema, info.name, info.columns,
                                        tuple(c.name for c in info.columns), info.replica_identity)
                self.infos[t.source] = info
                self.decoders[t.source] = ColumnDecoder(
                    info.columns, json_as_text=self.spec.target.kind == "postgres")

    def _writer(self) -> PostgresWriter | MongoWriter:
        if self.spec.target.kind == "postgres":
            return PostgresWriter(self.spec, self.mid, self.infos, self.tables)
        return MongoWriter(self.spec, self.mid, self.infos, self.tables)

    # -------------------------------------------------------------- decoding one record
    def decode(self, record: Any) -> Change | None:
        """A Change, None for a tombstone/heartbeat (position only), or SkipEvent."""
        table = self.by_topic.get(record.topic)
        if record.value is None:
            return None  # tombstone after a delete: the delete already applied
        value, schema = _load_value(record.value)
        if not isinstance(value, dict):
            raise SkipEvent("invalid_envelope", "value is not an object")
        if table is None:
            raise SkipEvent("unknown_table", f"topic {record.topic!r} is not in the spec")
        if table.source not in self.infos:
            raise SkipEvent("unknown_table", f"table {table.source!r} not found on the source")
        op = value.get("op")
        source = value.get("source") or {}
        if op not in ("r", "c", "u", "d", "t"):
            raise SkipEvent("invalid_envelope", f"unknown op {op!r}")
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
        row = decoder.decode(image, schema)
        try:
            key = tuple(row[k] for k in info.primary_key)
        except KeyError as exc:
            raise SkipEvent("invalid_envelope", f"primary key column {exc} missing") from exc
        return Change(table, op, key, None if op == "d" else row, ts, lsn, snap)

    # -------------------------------------------------------------- main loop
    def run(self, on_batch: Callable[[Batch], None] | None = None,
            idle_exit_seconds: float | None = None) -> ApplierStats:
        """Consume and apply until stopped (or idle for `idle_exit_seconds`, for benchmarks)."""
        self._load_tables()
        writer = self._writer()
        boot = self.spec.kafka.bootstrap_servers
        consumer = kafka_conn.consumer(boot, names.consumer_group(self.mid),
                                       max_poll_records=self.batch_size,
                                       **FETCH_SIZES,
                                       session_timeout_ms=10000, heartbeat_interval_ms=2000,
                                       # a table's topic appears with its first change: notice
                                       # it within seconds, not the 5-minute default
                                       metadata_max_age_ms=5000)
        dlq = kafka_conn.producer(boot)
        topics = [*self.by_topic, names.heartbeat_topic(self.mid)]
        listener = _SeekToStored(consumer, writer)
        with kafka_conn.translated("subscribe"):
            consumer.subscribe(topics=topics, listener=listener)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                records = self._poll(consumer)
                self._commit_owed(consumer, listener)
                if not records:
                    if idle_exit_seconds is not None and \
                            time.monotonic() - idle_since > idle_exit_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                try:
                    batch = self._process(records, writer, dlq)
                except TransientError as exc:
                    # target or broker blipped: rewind to the batch start and try again
                    log.warning("transient error, retrying the batch: %s", exc)
                    for tp, first in _first_offsets(records).items():
                        consumer.seek(tp, first)
                    self._stop.wait(min(30.0, 1.0 + self.stats.batches % 5))
                    continue
                self._commit(consumer, batch.offsets)
                if on_batch:
                    on_batch(batch)
        finally:
            consumer.close(autocommit=False)
            dlq.close()
            writer.close()
        return self.stats

    def _commit(self, consumer: Any, offsets: dict[TopicPartition, int]) -> bool:
        """Kafka offsets, after the target transaction that stored them; False when refused.

        A commit the group refuses because it is rebalancing (or has dropped this member) is no
        failure: the target holds the offsets with the data, whoever is assigned the partitions
        next seeks to them, and the assignment brings them to Kafka too (`_commit_owed`)."""
        from kafka.structs import OffsetAndMetadata

        with kafka_conn.translated("commit offsets"):
            try:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
            except kafka_conn.REBALANCED as exc:
                log.info("applier %s: Kafka commit refused by a rebalance (%s); the offsets are "
                         "on the target", self.mid, type(exc).__name__)
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
        if owed and not (kafka_conn.stable_member(consumer) and self._commit(consumer, owed)):
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
            raise TransientError(
                f"applier {self.mid}: not a stable member of consumer group "
                f"{names.consumer_group(self.mid)} for {now - self._unstable_since:.0f} s "
                f"(bound {bound:.0f} s): the Kafka client is stuck; restart the applier")

    def _process(self, records: list[Any], writer: PostgresWriter | MongoWriter,
                 dlq: Any) -> Batch:
        start = time.perf_counter()
        batch = Batch()
        bad: list[tuple[Any, SkipEvent]] = []
        changes: list[tuple[Any, Change]] = []
        hb_topic = names.heartbeat_topic(self.mid)
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            batch.offsets[tp] = max(batch.offsets.get(tp, 0), rec.offset + 1)
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
        try:
            writer.apply(batch)
        except PermanentError:
            # one change poisons the batch: apply one by one, dead-letter the ones that fail
            batch = self._apply_singly(changes, records, writer, bad)
        for rec, skip in bad:
            self._dead_letter(dlq, rec, skip)
        if bad:
            with kafka_conn.translated("flush dead-letter topic"):
                dlq.flush(timeout=30)
        self._count(batch, time.perf_counter() - start)
        return batch

    def _apply_singly(self, changes: list[tuple[Any, Change]], records: list[Any],
                      writer: PostgresWriter | MongoWriter,
                      bad: list[tuple[Any, SkipEvent]]) -> Batch:
        if isinstance(writer, PostgresWriter):
            writer.conn.rollback()
        total = Batch()
        for rec, ch in changes:
            one = Batch()
            one.add(ch)
            try:
                writer.apply_one(one)
            except PermanentError as exc:
                bad.append((rec, SkipEvent("apply_failed", str(exc)[:500])))
                continue
            total.add(ch)
        # position and offsets of everything (good and dead-lettered) in one last write
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            total.offsets[tp] = max(total.offsets.get(tp, 0), rec.offset + 1)
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
        return total

    def _dlq_counts(self, bad: list[tuple[Any, SkipEvent]]) -> dict[str, int]:
        """Dead-lettered events per source table (`*` for a topic not in the spec)."""
        counts: dict[str, int] = {}
        for rec, _ in bad:
            table = self.by_topic.get(rec.topic)
            key = table.source if table else names.ALL_TABLES
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _dead_letter(self, dlq: Any, rec: Any, exc: SkipEvent) -> None:
        headers = [
            ("migwatch.reason", exc.reason.encode()),
            ("migwatch.error", exc.detail[:1000].encode()),
            ("migwatch.topic", rec.topic.encode()),
            ("migwatch.partition", str(rec.partition).encode()),
            ("migwatch.offset", str(rec.offset).encode()),
        ]
        with kafka_conn.translated("dead-letter"):
            dlq.send(self.spec.dlq_topic(self.mid), value=rec.value, key=rec.key, headers=headers)
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
