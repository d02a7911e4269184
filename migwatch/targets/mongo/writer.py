"""The MongoDB target's writer: ordered bulk writes keyed by `_id`, then position and offsets.

Why: MongoDB (FerretDB in the local stack) has no transaction here, so every write is by `_id`
and idempotent: a batch replayed after a crash lands the same, and the offsets stored after it
say where to resume.

A collection holds the source's unique keys as unique indexes (`indexes.py`). Rows written as
the batch collapsed them may collide there where the source's never did — two rows swapping a
value, written in another order than the source's — so a collision re-applies that collection's
changes of the batch one by one in source order; one that collides even so is a real error."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import TopicPartition
from psycopg import sql

from migwatch import names
from migwatch.batches import Batch, SourceRows, StaleBatch
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import mongo
from migwatch.connectors import postgres as pg
from migwatch.decoding import FROM_SOURCE, UNCHANGED
from migwatch.errors import PermanentError, TransientError, UnsupportedValue
from migwatch.schema_changes import (
    ADDED,
    CHANGED,
    DROPPED,
    WIDENED,
    ColumnChange,
    SchemaChange,
    TableStopped,
    differences,
)
from migwatch.targets.mongo.positions import record_schema_change
from migwatch.targets.mongo.values import DocumentForm, key_value, supports_decimal128

log = logging.getLogger("migwatch.applier")


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

    def record_schema_change(self, record: SchemaChange) -> None:
        with mongo.translated("target: record a schema change"):
            record_schema_change(self.db, self.mid, record)

    def stored_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = {(tp.topic, tp.partition): tp for tp in partitions}
        out = {}
        for doc in self.db[names.OFFSETS_COLLECTION].find({"_id.migration_id": self.mid}):
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
                try:
                    if self.chunk is not None:
                        self._replace_by_delete_and_insert(coll, table in batch.truncates,
                                                           gone, docs)
                    else:
                        ops: list[Any] = [DeleteMany({})] if table in batch.truncates else []
                        ops += [DeleteOne({"_id": _id}) for _id in gone]
                        ops += [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
                        self._bulk(coll, ops)
                except self._errors as exc:
                    steps = len(batch.steps.get(table) or ())
                    if not duplicate_key(exc) or steps < 2:  # one change: that was its order
                        raise
                    log.info("applier %s: %s: the batch's rows collide on a unique index of "
                             "collection %s written at once; applying its %d changes one by "
                             "one in source order", self.mid, table, spec.target_table, steps)
                    self._apply_in_source_order(coll, table, batch, docs)
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
            self._bulk(self.db[names.OFFSETS_COLLECTION], [
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

    def abandon(self) -> None:
        return None  # every write was by `_id`: nothing to roll back

    def target_row(self, table: str, op: str, key: tuple[Any, ...], row: dict[str, Any],
                   old_key: tuple[Any, ...] | None) -> dict[str, Any]:
        """The row's fields in their document form (key columns stay as decoded: `_id` is
        made from them when written)."""
        form = self.forms[table]
        form.id(key)
        if old_key is not None:
            form.id(old_key)
        return row if op == "d" else {**row, **form.fields(row)}

    def source_select(self, table: str, columns: Sequence[str]) -> sql.Composable:
        return self.forms[table].select_list(columns, alias="t")

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
        batch.fill_unknown(table, [c for c in form.columns if c not in form.primary_key])
        moved = batch.moved.get(table) or {}
        ups = batch.upserts.get(table) or {}
        doubtful = [k for k, r in ups.items() if any(v is FROM_SOURCE for v in r.values())]
        if doubtful and self.source_rows is not None:
            columns = [c.name for c in self.infos[table].columns]
            current = self.source_rows(table, doubtful, columns)
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
                    got = self._from_source(table, key, [
                        k for k, v in ups[key].items() if v is UNCHANGED])
                for k, v in (got or {}).items():
                    if k != "_id":
                        doc.setdefault(k, v)
        return docs

    def _apply_in_source_order(self, coll: Any, table: str, batch: Batch,
                               finals: list[dict[str, Any]]) -> None:
        """The table's changes of the batch one write at a time, in source order, after every
        document they touch is removed — so no row the collapsed write got to first stands in
        the way — as the source made them: each state in between held its unique keys, so a
        collision now is a real one (raised). `finals`: the rows' last documents, with the
        values the events left out filled in; a row's earlier documents take those from its
        previous one, else from its last, else from what the target held."""
        form = self.forms[table]
        steps = batch.steps.get(table) or []
        ids = list({_id_key(i): i for i in (form.id(k) for k, _ in steps)}.values())
        parts = [ids[i:i + FERRETDB_WRITE_CHUNK * 10]
                 for i in range(0, len(ids), FERRETDB_WRITE_CHUNK * 10)]
        held: dict[Any, dict[str, Any]] = {}
        for part in parts:
            held.update({_id_key(d["_id"]): d for d in coll.find({"_id": {"$in": part}})})
        last = {_id_key(d["_id"]): d for d in finals}
        final_step = {_id_key(form.id(k)): n for n, (k, _) in enumerate(steps)}
        if table in batch.truncates:
            coll.delete_many({})
        for part in parts:
            coll.delete_many({"_id": {"$in": part}})
        current: dict[Any, dict[str, Any]] = {}
        for n, (key, row) in enumerate(steps):
            _id = form.id(key)
            k = _id_key(_id)
            if row is None:
                if current.pop(k, None) is not None:
                    coll.delete_one({"_id": _id})
                continue
            if final_step[k] == n and k in last:
                doc = last[k]
            else:
                doc = {"_id": _id, **{c: v for c, v in row.items()
                                      if c not in form.primary_key and not _marker(v)}}
                for earlier in (current.get(k), last.get(k), held.get(k)):
                    for c, v in (earlier or {}).items():
                        doc.setdefault(c, v)
            if k in current:
                if self.chunk is not None:  # FerretDB: no replace by `_id` (see above)
                    coll.delete_one({"_id": _id})
                    coll.insert_one(doc)
                else:
                    coll.replace_one({"_id": _id}, doc)
            else:
                coll.insert_one(doc)
            current[k] = doc

    def _from_source(self, table: str, key: tuple[Any, ...],
                     columns: list[str]) -> dict[str, Any]:
        """The source's current values of `columns` of a row, for fields the target does not
        hold (only those: the source's other columns may be of a definition the target has not
        reached yet)."""
        if self.source_rows is None or not columns:
            return {}
        current = self.source_rows(table, [key], columns).get(key)
        if current is None:
            return {}
        return {k: v for k, v in self.forms[table].fields(current).items() if k in columns}

    def evolve(self, table: str, info: pg.TableInfo,
               fills: Mapping[str, str | None]) -> list[ColumnChange]:
        """Learn the source's definition `info` (see `schema_changes`): an added column's value
        on existing documents is the one the source gave its existing rows; a dropped column,
        or a type changed in a way the value form does not keep, stops the table
        (TableStopped) while documents still hold the column."""
        old = self.infos[table]
        changes = differences({c.name: (c.type, c.not_null) for c in info.columns},
                              {c.name: (c.type, c.not_null) for c in old.columns})
        coll = self.db[self.tables[table].target_table]
        form = DocumentForm(info, decimal128=self.decimal128,
                            json_string_columns=self.tables[table].json_string_columns)
        with mongo.translated(f"target: follow the source's schema of {table}"):
            breaking = [c for c in changes if not c.additive]
            breaking += [ColumnChange(c.column, CHANGED, c.source_type, c.target_type)
                         for c in changes if c.kind == WIDENED
                         and form.forms[c.column].kind != self.forms[table].forms[c.column].kind]
            # a column no document holds any more (`migwatch resume-table --accept` removed
            # it) is followed: dropped, or filled again from the source like an added one
            refused = [c for c in breaking
                       if coll.find_one({c.column: {"$exists": True}}, {"_id": 1}) is not None]
            if refused:  # (what no document can hold at all was refused at pre-flight; its
                # values dead-letter event by event, naming the column)
                raise TableStopped(table, refused)
            added = [c.column for c in changes if c.kind == ADDED] + \
                [c.column for c in breaking if c.kind != DROPPED]
            for column in added:
                if column not in fills:
                    continue
                raw = fills[column]  # None: no value known now — NULL until events bring one
                try:
                    value = None if raw is None else form.forms[column].to_bson(raw)
                except UnsupportedValue as exc:
                    raise TableStopped(table, [ColumnChange(column, CHANGED)], str(exc)) \
                        from exc
                coll.update_many({column: {"$exists": False}}, {"$set": {column: value}})
            self.infos[table] = info
            self.forms[table] = form  # the source is read in its form from here on
            unfilled = [c for c in added if c not in fills]
            if unfilled and self.source_rows is not None:
                self._backfill(table, coll, form, info, unfilled)
        return changes

    def _backfill(self, table: str, coll: Any, form: DocumentForm, info: pg.TableInfo,
                  columns: list[str]) -> None:
        """Added columns PostgreSQL kept no value of for the rows that existed then: every
        document lacking one takes the source's current value (sound against the stream, as
        the PostgreSQL writer's backfill)."""
        from pymongo import UpdateOne

        assert self.source_rows is not None
        key_columns = [info.column(k) for k in form.primary_key]
        missing = {"$or": [{c: {"$exists": False}} for c in columns]}
        ids = [d["_id"] for d in coll.find(missing, {"_id": 1})]
        for i in range(0, len(ids), 1000):
            keys: dict[tuple[Any, ...], Any] = {}
            for _id in ids[i:i + 1000]:
                try:
                    parts = [_id] if len(key_columns) == 1 else [_id[c.name] for c in key_columns]
                    keys[tuple(key_value(v, c) for v, c in zip(parts, key_columns,
                                                               strict=True))] = _id
                except (KeyError, TypeError, ValueError):
                    continue
            current = self.source_rows(table, list(keys), columns)
            ops = []
            for key, row in current.items():
                try:
                    ops.append(UpdateOne({"_id": keys[key]}, {"$set": form.fields(row)}))
                except UnsupportedValue:
                    continue  # its events dead-letter it, naming the column
            self._bulk(coll, ops)

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




