"""Measuring every lag of one migration — the I/O half of monitoring (`lag.py` judges).

    consumer lag     end offset − the applier group's committed offset, per topic partition
                     (a partition the group never committed counts from its log start)
    event-time lag   now − source commit time of the newest applied event (`applied_position`
                     row '*', heartbeats included); per table DESIGN.md's rule
    end-to-end lag   now − `beat_at` of this migration's heartbeat row as seen on the target;
                     `HeartbeatWriter` keeps moving that row on the source while monitoring
    slot WAL         bytes the replication slot keeps on the source, and the slot's limit
                     (`max_slot_wal_keep_size`, or the spec's `slot_wal_limit_bytes` if lower)
    applier alive    the consumer group has active members; connector state from Kafka Connect
    stopped tables   tables whose latest schema-change record on the target says stopped
                     (`migwatch.schema_changes`), read in the same session as the positions

`poll` takes them all and returns a plain `lag.Sample`. A measure that fails is None and named in
`Sample.problems`, so one unreachable server does not hide the other measures.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import TopicPartition
from psycopg import sql

from migwatch import metrics, names, positions
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import kafka as kafka_conn
from migwatch.connectors import postgres as pg
from migwatch.consumer_lag import GroupLag, group_lag
from migwatch.errors import MigwatchError
from migwatch.lag import (
    CONSUMER_LAG,
    END_TO_END_LAG,
    EVENT_TIME_LAG,
    SLOT_WAL,
    Evaluation,
    PartitionLag,
    Sample,
    StoppedTable,
    TableLag,
    Verdict,
)
from migwatch.positions import Position
from migwatch.schema_changes import SchemaChange, stopped_tables
from migwatch.targets import engine_for

log = logging.getLogger("migwatch.measures")

HEARTBEAT_WRITER = "monitor"


# ------------------------------------------------------------------------------ Kafka
def oldest_unapplied(bootstrap: str, partitions: Iterable[PartitionLag],
                     timeout_ms: int = 3000) -> dict[str, float]:
    """Per topic with unapplied messages: the source commit time (epoch seconds) of the oldest
    one — the first record after the group's committed offset. The target holds every change
    before it, so `now − that` is how stale the target is for that topic."""
    pending = [p for p in partitions if p.lag > 0]
    if not pending:
        return {}
    at = {TopicPartition(p.topic, p.partition): (p.committed if p.committed is not None
                                                 else p.end_offset - p.lag) for p in pending}
    out: dict[str, float] = {}
    consumer = kafka_conn.consumer(bootstrap, None, client_id="migwatch-monitor",
                                   max_partition_fetch_bytes=64 << 10,
                                   request_timeout_ms=max(timeout_ms, 5000) + 1000)
    try:
        with kafka_conn.translated("read the oldest unapplied events"):
            consumer.assign(list(at))
            for tp, offset in at.items():
                consumer.seek(tp, offset)
            deadline = time.monotonic() + timeout_ms / 1000
            while at and time.monotonic() < deadline:
                polled = consumer.poll(timeout_ms=200)
                for tp, records in polled.items():
                    if tp in at and records:
                        ts = _source_ts_ms(records[0])
                        out[tp.topic] = min(out.get(tp.topic, ts / 1000), ts / 1000)
                        del at[tp]
                        consumer.pause(tp)
    finally:
        consumer.close(autocommit=False)
    return out


def _source_ts_ms(record: Any) -> float:
    """`source.ts_ms` of a Debezium event (schemas on or off), else the record's timestamp."""
    try:
        value = orjson.loads(record.value) if record.value else None
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        payload = value.get("payload", value) if "schema" in value else value
        if isinstance(payload, dict):
            ts = (payload.get("source") or {}).get("ts_ms") or payload.get("ts_ms")
            if isinstance(ts, int | float) and ts > 0:
                return float(ts)
    return float(record.timestamp)


def migration_topics(spec: MigrationSpec, migration_id: str) -> list[str]:
    """Every topic the applier consumes: the tables', the heartbeat table's, Debezium's beat."""
    return [*(names.table_topic(migration_id, t.source) for t in _tables(spec)),
            names.heartbeat_topic(migration_id)]


