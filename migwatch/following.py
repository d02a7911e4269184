"""Following the source's schema while the applier runs (the choices are `schema_changes`):
a table whose events stop matching its known columns, or whose values the target refuses, has
its definition read from the source again and its target brought along; a table its target
cannot follow by itself is held — its topic paused before the event that needs the change,
the other tables going on — and continues once the target has the change."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from psycopg import sql

from migwatch import metrics, names
from migwatch.batches import Batch
from migwatch.config import TableSpec
from migwatch.connectors import postgres as pg
from migwatch.errors import MigwatchError
from migwatch.schema_changes import (
    ADDED,
    CONTINUED,
    FOLLOWED,
    STOPPED,
    SchemaChange,
    TableStopped,
    widens,
)

if TYPE_CHECKING:
    from migwatch.applier import Applier
    from migwatch.targets.base import Writer

log = logging.getLogger("migwatch.applier")

#: how often a held table is checked for its target having the change
STOPPED_RECHECK_SECONDS = 5.0


class SchemaFollower:
    """One applier's schema changes: `follow` a table, `hold` one that stopped, and
    `retry_stopped` the held ones."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier
        #: tables held by a change their target does not follow: why, and when last checked
        self.stopped: dict[str, tuple[TableStopped, float]] = {}
        #: per stopped table: the definition its held event was written under, and its position
        self.waiting: dict[str, tuple[pg.TableInfo, int | None]] = {}
        #: history records the target was away for, written at the next chance
        self._unrecorded: list[SchemaChange] = []
        self._last_recorded_try = 0.0

    def _record(self, outcome: str, table: str, changes: list[Any],
                note: str | None = None) -> None:
        """Append to the migration's schema-change history on the target (`schema_changes`);
        a target that is away gets it later — the history never holds up the data."""
        self._unrecorded.append(SchemaChange(time.time(), table, outcome, tuple(changes), note))
        self._record_pending()

    def _record_pending(self) -> None:
        self._last_recorded_try = time.monotonic()
        writer = self.applier.writer
        while self._unrecorded and writer is not None:
            try:
                writer.record_schema_change(self._unrecorded[0])
            except MigwatchError as exc:
                log.warning("applier %s: schema change not recorded yet: %s",
                            self.applier.mid, exc)
                return
            self._unrecorded.pop(0)

    def follow(self, table: str, wanted: pg.TableInfo | None = None,
               at: int | None = None) -> bool:
        """Bring the target along to `wanted` — the definition an event was written under
        (`events`) — or, without one, to the definition a stopped table waits for, else to the
        source's as it is now; where the change is additive (the writer's `evolve`;
        TableStopped where it is not). Events then decode by it. True when the table's
        definition or its target changed."""
        writer = self.applier.writer
        assert writer is not None
        spec = next(t for t in self.applier.tables if t.source == table)
        old = self.applier.events.infos.get(table)
        conn = self.applier.source_conn()
        with pg.translated(f"source: describe {table}"):
            now = pg.describe_table(conn, spec.schema_name, spec.name)
            if wanted is None and table in self.waiting:
                wanted, at = self.waiting[table]
            info = wanted or now
            if info is None:
                return False
            fills: dict[str, str | None] = {}
            if old is not None:
                info = _held_wider(info, old)
            if now is not None:
                info, fills = _behind(info, now)
                fills.update(_existing_rows_values(conn, spec, now, info))
        try:
            changes = writer.evolve(table, info, fills)
        except TableStopped as exc:
            self.waiting[table] = (info, at)
            exc.changes = [dataclasses.replace(c, since=at) for c in exc.changes]
            metrics.SCHEMA_CHANGES.labels(self.applier.mid, table, STOPPED).inc()
            raise
        self.waiting.pop(table, None)
        if at is not None:
            changes = [dataclasses.replace(c, since=at) for c in changes]
            self.applier.events.note_changes(table, [c.column for c in changes], at)
        changed = bool(changes) or old is None or \
            [(c.name, c.type) for c in old.columns] != [(c.name, c.type) for c in info.columns]
        if changed:
            self.applier.events.set_table(table, info)
            metrics.SCHEMA_CHANGES.labels(self.applier.mid, table, FOLLOWED).inc()
            if changes:
                self._record(FOLLOWED, table, changes)
            log.warning("applier %s: table %s changed on the source; the target follows: %s",
                        self.applier.mid, table, "; ".join(c.describe() for c in changes) or
                        "nothing to alter")
            added = [c.column for c in changes if c.kind == ADDED]
            unfilled = [c for c in added if c not in fills]
            if unfilled:
                log.info("applier %s: %s: column(s) %s: rows that existed when they were added "
                         "took the source's current values (PostgreSQL kept none to copy)",
                         self.applier.mid, table, unfilled)
        return changed

    def hold(self, consumer: Any, exc: TableStopped) -> None:
        """Stop a table's apply before the event that needs the change (its topic paused, its
        offsets not past that event); the other tables keep going."""
        topic = names.table_topic(self.applier.mid, exc.table)
        parts = [tp for tp in consumer.assignment() if tp.topic == topic]
        if parts:
            consumer.pause(*parts)
        if exc.table not in self.stopped:
            log.error("applier %s: %s", self.applier.mid, exc)
            metrics.TABLE_STOPPED.labels(self.applier.mid, exc.table).set(1)
            self._record(STOPPED, exc.table, exc.changes, exc.why)
        self.stopped[exc.table] = (exc, time.monotonic())

    def retry_stopped(self, consumer: Any) -> None:
        """Every `STOPPED_RECHECK_SECONDS`, a stopped table whose target now has the change
        (a versioned migration did it) continues where it stopped."""
        now = time.monotonic()
        if self._unrecorded and now - self._last_recorded_try >= STOPPED_RECHECK_SECONDS:
            self._record_pending()
        for table, (_, since) in list(self.stopped.items()):
            if now - since < STOPPED_RECHECK_SECONDS:
                continue
            try:
                self.follow(table)
            except TableStopped as exc:
                self.stopped[table] = (exc, now)
                continue
            except MigwatchError as exc:
                log.warning("applier %s: cannot re-check stopped table %s: %s",
                            self.applier.mid, table, exc)
                self.stopped[table] = (self.stopped[table][0], now)
                continue
            topic = names.table_topic(self.applier.mid, table)
            parts = [tp for tp in consumer.assignment() if tp.topic == topic]
            if parts:
                consumer.resume(*parts)
            held = self.stopped.pop(table)[0]
            for c in held.changes:  # events before the held one are older than the target now
                if c.since is not None:
                    self.applier.events.note_changes(table, [c.column], c.since)
            metrics.TABLE_STOPPED.labels(self.applier.mid, table).set(0)
            self._record(CONTINUED, table, held.changes)
            log.warning("applier %s: table %s continues: its target has the change",
                        self.applier.mid, table)