def _id_key(value: Any) -> Any:
    """A hashable form of an `_id`, the same for one built here and one read back: compound keys
    are documents, Decimal128 is not hashable, dates come back naive (the client's tz_aware)."""
    from bson import Decimal128

    if isinstance(value, dict):
        return tuple(sorted((k, _id_key(v)) for k, v in value.items()))
    if isinstance(value, Decimal128):
        return ("decimal128", value.bid)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _marker(value: Any) -> bool:
    return value is UNCHANGED or value is FROM_SOURCE


#: the server's codes for a write a unique index refuses
DUPLICATE_KEY_CODES = {11000, 11001}


def duplicate_key(exc: BaseException) -> bool:
    """Whether a write failed only because a unique index refused it: MongoDB's E11000 (alone
    or in a bulk write's errors), or FerretDB 1.x's answer to an update that collides
    (InternalError "UNIQUE constraint failed")."""
    from pymongo.errors import BulkWriteError, OperationFailure

    if isinstance(exc, BulkWriteError):
        errors = (exc.details or {}).get("writeErrors") or []
        return bool(errors) and all(
            e.get("code") in DUPLICATE_KEY_CODES or "UNIQUE constraint failed" in
            str(e.get("errmsg", "")) for e in errors)
    if isinstance(exc, OperationFailure):
        return exc.code in DUPLICATE_KEY_CODES or "UNIQUE constraint failed" in str(exc)
    return False
