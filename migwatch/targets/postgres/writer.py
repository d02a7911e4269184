"""The PostgreSQL target's writer: each batch in one transaction with its position and offsets.

Why: the staging COPY plus one upsert and one delete per table, and the position and Kafka
offsets in the same transaction, make a crash at any point neither lose nor double-apply an event
(the applier seeks to the offsets stored here on every assignment)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from kafka import TopicPartition
from psycopg import sql

from migwatch import names
from migwatch.batches import Batch, SourceRows, StaleBatch
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import postgres as pg
from migwatch.decoding import FROM_SOURCE, UNCHANGED
from migwatch.errors import MigwatchError
from migwatch.schema_changes import (
    ADDED,
    NOT_NULL,
    NULLABLE,
    WIDENED,
    ColumnChange,
    SchemaChange,
    TableStopped,
    differences,
)
from migwatch.targets.postgres.positions import (
    OFFSETS,
    POSITIONS,
    ensure_tables,
    record_schema_change,
)

log = logging.getLogger("migwatch.applier")


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
        self.conn = self._connect()
        self._stage: dict[str, sql.Identifier] = {}
        #: (table, column) whose NOT NULL the source added and the target keeps nullable (its
        #: rows may lack a value): followed once, not again at every later read of the table
        self._left_nullable: set[tuple[str, str]] = set()
        self._prepare()

    def _connect(self) -> Any:
        """The applier's target connection; replicated rows are written as PostgreSQL's own
        logical replication writes them — `session_replication_role = replica`, so the target's
        triggers and foreign keys do not fire on rows that arrive in per-table order — when the
        user may set it (superuser, or PostgreSQL 15's GRANT SET ON PARAMETER; pre-flight
        requires it when the tables have foreign keys or triggers)."""
        conn = pg.connect_endpoint(self.spec.target, "target", application="migwatch-applier")
        with pg.translated("target: session_replication_role"):
            if may_set_replica_role(conn):
                conn.execute("SET session_replication_role = replica")
            conn.commit()
        return conn

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
        self.conn = self._connect()
        log.warning("applier %s: reconnected to the target", self.mid)

    @property
    def broken(self) -> bool:
        """The connection is gone: a failure seen on it says nothing about the data."""
        return bool(self.conn.closed or self.conn.broken)

    def _prepare(self) -> None:
        with pg.translated("target: prepare position tables"), self.conn.transaction():
            ensure_tables(self.conn)

    _offsets_table = OFFSETS

    def abandon(self) -> None:
        self.conn.rollback()

    def record_schema_change(self, record: SchemaChange) -> None:
        with pg.translated("target: record a schema change"):
            self._live()
            with self.conn.transaction():
                record_schema_change(self.conn, self.mid, record)

    def target_row(self, table: str, op: str, key: tuple[Any, ...], row: dict[str, Any],
                   old_key: tuple[Any, ...] | None) -> dict[str, Any]:
        return row  # PostgreSQL takes the decoded values as they are

    def source_select(self, table: str, columns: Sequence[str]) -> sql.Composable:
        """PostgreSQL's text of each value: COPY takes it back exactly (json keeps its
        spacing, arrays their bounds)."""
        return sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c))
                                  for c in columns)

    def stored_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = {(tp.topic, tp.partition): tp for tp in partitions}
        with pg.translated("target: read offsets"):
            self._live()
            rows = self.conn.execute(sql.SQL(
                "SELECT topic, partition, next_offset FROM {} WHERE migration_id = %s"
            ).format(self._offsets_table), [self.mid]).fetchall()
            self.conn.commit()
        return {wanted[(t, p)]: o for t, p, o in rows if (t, p) in wanted}

    def evolve(self, table: str, info: pg.TableInfo,
               fills: Mapping[str, str | None]) -> list[ColumnChange]:
        """Bring the target table to the source's definition `info` where that is additive (see
        `schema_changes`), in one transaction; TableStopped (nothing altered) where it is not.
        `fills`: per added column, the text of the value the source gave its existing rows."""
        with pg.translated("target: reconnect"):
            self._live()
        schema, name = self._target_name(table)
        ident = sql.Identifier(schema, name)
        with pg.translated(f"target: read {table}"):
            held = pg.describe_table(self.conn, schema, name)
            self.conn.commit()
        if held is None:  # not a change of the source: its events fail and dead-letter
            return []
        changes = [c for c in differences({c.name: (c.type, c.not_null) for c in info.columns},
                                          {c.name: (c.type, c.not_null) for c in held.columns})
                   if not (c.kind == NOT_NULL and (table, c.column) in self._left_nullable)]
        refused = [c for c in changes if not c.additive]
        if refused:
            raise TableStopped(table, refused)
        try:
            self._alter(table, ident, info, changes, fills)
        except MigwatchError as exc:  # e.g. a type the target does not have
            if self.broken:
                raise
            raise TableStopped(table, changes, str(exc)) from exc
        self.infos[table] = info
        self._left_nullable |= {(table, c.column) for c in changes if c.kind == NOT_NULL}
        unfilled = [c.column for c in changes if c.kind == ADDED and c.column not in fills]
        if unfilled and info.primary_key and self.source_rows is not None:
            self._backfill(table, ident, info, unfilled)
        return changes

    def _backfill(self, table: str, ident: sql.Identifier, info: pg.TableInfo,
                  columns: list[str]) -> None:
        """Added columns whose value in the rows that existed then PostgreSQL did not keep (a
        volatile default, or a rewrite since): every row the target holds takes the source's
        current value. Sound against the stream: an event older than this read carries the
        value the row had then, and the row's later events follow it."""
        pk = list(info.primary_key)
        sets = sql.SQL(", ").join(sql.SQL("{} = CAST(%s AS {})").format(
            sql.Identifier(c), sql.SQL(info.column(c).type)) for c in columns)
        match = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in pk)
        update = sql.SQL("UPDATE {} SET {} WHERE {}").format(ident, sets, match)
        assert self.source_rows is not None
        with pg.translated(f"target: fill the added columns of {table}"), \
                self.conn.transaction():
            cur = self.conn.cursor(name="migwatch_backfill")
            cur.execute(sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(k) for k in pk), ident))
            while True:
                keys = [tuple(r) for r in cur.fetchmany(1000)]
                if not keys:
                    break
                current = self.source_rows(table, keys, columns)
                with self.conn.cursor() as up:
                    up.executemany(update, [[current[k][c] for c in columns] + list(k)
                                            for k in keys if k in current])
            cur.close()
        for c in columns:  # NOT NULL as on the source, once every row holds a value
            if info.column(c).not_null:
                try:
                    with pg.translated(f"target: {table}.{c} NOT NULL"), \
                            self.conn.transaction():
                        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL")
                                          .format(ident, sql.Identifier(c)))
                except MigwatchError as exc:
                    log.warning("applier %s: %s.%s stays nullable on the target: %s", self.mid,
                                table, c, exc)

    def _alter(self, table: str, ident: sql.Identifier, info: pg.TableInfo,
               changes: list[ColumnChange], fills: Mapping[str, str | None]) -> None:
        """The additive `changes` as DDL, in one transaction."""
        with pg.translated(f"target: follow the source's schema of {table}"), \
                self.conn.transaction():
            for ch in changes:
                col = sql.Identifier(ch.column)
                source = info.column(ch.column)
                if ch.kind == ADDED:
                    fill = fills.get(ch.column)
                    self.conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}{}").format(
                        ident, col, sql.SQL(source.type),
                        sql.SQL("") if fill is None else sql.SQL(" DEFAULT {}::{}").format(
                            sql.Literal(fill), sql.SQL(source.type))))
                    # the fill was for existing rows only: target tables carry no defaults
                    # (their rows come from the source, whose defaults made the values)
                    self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT")
                                      .format(ident, col))
                    if source.not_null and fill is not None:
                        self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL")
                                          .format(ident, col))
                elif ch.kind == WIDENED:
                    self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
                        ident, col, sql.SQL(source.type)))
                elif ch.kind == NULLABLE:
                    self.conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL")
                                      .format(ident, col))
            # the staging table has the old shape — also one the dict forgot after a rollback
            # (a temp table created in an earlier, committed transaction outlives it)
            self._stage.pop(table, None)
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(
                self._stage_name(table)))

    def _staging(self, table: str) -> sql.Identifier:
        ident = self._stage.get(table)
        if ident is None:
            # a stable name per table: temp tables outlive the transactions that use them (only
            # their rows go at commit), so a name must never be reused for another table's shape
            ident = self._stage_name(table)
            # the target's columns without their NOT NULL: a row that leaves a column out (an
            # unchanged TOASTed value, a column added after the event) holds NULL there
            self.conn.execute(sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS "
                "SELECT * FROM {} WITH NO DATA"
            ).format(ident, sql.Identifier(*self._target_name(table))))
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} text[]").format(
                ident, sql.Identifier(self.UNCHANGED_COLUMN)))
            self._stage[table] = ident
        return ident

    def _stage_name(self, table: str) -> sql.Identifier:
        return sql.Identifier(f"migwatch_stage_{self._table_index[table]}")

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

    def _truncate(self, target: sql.Identifier) -> None:
        """A source TRUNCATE, on this table only. A table another one references cannot be
        truncated alone (a source TRUNCATE … CASCADE arrives as one event per table, on each
        table's own topic, read in no common order): its rows are deleted instead — under
        `session_replication_role = replica` no foreign key fires, so the referencing table
        keeps what its own topic says until its own TRUNCATE event."""
        try:
            with self.conn.transaction():  # a savepoint: the refusal must not end the batch
                self.conn.execute(sql.SQL("TRUNCATE {}").format(target))
        except psycopg.errors.FeatureNotSupported:
            self.conn.execute(sql.SQL("DELETE FROM {}").format(target))

    def _apply_table(self, table: str, batch: Batch) -> None:
        info = self.infos[table]
        batch.fill_unknown(table, [c.name for c in info.columns])
        target = sql.Identifier(*self._target_name(table))
        pk = info.primary_key
        if table in batch.truncates:
            self._truncate(target)
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
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} WHERE {} IS NULL "
                "ON CONFLICT ({}) {}"
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
                current = self.source_rows(table, [key], wanted).get(key)
                found = None if current is None else tuple(current[k] for k in wanted)
            row.update(zip(wanted, found if found is not None else [None] * len(wanted),
                           strict=True))

    def _held_keys(self, table: str, target: sql.Identifier,
                   keys: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        """Which of `keys` the target holds, in one query (keys matched by position: a decoded
        key and the driver's value of it need not print alike)."""
        info = self.infos[table]
        query = pg.rows_by_position(target, sql.SQL(""), list(info.primary_key),
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
        current = self.source_rows(table, list(doubtful), columns) \
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
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} WHERE {} IS NOT NULL "
            "ON CONFLICT DO NOTHING"
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
        insert = sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ({})").format(
            target, col_ids, values)
        update = sql.SQL("UPDATE {} SET ({}) = ROW({}) WHERE ctid = {}").format(
            target, col_ids, values, one_row)
        delete = sql.SQL("DELETE FROM {} WHERE ctid = {}").format(target, one_row)
        if table in batch.truncates:
            self._truncate(target)
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
                ).format(POSITIONS), rows)
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


def may_set_replica_role(conn: Any) -> bool:
    """Whether this session's user may set `session_replication_role` (superuser, or on
    PostgreSQL 15+ granted SET on the parameter)."""
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if row and row[0]:
        return True
    if conn.info.server_version < 150000:
        return False
    row = conn.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')"
                       ).fetchone()
    return bool(row and row[0])