def _held_wider(wanted: pg.TableInfo, followed: pg.TableInfo) -> pg.TableInfo:
    """`wanted` with the target's type kept where it already holds every value of the wanted
    one (the target was widened ahead of this event): nothing to narrow back."""
    held = {c.name: c for c in followed.columns}
    return dataclasses.replace(wanted, columns=tuple(
        held[c.name] if c.name in held and held[c.name].type != c.type
        and widens(c.type, held[c.name].type) else c for c in wanted.columns))


def _behind(wanted: pg.TableInfo, now: pg.TableInfo,
            ) -> tuple[pg.TableInfo, dict[str, str | None]]:
    """`wanted` — an event's definition — as the target takes it when the source has changed
    since: a column whose type the source has widened since takes the wider type at once (the
    event's values fit, and the rows' current values, read to fill it, fit too); one the
    source has dropped or changed otherwise since is not filled from the source's current
    values (they are of another column or type: NULL until the rows' events, or the
    resolution of the change still ahead, bring theirs)."""
    held = {c.name: c for c in now.columns}
    columns: list[pg.Column] = []
    no_fill: dict[str, str | None] = {}
    for c in wanted.columns:
        cur = held.get(c.name)
        if cur is not None and cur.type != c.type and widens(c.type, cur.type):
            c = dataclasses.replace(cur, not_null=c.not_null)
        elif cur is None or cur.type != c.type:
            no_fill[c.name] = None
        columns.append(c)
    return dataclasses.replace(wanted, columns=tuple(columns)), no_fill


