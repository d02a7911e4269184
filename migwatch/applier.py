"""The CDC applier: a Kafka consumer that applies Debezium change events to the target.

Why it is built this way:
- Events are read into changes (`events.py`) and collapsed to the last one per key
  (`batches.py`; a key change arrives from Debezium as a delete of the old key and a create of
  the new one); the target engine's writer (`migwatch.targets`) applies the batch together with
  the applied position and the next Kafka offsets — in ONE transaction on PostgreSQL, by `_id`
  (idempotent on replay) on MongoDB. Kafka offsets are committed only after that; on
  (re)assignment the consumer seeks to the offsets stored on the target (`consuming.py`), so a
  crash at any point neither loses nor double-applies an event.
- An event that cannot be decoded or applied goes to the dead-letter topic with the reason in its
  headers and is counted; the rest of the batch still applies.
- Rebalances: kafka-python 3 can leave a group leader's join half done (the member drops out of
  its group while `poll()` keeps returning nothing); the applier re-arms such a join after every
  poll and fails loudly if it stays outside its group longer than any rebalance may take. A Kafka
  commit refused by a rebalance is not an error: the offsets are on the target.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from psycopg import sql

from migwatch import metrics, names
from migwatch.batches import SNAPSHOT_LAST, Batch, Change, StaleBatch
from migwatch.config import MigrationSpec, StackSettings, TableSpec
from migwatch.connectors import kafka as kafka_conn
from migwatch.connectors import postgres as pg
from migwatch.consuming import (
    Outage,
    SeekToStored,
    Stopped,
    StuckConsumer,
    close_quietly,
    dependency_of,
    dlq_headers,
    first_offsets,
    heartbeat_ts,
    in_offset_order,
    membership_bound_seconds,
    thread_stacks,
)
from migwatch.decoding import SkipEvent
from migwatch.errors import MigwatchError, PermanentError, TransientError
from migwatch.events import EventReader
from migwatch.following import IncrementalSnapshots, SchemaFollower
from migwatch.schema_changes import TableStopped, changed_at, widens
from migwatch.targets import engine_for
from migwatch.targets.base import Writer

log = logging.getLogger("migwatch.applier")



# kafka-python fetch sizes: 1 MiB per partition (Kafka's default) reads and decodes 1.3-1.8×
# faster than 16 MiB (bench/applier.py, 3.2 kB events), whose large responses the client
# buffers slowly
FETCH_SIZES: dict[str, int] = {"fetch_max_bytes": 64 << 20, "max_partition_fetch_bytes": 1 << 20}


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
        self._outage = Outage(migration_id, self._stop, metrics_enabled)
        self.heartbeat = self._heartbeat_table()
        self.topics = sorted({names.table_topic(migration_id, t.source) for t in self.tables})
        self.engine = engine_for(spec)
        self.events = EventReader(self.tables, self.engine)
        self.schema = SchemaFollower(self)
        self.snapshots = IncrementalSnapshots(self.mid, self.tables)
        self.events.on_schema_change = self.schema.follow
        self.events.source_conn = self.source_conn
        #: the writer, once made
        self.writer: Writer | None = None
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
            self.events.load(conn)

    def _writer(self) -> Writer:
        self.writer = self.engine.writer(self.mid, self.events.infos, self.tables,
                                         self.events.keyless, self.source_rows)
        self.events.writer = self.writer  # maps each row as it is decoded
        with self.engine.session("migwatch-applier") as session:
            for (table, column), at in changed_at(session.schema_changes(self.mid)).items():
                self.events.note_changes(table, [column], at)
        return self.writer

    @property
    def infos(self) -> dict[str, pg.TableInfo]:
        return self.events.infos

    def source_rows(self, table: str, keys: list[tuple[Any, ...]], columns: list[str],
                    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The source's current values of `columns` of the rows `keys` (a key with no row is
        left out) — for an unchanged TOASTed value the target cannot keep, or a NULL that may
        mean unchanged — in the form the writer takes them (`Writer.source_select`). One
        connection, opened on first use; one query per call."""
        if not keys:
            return {}
        info = self.infos[table]
        spec = next(t for t in self.tables if t.source == table)
        pk = list(info.primary_key)
        asked = columns
        with pg.translated(f"source: read {table}"):
            source = self.source_conn()
            assert self.writer is not None  # the writer is what asks
            # a column the source no longer has, or has since changed to a type the target's
            # does not widen to (the applier has not reached that change yet), has no current
            # value of the target's definition: NULL — the change's own event, ahead, stops the
            # table, and its resolution fills the column again from the source
            held = {c.name: c.type for c in info.columns}
            now = dict(source.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                "attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                [sql.Identifier(spec.schema_name, spec.name).as_string(source)]).fetchall())
            columns = [c for c in asked if c in now and
                       (c not in held or widens(held[c], now[c]))]
            found = self._read_rows(source, spec, table, pk, info, keys, columns or pk[:1])
        out = {}
        for r in found:
            out[keys[int(r[0])]] = {**dict.fromkeys(asked),
                                    **dict(zip(columns, r[1:1 + len(columns)], strict=True))}
        return out

    def _read_rows(self, source: Any, spec: TableSpec, table: str, pk: list[str],
                   info: pg.TableInfo, keys: list[tuple[Any, ...]], columns: list[str],
                   ) -> list[Any]:
        assert self.writer is not None
        values = self.writer.source_select(table, columns)
        query = pg.rows_by_position(
            sql.Identifier(spec.schema_name, spec.name), sql.SQL(", ") + values,
            pk, {c.name: c.type for c in info.columns}, len(keys))
        return list(source.execute(query, [v for k in keys for v in k]).fetchall())

    def decode(self, record: Any) -> Change | None:
        """A Change, None for a tombstone, or SkipEvent (`events.EventReader.decode`)."""
        return self.events.decode(record)

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
        except Stopped:
            return self.stats
        boot = self.spec.kafka.bootstrap_servers
        dlq: Any = None
        consumer: Any = None
        try:
            dlq = self._until_ready("kafka", lambda: kafka_conn.producer(boot))
            consumer, listener = self._until_ready("kafka", lambda: self._subscribe(writer))
            idle_since = time.monotonic()
            while not self._stop.is_set():
                self.schema.retry_stopped(consumer)
                try:
                    records = self._poll(consumer)
                    self._commit_owed(consumer, listener)
                except StuckConsumer as exc:
                    log.error("%s; replacing the Kafka consumer", exc)
                    close_quietly(consumer)
                    consumer, listener = self._until_ready(
                        "kafka", lambda: self._subscribe(writer))
                    continue
                except TransientError as exc:
                    self._outage.wait("kafka", exc)
                    continue
                if not records:
                    self.snapshots.follow(consumer, writer)
                    if idle_exit_seconds is not None and \
                            time.monotonic() - idle_since > idle_exit_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                try:
                    batch = self._process(records, writer, dlq)
                except TransientError as exc:
                    # target or broker away: rewind to the batch start, wait, try again
                    for tp, first in first_offsets(records).items():
                        consumer.seek(tp, first)
                    self._outage.wait(dependency_of(exc), exc)
                    continue
                except TableStopped as exc:
                    # the table waits before this batch; the other tables apply it again
                    for tp, first in first_offsets(records).items():
                        consumer.seek(tp, first)
                    self.schema.hold(consumer, exc)
                    continue
                self._outage.ok()
                if batch.offsets:
                    self._commit(consumer, batch.offsets, listener)
                self.snapshots.follow(consumer, writer, batch.scanned)
                for tp, (offset, stopped) in batch.held.items():
                    log.info("applier %s: %s waits at %s[%d]@%d", self.mid, stopped.table,
                             tp.topic, tp.partition, offset)
                    consumer.seek(tp, offset)
                    self.schema.hold(consumer, stopped)
                if on_batch:
                    on_batch(batch)
        except Stopped:
            pass
        finally:
            for closer in (consumer, dlq, self._source):
                if closer is not None:
                    close_quietly(closer)
            writer.close()
        return self.stats

    def source_conn(self) -> Any:
        """The applier's one source connection (autocommit, text forms), opened on first use."""
        if self._source is None or self._source.closed or self._source.broken:
            self._source = pg.connect_endpoint(self.spec.source, "source", autocommit=True,
                                               application="migwatch-applier")
            self._source.execute(pg.SOURCE_SESSION)  # text forms: UTC, ISO, hex
        return self._source

    def _subscribe(self, writer: Writer) -> tuple[Any, SeekToStored]:
        consumer = kafka_conn.consumer(self.spec.kafka.bootstrap_servers,
                                       names.consumer_group(self.mid),
                                       max_poll_records=self.batch_size,
                                       **FETCH_SIZES,
                                       session_timeout_ms=10000, heartbeat_interval_ms=2000,
                                       # a table's topic appears with its first change: notice
                                       # it within seconds, not the 5-minute default
                                       metadata_max_age_ms=5000)
        listener = SeekToStored(consumer, writer)
        try:
            with kafka_conn.translated("subscribe"):
                consumer.subscribe(topics=[*self.topics, names.heartbeat_topic(self.mid),
                                           names.notification_topic(self.mid)],
                                   listener=listener)
        except MigwatchError:
            close_quietly(consumer)
            raise
        self._unstable_since = None
        return consumer, listener

    def _until_ready(self, dependency: str, make: Callable[[], Any]) -> Any:
        """`make()` once the dependency it needs answers; waits out TransientErrors."""
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                out = make()
            except TransientError as exc:
                self._outage.wait(dependency, exc)
                continue
            self._outage.ok()
            return out

    def _commit(self, consumer: Any, offsets: dict[TopicPartition, int],
                listener: SeekToStored | None = None) -> bool:
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

    def _commit_owed(self, consumer: Any, listener: SeekToStored) -> None:
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
            stacks = thread_stacks()
            log.error("applier %s: not a stable member of its consumer group for %.0f s; "
                      "threads:\n%s", self.mid, now - self._unstable_since, stacks)
            raise StuckConsumer(
                f"applier {self.mid}: not a stable member of consumer group "
                f"{names.consumer_group(self.mid)} for {now - self._unstable_since:.0f} s "
                f"(bound {bound:.0f} s): the Kafka client is stuck; restart the applier")

    def _process(self, records: list[Any], writer: Writer,
                 dlq: Any) -> Batch:
        """Apply one gathered batch. Records read twice (a rebalance rewound the consumer while
        polls were gathered) count once, in offset order; records the target already applied are
        dropped inside the apply transaction, so an older image never wins over a newer one."""
        start = time.perf_counter()
        records = in_offset_order(records)
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

    def _apply_records(self, records: list[Any], writer: Writer,
                       dlq: Any) -> Batch:
        batch = Batch()
        bad: list[tuple[Any, SkipEvent]] = []
        changes: list[tuple[Any, Change]] = []
        hb_topic = names.heartbeat_topic(self.mid)
        notices = names.notification_topic(self.mid)
        kept = []
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            if tp in batch.held:
                continue  # read again once its table continues
            if rec.topic == notices:
                scanned = self.snapshots.scanned(rec.value)
                if scanned is not None:
                    batch.scanned.add(scanned)
            elif rec.topic != hb_topic:
                try:
                    ch = self.decode(rec)
                except SkipEvent as exc:
                    bad.append((rec, exc))
                except TableStopped as exc:
                    # the table's events before this one land (the target still has their
                    # definition); its partition waits at this one (`Applier.run`)
                    batch.held[tp] = (rec.offset, exc)
                    continue
                else:
                    if ch is not None:
                        changes.append((rec, ch))
                        batch.add(ch)
            else:
                ts = heartbeat_ts(rec.value)
                if ts is not None:
                    batch.note_position(names.ALL_TABLES, ts, None)
            batch.note_offset(rec)
            kept.append(rec)
        records = kept
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
        except TableStopped:
            raise
        except PermanentError as exc:
            if writer.broken:  # the target went away mid-batch: nothing is wrong with the data
                raise TransientError(f"target: connection lost: {exc}") from exc
            try:
                # a value the target refuses may be a source schema change (a wider type) —
                # for events without their definition; the others' changes are followed
                # already, by the definition of the event that made each
                if any([self.schema.follow(t) for t in batch.tables
                        if t not in self.events.defined]):
                    writer.apply(batch)
                    return batch
            except TableStopped:
                raise
            except PermanentError:
                pass
            # one change poisons the batch: apply one by one, dead-letter the ones that fail
            held = batch.held
            batch = self._apply_singly(changes, records, writer, bad, dlq)
            batch.held = held
        return batch

    def _apply_singly(self, changes: list[tuple[Any, Change]], records: list[Any],
                      writer: Writer,
                      bad: list[tuple[Any, SkipEvent]], dlq: Any) -> Batch:
        writer.abandon()
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
                             headers=dlq_headers(rec, exc)) for rec, exc in bad]
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
