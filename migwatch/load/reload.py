"""`migwatch reload`: a table, or the rows of it a condition selects, loaded again while CDC runs.

A copy taken beside a running stream is only consistent if the stream's events for those rows
are held while it lands — so the reload goes through the stream instead: Debezium's incremental
snapshot (watermarks around each chunk, the DBLog algorithm), asked for with the condition as
its `additional-conditions` filter. Its rows arrive in the table's topic in order with the
changes, and the applier upserts them; changes made meanwhile win.

A snapshot only reads rows that exist, so rows the target holds and the source does not (within
the condition) are deleted first — on a PostgreSQL target, where the condition reads the same;
the target's keys are read before the source's, so a row inserted meanwhile is never taken for
one (and the snapshot that follows reads every row the source holds anyway). The reload ends
when Debezium says the table was read to its end and the target has applied every event up to
then (`positions.AppliedThrough`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from kafka import TopicPartition
from psycopg import sql

from migwatch import names
from migwatch.capture import debezium_table_id, snapshot_name_ok
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connector_config import heartbeat_table
from migwatch.connectors import kafka
from migwatch.connectors import postgres as pg
from migwatch.errors import ConfigError, PermanentError, TransientError
from migwatch.following import IncrementalSnapshots
from migwatch.positions import AppliedThrough

APPLICATION = "migwatch-reload"


@dataclass(frozen=True)
class ReloadResult:
    table: str
    condition: str
    #: rows the source holds within the condition when the reload began
    source_rows: int
    #: target rows within the condition the source does not hold, deleted (None: not looked
    #: for — a MongoDB target)
    extras_deleted: int | None
    seconds: float
    #: the dead-lettered events whose rows were selected (None: not asked for)
    dead_letters: int | None = None

    def describe(self) -> str:
        if self.dead_letters == 0:
            return f"{self.table}: no dead-lettered event of it — nothing to reload"
        extras = ("extra rows not looked for on a MongoDB target"
                  if self.extras_deleted is None
                  else f"{self.extras_deleted} extra row(s) deleted")
        where = f" where {self.condition}" if self.condition else ""
        if self.dead_letters:
            where = f" ({self.dead_letters} key(s) of dead-lettered events)"
        return (f"{self.table}{where}: {self.source_rows:,} row(s) reloaded by Debezium's "
                f"incremental snapshot and applied; {extras}; {self.seconds:.1f}s")


def reload(spec: MigrationSpec, migration_id: str, table: str, where: str | None = None,
           timeout: float = 600, on_wait: Callable[[str], None] | None = None,
           dead_lettered: bool = False) -> ReloadResult:
    """Reload `table` (a spec name) — the rows `where` (a SQL condition on the source table)
    selects, the rows whose events were dead-lettered (`dead_lettered`), or all of them — on a
    running migration."""
    started = time.monotonic()
    spec_table = _spec_table(spec, table)
    letters = 0
    if dead_lettered:
        if where:
            raise ConfigError("--where and --dead-lettered select the rows each: give one",
                              field="--where")
        where, letters = dead_lettered_condition(spec, migration_id, spec_table)
        if not where:
            return ReloadResult(spec_table.source, "", 0, 0, 0.0, dead_letters=0)
    if not snapshot_name_ok(spec_table.schema_name, spec_table.name):
        raise ConfigError(f"table {spec_table.source}: Debezium's incremental snapshot cannot "
                          "hold a name with whitespace, a dot or a double quote",
                          field="--table")
    _require_streaming(spec, migration_id)
    condition = (where or "").strip()
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as src:
        info = pg.describe_table(src, spec_table.schema_name, spec_table.name)
        if info is None:
            raise PermanentError(f"source: table {spec_table.source} does not exist")
        if not info.primary_key:
            raise ConfigError(f"table {spec_table.source} has no key: its rows cannot be "
                              "reloaded by key (nor found on the target)", field="--table")
        source_rows = _count(src, spec_table, condition)
    extras = _delete_extras(spec, spec_table, info, condition)
    topic = names.notification_topic(migration_id)
    watcher = kafka.consumer(spec.kafka.bootstrap_servers, None, consumer_timeout_ms=1000)
    try:
        with kafka.translated("notifications"):
            parts = [TopicPartition(topic, p)
                     for p in watcher.partitions_for_topic(topic) or {0}]
            watcher.assign(parts)
            for tp, end in watcher.end_offsets(parts).items():
                watcher.seek(tp, end)
        _signal(spec, migration_id, spec_table, condition)
        if on_wait is not None:
            on_wait("incremental snapshot asked for; waiting for Debezium to read the table")
        _wait_scanned(watcher, migration_id, spec_table, started + timeout)
    finally:
        watcher.close()
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as src:
        row = src.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    lsn = int(row[0]) if row else 0
    if on_wait is not None:
        on_wait("Debezium read the table to its end; waiting for the target to apply it")
    with AppliedThrough(spec, migration_id, application=APPLICATION) as applied:
        left = max(1.0, started + timeout - time.monotonic())
        why, _ = applied.wait(spec_table.source, lsn, left, left)
    if why is not None:
        raise TransientError(f"reload of {spec_table.source}: not applied within "
                             f"{timeout:.0f}s: {why}")
    return ReloadResult(spec_table.source, condition, source_rows, extras,
                        round(time.monotonic() - started, 3),
                        dead_letters=letters if dead_lettered else None)


def _spec_table(spec: MigrationSpec, table: str) -> TableSpec:
    wanted = TableSpec(source=table).source
    for t in spec.tables:
        if t.source == wanted:
            return t
    raise ConfigError(f"table {table!r} is not one of the spec's tables: "
                      + ", ".join(t.source for t in spec.tables), field="--table")


def _require_streaming(spec: MigrationSpec, migration_id: str) -> None:
    from migwatch.load.run import streaming

    if not streaming(spec, migration_id):
        raise PermanentError(f"migration {migration_id} has no connector: a reload goes "
                             "through a running migration's stream (start it with migwatch run)")


def _where(condition: str) -> sql.Composable:
    """The user's own condition, as Debezium's filter takes it too: only ever run read-only."""
    return sql.SQL("({})").format(sql.SQL(condition)) if condition else sql.SQL("true")


def _count(conn: Any, table: TableSpec, condition: str) -> int:
    """The condition checked on the source, read-only: a clear error when it does not parse."""
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                sql.Identifier(table.schema_name, table.name), _where(condition))).fetchone()
    except psycopg.errors.Error as exc:
        raise ConfigError(f"--where {condition!r} on {table.source}: "
                          f"{(exc.diag.message_primary or str(exc)).strip()}",
                          field="--where") from None
    return int(row[0]) if row else 0


def _keys(conn: Any, schema: str, name: str, key: tuple[str, ...],
          condition: str) -> set[tuple[str, ...]]:
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
        return {tuple(r) for r in conn.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
            cols, sql.Identifier(schema, name), _where(condition)))}


def _delete_extras(spec: MigrationSpec, table: TableSpec, info: pg.TableInfo,
                   condition: str) -> int | None:
    if spec.target.kind != "postgres":
        return None
    schema, name = table.target_parts
    with pg.connect_endpoint(spec.target, "target", autocommit=True,
                             application=APPLICATION) as tgt, \
            pg.translated(f"target: rows of {table.target_name}"):
        try:
            held = _keys(tgt, schema, name, info.primary_key, condition)  # the target first
        except psycopg.errors.Error as exc:
            raise ConfigError(f"--where {condition!r} on the target's {table.target_name}: "
                              f"{(exc.diag.message_primary or str(exc)).strip()}",
                              field="--where") from None
        with pg.connect_endpoint(spec.source, "source", autocommit=True,
                                 application=APPLICATION) as src, \
                pg.translated(f"source: rows of {table.source}"):
            present = _keys(src, table.schema_name, table.name, info.primary_key, condition)
        extra = sorted(held - present)
        if not extra:
            return 0
        match = sql.SQL(" AND ").join(sql.SQL("{}::text = %s").format(sql.Identifier(k))
                                      for k in info.primary_key)
        with tgt.transaction(), tgt.cursor() as cur:
            cur.executemany(sql.SQL("DELETE FROM {} WHERE {}").format(
                sql.Identifier(schema, name), match), extra)
    return len(extra)


def _signal(spec: MigrationSpec, migration_id: str, table: TableSpec, condition: str) -> None:
    collection = debezium_table_id(table.schema_name, table.name)
    data: dict[str, Any] = {"data-collections": [collection], "type": "incremental"}
    if condition:  # Debezium matches the entry, as a regex, to the data-collection as given
        data["additional-conditions"] = [{"data-collection": java_regex_literal(collection),
                                          "filter": condition}]
    schema, _ = heartbeat_table(spec)
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn, \
            pg.translated("source: signal an incremental snapshot"):
        conn.execute(sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(
            sql.Identifier(schema, names.signal_table(migration_id))),
            [str(uuid.uuid4()), "execute-snapshot", json.dumps(data)])


#: key column types whose values Debezium's key carries as themselves (JSON numbers, strings,
#: booleans) and PostgreSQL reads back from a literal; others (times as epoch numbers, bytes as
#: base64...) are refused — select their rows with --where
_KEY_TYPES = ("smallint", "integer", "bigint", "text", "character varying", "character",
              "uuid", "numeric", "boolean", "citext")


def key_condition(key: tuple[str, ...], values: list[tuple[Any, ...]]) -> str:
    """`(k1, k2) IN ((v, v), …)` — identifiers quoted, values as literals."""
    cols = sql.SQL(", ").join(sql.Identifier(k) for k in key)
    rows = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(v) for v in row))
        for row in sorted(set(values), key=repr))
    return sql.SQL("({}) IN ({})").format(cols, rows).as_string(None)


def dead_lettered_condition(spec: MigrationSpec, migration_id: str,
                            table: TableSpec) -> tuple[str, int]:
    """The condition selecting the rows of `table` whose events are in the migration's DLQ
    topic ("" when none are), and how many such rows (keys) there are."""
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as src, \
            pg.translated(f"source: key of {table.source}"):
        info = pg.describe_table(src, table.schema_name, table.name)
    if info is None or not info.primary_key:
        raise ConfigError(f"table {table.source}: no key to find its dead-lettered rows by",
                          field="--table")
    types = {c.name: (c.base or c.type).split("(")[0] for c in info.columns}
    odd = [f"{k} ({types[k]})" for k in info.primary_key if types[k] not in _KEY_TYPES]
    if odd:
        raise ConfigError(f"table {table.source}: key column(s) {', '.join(odd)} do not read "
                          "back from Debezium's key as they are: select the rows with --where",
                          field="--dead-lettered")
    topic = names.table_topic(migration_id, table.source)
    keys: list[tuple[Any, ...]] = []
    for key, origin in _dead_letters(spec, migration_id):
        if origin != topic or not isinstance(key, dict):
            continue
        keys.append(tuple(key.get(k) for k in info.primary_key))
    return (key_condition(info.primary_key, keys), len(set(keys))) if keys else ("", 0)


def _dead_letters(spec: MigrationSpec, migration_id: str) -> list[tuple[Any, str]]:
    """(the event's key, the topic it came from) for every record of the DLQ topic."""
    topic = spec.dlq_topic(migration_id)
    reader = kafka.consumer(spec.kafka.bootstrap_servers, None)
    out: list[tuple[Any, str]] = []
    try:
        with kafka.translated("dead-letter topic"):
            found = reader.partitions_for_topic(topic)
            if not found:
                return []
            parts = [TopicPartition(topic, p) for p in found]
            reader.assign(parts)
            reader.seek_to_beginning(*parts)
            ends = reader.end_offsets(parts)
            while any(reader.position(tp) < end for tp, end in ends.items()):
                for records in reader.poll(timeout_ms=1000).values():
                    for rec in records:
                        origin = dict(rec.headers or []).get("migwatch.topic", b"").decode()
                        try:
                            key = json.loads(rec.key) if rec.key else None
                        except ValueError:
                            key = None
                        out.append((key, origin))
    finally:
        reader.close()
    return out


def java_regex_literal(text: str) -> str:
    """`text` as a Java regex that matches exactly it: every ASCII character but a letter or
    digit escaped (a backslash before any other ASCII character is that character)."""
    return "".join(f"\\{ch}" if ch.isascii() and not ch.isalnum() else ch for ch in text)


def _wait_scanned(watcher: Any, migration_id: str, table: TableSpec, deadline: float) -> None:
    notes = IncrementalSnapshots(migration_id, [table])
    while time.monotonic() < deadline:
        with kafka.translated("notifications"):
            polled = watcher.poll(timeout_ms=1000)
        for records in polled.values():
            for record in records:
                if notes.scanned(record.value) == table.source:
                    return
    raise TransientError(f"reload of {table.source}: Debezium did not say it read the table "
                         "to its end in time (is the connector RUNNING?)")