def _existing_rows_values(conn: Any, table: TableSpec, now: pg.TableInfo,
                          wanted: pg.TableInfo) -> dict[str, str]:
    """Per column added with a non-volatile default, the text of the value the rows that existed
    then have (PostgreSQL keeps it as the column's "missing value"); a column added with NULL or
    a volatile default (the table rewritten, row by row) has none — nor one whose type on the
    source (`now`) is no longer the one `wanted` has."""
    ident = sql.Identifier(table.schema_name, table.name).as_string(conn)
    names_ = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND atthasmissing",
        [ident]).fetchall()]
    want = {c.name: c.type for c in wanted.columns}
    held = {c.name: c for c in now.columns}
    out = {}
    for name in names_:
        column = held.get(name)
        if column is None or want.get(name) != column.type:
            continue
        if column.value_type.endswith("[]"):
            continue  # an array's missing value does not read back as one element
        row = conn.execute(sql.SQL(
            "SELECT (attmissingval::text::{}[])[1]::text FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = %s").format(sql.SQL(column.value_type)),
            [ident, name]).fetchone()
        if row is not None and row[0] is not None:
            out[name] = row[0]
    return out


class IncrementalSnapshots:
    """A table added to a running migration is loaded by Debezium's incremental snapshot, whose
    end arrives as a notification (`TABLE_SCAN_COMPLETED`) on its own topic — read side by side
    with the table's, so possibly before the table's last snapshot rows are applied. The table
    is marked done (its position row's `snapshot_done`, as the initial snapshot's last record
    does) once the target's stored offsets reach its topic's end as read after the
    notification: every snapshot row is in there by then."""

    def __init__(self, migration_id: str, tables: list[TableSpec]) -> None:
        self.mid = migration_id
        self.by_name = {f"{t.schema_name}.{t.name}": t.source for t in tables}
        #: tables scanned to the end, with the end offsets of their topic then (None: to read)
        self.pending: dict[str, dict[Any, int] | None] = {}

    def scanned(self, value: bytes | None) -> str | None:
        """The table a notification says Debezium's incremental snapshot read to its end."""
        try:
            doc = orjson.loads(value or b"null")
        except orjson.JSONDecodeError:
            return None
        if isinstance(doc, dict) and "schema" in doc and "payload" in doc:
            doc = doc["payload"]  # a schemas-on envelope (the connector's converter)
        if not isinstance(doc, dict) or doc.get("aggregate_type") != "Incremental Snapshot" \
                or doc.get("type") != "TABLE_SCAN_COMPLETED":
            return None
        data = doc.get("additional_data") or {}
        if data.get("status") not in (None, "SUCCEEDED", "EMPTY"):
            log.error("applier %s: incremental snapshot of %s ended %s", self.mid,
                      data.get("scanned_collection"), data.get("status"))
            return None
        return self.by_name.get(str(data.get("scanned_collection") or ""))

    def follow(self, consumer: Any, writer: Writer, scanned: set[str] | None = None) -> None:
        """Note newly `scanned` tables' topic ends; mark done those the target has reached (a
        broker or target that is away: next time — the table waits, nothing is lost)."""
        for table in scanned or ():
            self.pending[table] = None
            log.info("applier %s: Debezium read %s to its end; done once its topic is applied",
                     self.mid, table)
        try:
            self._follow(consumer, writer)
        except Exception as exc:  # noqa: BLE001 - retried at the next batch or idle poll
            log.warning("applier %s: incremental snapshot progress not recorded yet: %s",
                        self.mid, exc)

    def _follow(self, consumer: Any, writer: Writer) -> None:
        from kafka import TopicPartition

        if not self.pending:
            return
        for table, known in self.pending.items():
            if known is None:
                topic = names.table_topic(self.mid, table)
                parts = [TopicPartition(topic, p)
                         for p in consumer.partitions_for_topic(topic) or ()]
                self.pending[table] = consumer.end_offsets(parts) if parts else {}
        ends_of = {t: e for t, e in self.pending.items() if e is not None}
        stored = writer.stored_offsets([tp for ends in ends_of.values() for tp in ends])
        done = {t for t, ends in ends_of.items()
                if all(stored.get(tp, 0) >= end for tp, end in ends.items())}
        if done:
            writer.apply(Batch(snapshot_done=set(done)))
            for t in done:
                del self.pending[t]
                log.warning("applier %s: table %s loaded (incremental snapshot)", self.mid, t)