def _heartbeat_spec(spec: MigrationSpec) -> TableSpec:
    return TableSpec(source=spec.monitor.heartbeat_table)


def _tables(spec: MigrationSpec) -> list[TableSpec]:
    beat = _heartbeat_spec(spec)
    return [*spec.tables, *([] if any(t.source == beat.source for t in spec.tables) else [beat])]


# ------------------------------------------------------------------------------ target
def applied_positions(spec: MigrationSpec, migration_id: str) -> dict[str, Position]:
    """The applier's position rows on the target; empty before the applier wrote any."""
    return positions.read(spec, migration_id, application="migwatch-monitor")


def applied_state(spec: MigrationSpec, migration_id: str,
                  ) -> tuple[dict[str, Position], list[SchemaChange]]:
    """The applier's position rows and the migration's schema-change history (oldest first),
    read in one target session."""
    with engine_for(spec).session("migwatch-monitor") as session:
        return session.positions(migration_id), session.schema_changes(migration_id)


def stopped(records: Sequence[SchemaChange]) -> tuple[StoppedTable, ...]:
    """The tables the history says are stopped, each with what changed (and why it stopped)."""
    return tuple(StoppedTable(table, r.describe().removeprefix(f"{table}: "))
                 for table, r in stopped_tables(records).items())


def target_heartbeat(spec: MigrationSpec, migration_id: str) -> float | None:
    """`beat_at` (epoch seconds) of this migration's heartbeat row on the target, if there."""
    with engine_for(spec).session("migwatch-monitor", timeout_ms=5000) as session:
        return session.heartbeat_at(migration_id, _heartbeat_spec(spec))


# ------------------------------------------------------------------------------ source
@dataclass(frozen=True)
class SlotWal:
    """WAL a slot keeps (`retained_bytes`), its limit if any, and PostgreSQL's `wal_status`."""

    slot: str
    retained_bytes: int | None
    limit_bytes: int | None
    wal_status: str | None
    exists: bool = True


def slot_wal(spec: MigrationSpec, slot: str) -> SlotWal:
    """Retained WAL of `slot` on the source: pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)."""
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application="migwatch-monitor") as conn, \
            pg.translated(f"source: slot {slot}"):
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status "
            "FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
        keep = conn.execute(
            "SELECT CASE WHEN setting::bigint < 0 THEN NULL "
            "ELSE pg_size_bytes(setting || coalesce(unit, '')) END "
            "FROM pg_settings WHERE name = 'max_slot_wal_keep_size'").fetchone()
    limits = [v for v in (keep[0] if keep else None, spec.monitor.slot_wal_limit_bytes)
              if v is not None]
    limit = int(min(limits)) if limits else None
    if row is None:
        return SlotWal(slot, None, limit, None, exists=False)
    return SlotWal(slot, None if row[0] is None else int(row[0]), limit, row[1])


class HeartbeatWriter:
    """Moves this migration's heartbeat row on the source about every `interval` seconds.

    The row travels through Debezium and the applier like any change; the lag between writing it
    and seeing it on the target is the end-to-end lag. It writes with the source's clock, as
    Debezium's own heartbeat query does on the same row. `since` is the source time of the first
    write: a row seen on the target that is older than that predates this monitor.
    """

    def __init__(self, spec: MigrationSpec, migration_id: str, interval: float = 1.0) -> None:
        self.spec = spec
        self.migration_id = migration_id
        self.interval = interval
        self.since: float | None = None
        self.last: float | None = None
        self.writes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, conn: Any) -> float:
        beat = _heartbeat_spec(self.spec)
        row = conn.execute(sql.SQL(
            "INSERT INTO {} (migration_id, beat_at, writer) VALUES (%s, clock_timestamp(), %s) "
            "ON CONFLICT (migration_id) DO UPDATE SET beat_at = EXCLUDED.beat_at, "
            "writer = EXCLUDED.writer RETURNING beat_at").format(
            sql.Identifier(beat.schema_name, beat.name)),
            [self.migration_id, HEARTBEAT_WRITER]).fetchone()
        at = float(row[0].timestamp())
        if self.since is None:
            self.since = at
        self.last = at
        self.writes += 1
        return at

    def start(self) -> HeartbeatWriter:
        self._thread = threading.Thread(target=self._run, name="migwatch-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> HeartbeatWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = pg.connect_endpoint(self.spec.source, "source", autocommit=True,
                                               application="migwatch-heartbeat")
                with pg.translated("source: write heartbeat"):
                    self.beat(conn)
            except MigwatchError as exc:
                self.failures += 1
                log.warning("heartbeat write failed: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()


# ------------------------------------------------------------------------------ connector
def connector_state(spec: MigrationSpec, migration_id: str) -> str:
    """RUNNING (connector and every task), FAILED (either), MISSING, or Connect's state."""
    from migwatch.capture import connector_status

    status = connector_status(spec, migration_id)
    if status.failed:
        return "FAILED"
    if status.state == "ABSENT":
        return "MISSING"
    if status.state == "RUNNING" and not status.running:
        bad = next((t.state for t in status.tasks if t.state != "RUNNING"), "NO_TASKS")
        return f"TASK_{bad}"
    return status.state


# ------------------------------------------------------------------------------ the poll
def end_to_end_lag(seen: float | None, since: float | None, now: float) -> float | None:
    """now − the newest heartbeat seen on the target; a beat older than this monitor's first
    write (`since`) only proves the lag is at least now − since."""
    if since is not None and (seen is None or seen < since):
        return max(0.0, now - since)
    return None if seen is None else max(0.0, now - seen)


def table_lags(spec: MigrationSpec, migration_id: str, positions: Mapping[str, Position],
               lag: GroupLag | None, overall: float | None, now: float,
               oldest: Mapping[str, float] | None = None) -> tuple[TableLag, ...]:
    """Per table: the applied-position lag (`overall`, heartbeats keep it honest when idle) when
    its topic has nothing unapplied; else now − commit time of its oldest unapplied event, or,
    when that could not be read, of its last applied event (None if unknown)."""
    out = []
    for t in spec.tables:
        topic = names.table_topic(migration_id, t.source)
        pending = lag.of_topic(topic) if lag else None
        if pending == 0:
            seconds = overall
        elif oldest and topic in oldest:
            seconds = max(0.0, now - oldest[topic])
        else:
            pos = positions.get(t.source)
            seconds = None if pending is None or pos is None or pos.source_ts_ms is None \
                else max(0.0, now - pos.source_ts_ms / 1000)
        out.append(TableLag(t.source, t.target_name, seconds, pending or 0))
    return tuple(out)


def poll(spec: MigrationSpec, migration_id: str, heartbeat_since: float | None = None,
         clock: Callable[[], float] = time.time, strict: bool = False) -> Sample:
    """Take every measure once; failures become None values named in `problems`.

    `strict` raises the first failure instead: a watch that starts against a server it cannot
    reach (or read) should say so at once rather than poll until its timeout.
    """
    problems: list[str] = []

    def attempt(what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except MigwatchError as exc:
            if strict:
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            problems.append(f"{what}: {type(exc).__name__}: {first}")
            return None

    group = names.consumer_group(migration_id)
    lag: GroupLag | None = attempt("consumer lag", lambda: group_lag(
        spec.kafka.bootstrap_servers, group, migration_topics(spec, migration_id)))
    applied: tuple[dict[str, Position], list[SchemaChange]] | None = attempt(
        "applied position and schema changes", lambda: applied_state(spec, migration_id))
    positions, history = (None, None) if applied is None else applied
    beat_ok = True

    def heartbeat() -> float | None:
        nonlocal beat_ok
        beat_ok = False
        seen = target_heartbeat(spec, migration_id)
        beat_ok = True
        return seen

    seen = attempt("target heartbeat", heartbeat)
    slot: SlotWal | None = attempt("slot WAL", lambda: slot_wal(
        spec, names.slot_name(migration_id)))
    state = attempt("connector", lambda: connector_state(spec, migration_id))
    now = clock()

    every = (positions or {}).get(names.ALL_TABLES)
    applied_lag = None
    if every is not None and every.source_ts_ms is not None:
        applied_lag = max(0.0, now - every.source_ts_ms / 1000)
    oldest: dict[str, float] | None = None
    if lag is not None and lag.total > 0:
        oldest = attempt("oldest unapplied event", lambda: oldest_unapplied(
            spec.kafka.bootstrap_servers, lag.partitions))
    # the target is as fresh as its oldest missing change: with events waiting, the newest
    # applied one (a heartbeat, say) would under-read a backlog in another topic
    event_lag = applied_lag
    if oldest:
        event_lag = max(applied_lag or 0.0, now - min(oldest.values()))
    e2e = end_to_end_lag(seen, heartbeat_since, now) if beat_ok else None
    if slot is not None and not slot.exists:
        problems.append(f"slot WAL: slot {slot.slot} does not exist")
    elif slot is not None and slot.wal_status == "lost":
        problems.append(f"slot WAL: slot {slot.slot} lost WAL it needed (wal_status lost)")
    return Sample(
        at=now,
        values={CONSUMER_LAG: None if lag is None else float(lag.total),
                EVENT_TIME_LAG: event_lag, END_TO_END_LAG: e2e,
                SLOT_WAL: None if slot is None or slot.retained_bytes is None
                else float(slot.retained_bytes)},
        committed_offsets=None if lag is None else lag.committed_total,
        dlq_messages=None if every is None else every.dlq_events,
        applied_events=None if every is None else every.events,
        applier_alive=None if lag is None else lag.active_members > 0,
        connector_state=state,
        slot_limit_bytes=None if slot is None else slot.limit_bytes,
        partitions=() if lag is None else lag.partitions,
        tables=() if positions is None else table_lags(spec, migration_id, positions, lag,
                                                       applied_lag, now, oldest),
        stopped_tables=() if history is None else stopped(history),
        problems=tuple(problems),
    )


# ------------------------------------------------------------------------------ metrics
@dataclass
class MetricsExporter:
    """Sets the lag gauges from each sample; an unknown value removes its series (no stale
    number is served as if it were current)."""

    migration_id: str
    slot: str
    _partitions: set[tuple[str, str]] = field(default_factory=set)
    _tables: set[tuple[str, str]] = field(default_factory=set)

    def export(self, sample: Sample, evaluation: Evaluation | None = None) -> None:
        mid = self.migration_id
        seen_parts = set()
        for p in sample.partitions:
            key = (p.topic, str(p.partition))
            metrics.CDC_CONSUMER_LAG.labels(mid, *key).set(p.lag)
            seen_parts.add(key)
        for key in self._partitions - seen_parts:
            _remove(metrics.CDC_CONSUMER_LAG, mid, *key)
        self._partitions = seen_parts
        seen_tables = set()
        for t in sample.tables:
            key = (t.source_table, t.target_table)
            _set(metrics.CDC_REPLICATION_LAG, t.seconds, mid, *key)
            seen_tables.add(key)
        for key in self._tables - seen_tables:
            _remove(metrics.CDC_REPLICATION_LAG, mid, *key)
        self._tables = seen_tables
        _set(metrics.EVENT_TIME_LAG, sample.value(EVENT_TIME_LAG), mid)
        _set(metrics.END_TO_END_LAG, sample.value(END_TO_END_LAG), mid)
        _set(metrics.MIGRATION_DATA_LAG, sample.data_lag_seconds, mid)
        _set(metrics.SLOT_RETAINED_WAL, sample.value(SLOT_WAL), mid, self.slot)
        if evaluation is not None:
            metrics.CAUGHT_UP.labels(mid).set(1 if evaluation.caught_up else 0)
            for v in Verdict:
                metrics.LAG_STATUS.labels(mid, v.value).set(
                    1 if v is evaluation.verdict else 0)


def _set(gauge: Any, value: float | None, *labels: str) -> None:
    if value is None:
        _remove(gauge, *labels)
    else:
        gauge.labels(*labels).set(value)


def _remove(gauge: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
