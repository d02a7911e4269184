"""Change data capture on the source: source and target preparation (a fresh start refuses
target tables holding rows unless reset; what a target needs is its engine's, `migwatch.targets`),
the Debezium connector's lifecycle, and teardown (including the applier's stored positions on
the target). What is checked before any of it runs is `preflight.py`.

The connector streams every included table (plus the heartbeat table) into
`migwatch.<id>.<schema>.<table>` topics as JSON Debezium envelopes, which the CDC applier
consumes. Everything here is idempotent — a crashed run calls it again and resumes — because the
running state lives only in PostgreSQL (slot, publication), Kafka Connect and Kafka.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from migwatch import names
from migwatch.config import MigrationSpec
from migwatch.connector_config import (
    POSTGRES_CONNECTOR,
    captured_tables,
    connector_config,
    heartbeat_table,
    include_list,
    redacted_config,
    secret_file,
    table_regex,
    write_secret_file,
)
from migwatch.connectors import kafka as kafka_conn
from migwatch.connectors.connect import ConnectClient
from migwatch.connectors.postgres import (
    connect_endpoint,
    database_missing,
    describe_table,
    heartbeat_table_sql,
    translated,
)
from migwatch.errors import (
    ConfigError,
    ConnectorFailed,
    PermanentError,
    TransientError,
)
from migwatch.targets import engine_for

_POLL_SECONDS = 0.5

__all__ = [
    "ConnectorResult", "ConnectorStatus", "FreshTarget", "SchemaResult", "TaskStatus",
    "TeardownResult", "captured_tables", "clear_positions", "connector_config",
    "connector_status", "restart_failed", "ensure_connector", "ensure_fresh_target",
    "finish_target_schema",
    "heartbeat_table", "include_list", "prepare_source", "prepare_target_schema",
    "redacted_config", "table_regex", "teardown",
]


# ---------------------------------------------------------------------------- plain results
@dataclass(frozen=True)
class TaskStatus:
    id: int
    state: str
    worker_id: str | None = None
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorStatus:
    """What Kafka Connect says about this migration's connector; `ABSENT` when it has none."""

    name: str
    state: str  # RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING or ABSENT
    tasks: tuple[TaskStatus, ...] = ()
    trace: str | None = None  # the first FAILED trace (connector's, else a task's)

    @property
    def running(self) -> bool:
        return (self.state == "RUNNING" and bool(self.tasks)
                and all(t.state == "RUNNING" for t in self.tasks))

    @property
    def failed(self) -> bool:
        return self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks)


@dataclass(frozen=True)
class ConnectorResult:
    """What `ensure_connector` did: `action` is created, updated, unchanged, restarted, resumed."""

    name: str
    state: str
    action: str
    tasks: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class SchemaResult:
    """Target tables `prepare_target_schema` created and those that were already there."""

    created: tuple[str, ...] = ()
    present: tuple[str, ...] = ()


@dataclass(frozen=True)
class TeardownResult:
    """What `teardown` removed (False/empty: it was already gone)."""

    connector: bool
    slot: bool
    publication: bool
    consumer_group: bool
    topics: tuple[str, ...] = ()
    #: the applier's position and offset rows of this migration removed from the target
    positions: int = 0


@dataclass(frozen=True)
class FreshTarget:
    """What `ensure_fresh_target` found and did. `fresh`: neither connector nor replication slot
    exists for the migration id, so the connector about to be created snapshots everything."""

    fresh: bool
    non_empty: tuple[str, ...] = ()  # target tables that held rows
    emptied: tuple[str, ...] = ()  # target tables truncated (reset)
    positions: int = 0  # stale position and offset rows removed
    reset_ignored: bool = False  # reset asked for while resuming: nothing was emptied


# ---------------------------------------------------------------------------- source
def prepare_source(spec: MigrationSpec, migration_id: str) -> str:
    """Create the heartbeat table on the source if missing and seed this migration's row;
    returns the table's name. The row is seeded so the snapshot already carries it."""
    schema, table = heartbeat_table(spec)
    with connect_endpoint(spec.source, "source") as conn, translated("source: heartbeat table"):
        for stmt in heartbeat_table_sql(schema, table):
            conn.execute(stmt)
        conn.execute(sql.SQL(
            "INSERT INTO {} (migration_id, beat_at, writer) VALUES (%s, now(), 'migwatch') "
            "ON CONFLICT (migration_id) DO NOTHING").format(sql.Identifier(schema, table)),
            [migration_id])
        # Debezium's signal table, in the shape its documentation gives
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id varchar(42) PRIMARY KEY, type varchar(32) "
            "NOT NULL, data varchar(2048))").format(
            sql.Identifier(schema, names.signal_table(migration_id))))
        conn.commit()
    return f"{schema}.{table}"


@dataclass(frozen=True)
class TableChanges:
    """How the spec's tables differ from what the migration's publication captures: tables
    added to a running migration (loaded by an incremental snapshot) and tables taken out."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def table_changes(spec: MigrationSpec, migration_id: str) -> TableChanges:
    """Compare the spec's tables with the publication's (none before the first run)."""
    publication = names.publication_name(migration_id)
    with connect_endpoint(spec.source, "source", autocommit=True) as conn, \
            translated("source: read the publication's tables"):
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                        [publication]).fetchone() is None:
            return TableChanges()
        rows = conn.execute("SELECT schemaname, tablename FROM pg_publication_tables "
                            "WHERE pubname = %s", [publication]).fetchall()
        captured = {(str(a), str(b)) for a, b in rows}
        schema, _ = heartbeat_table(spec)
        captured -= {heartbeat_table(spec), (schema, names.signal_table(migration_id))}
        wanted = {(t.schema_name, t.name): t.source for t in spec.tables}
        added = [(k, v) for k, v in wanted.items() if k not in captured]
        keyless = [v for k, v in added if conn.execute(
            "SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisprimary",
            [sql.Identifier(*k).as_string(conn)]).fetchone() is None]
    if keyless:
        raise ConfigError(
            f"cannot add {', '.join(keyless)} to the running migration {migration_id}: "
            "Debezium's incremental snapshot reads a table in primary-key order, and it has "
            "no primary key; start a migration with it (a new migration id) or give it one",
            field="tables")
    unheld = [v for (schema_, table), v in added if not snapshot_name_ok(schema_, table)]
    if unheld:
        raise ConfigError(
            f"cannot add {', '.join(unheld)} to the running migration {migration_id}: "
            "Debezium's incremental snapshot keeps a table's name unquoted in its offsets, "
            "and a name with whitespace, a dot or a double quote does not read back (the "
            "connector's task fails); start a migration with it (a new migration id, whose "
            "initial snapshot takes any name) or rename it", field="tables")
    return TableChanges(
        added=tuple(sorted(v for _, v in added)),
        removed=tuple(sorted(f"{a}.{b}" for a, b in captured - wanted.keys())))


def snapshot_name_ok(schema: str, table: str) -> bool:
    """Whether Debezium's incremental snapshot can hold a table of this name (checked on the
    stack against Debezium's own table-id parser: whitespace fails, a dot splits the name)."""
    return not any(ch.isspace() or ch in '."' for ch in schema + table)


def debezium_table_id(schema: str, table: str) -> str:
    """A table as Debezium's `execute-snapshot` signal takes it: each part in double quotes.
    Debezium reads an entry as a regex first and, when it matches no table, parses it as a
    table id; a quoted entry never matches as a regex (table ids print without quotes), so it
    names exactly its table, whatever its case or characters (`snapshot_name_ok` says which
    names the snapshot can hold at all)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))


def request_snapshot(spec: MigrationSpec, migration_id: str, tables: Sequence[str]) -> str:
    """Ask the connector for an incremental snapshot of `tables` (spec names): one row in the
    migration's signal table. Returns the signal's id."""
    by_source = {t.source: t for t in spec.tables}
    collections = [debezium_table_id(by_source[t].schema_name, by_source[t].name)
                   for t in tables]
    signal_id = str(uuid.uuid4())
    schema, _ = heartbeat_table(spec)
    with connect_endpoint(spec.source, "source") as conn, \
            translated("source: signal an incremental snapshot"):
        conn.execute(sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(
            sql.Identifier(schema, names.signal_table(migration_id))),
            [signal_id, "execute-snapshot",
             json.dumps({"data-collections": collections, "type": "incremental"})])
        conn.commit()
    return signal_id


# ---------------------------------------------------------------------------- target data
def ensure_fresh_target(spec: MigrationSpec, migration_id: str,
                        reset: bool = False) -> FreshTarget:
    """Before the migrate stage loads a migration afresh, make sure nothing on the target can
    make it skip or mix events.

    A resume (the connector or the slot exists) is left alone — `reset` included, since its
    snapshot is not taken again. A fresh start (none exists: a first run, or a rerun after
    teardown) refuses target tables that hold rows (TargetNotEmpty, naming them) unless `reset`,
    which truncates the spec's target tables first; either way the migration id's stored
    positions and offsets go, as they point into topics that no longer hold those events.
    """
    if _capture_exists(spec, migration_id):
        return FreshTarget(fresh=False, reset_ignored=reset)
    done = engine_for(spec).make_fresh(migration_id, reset)
    return FreshTarget(fresh=True, non_empty=done.non_empty, emptied=done.emptied,
                       positions=done.positions)


def _capture_exists(spec: MigrationSpec, migration_id: str) -> bool:
    """The migration's connector or replication slot exists: a run to resume, not to start."""
    with ConnectClient(spec.connect.url) as client:
        if client.status(names.connector_name(migration_id)) is not None:
            return True
    with connect_endpoint(spec.source, "source", autocommit=True) as conn, \
            translated("source: look for the replication slot"):
        return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                            [names.slot_name(migration_id)]).fetchone() is not None


def clear_positions(spec: MigrationSpec, migration_id: str) -> int:
    """Remove the applier's stored positions and Kafka offsets of `migration_id` from the target
    (PostgreSQL `migwatch.applied_position`/`applied_offsets`, MongoDB `migwatch_applied_position`
    /`migwatch_applied_offsets`); returns the rows/documents removed. Left behind, they would make
    a later run with the same id seek past the start of its new topics and skip events."""
    target = engine_for(spec)
    try:
        session = target.session("migwatch-teardown")
    except PermanentError as exc:
        if database_missing(exc):
            return 0  # the target database is gone, and its positions with it
        raise
    with session:
        return session.clear_positions(migration_id)


# ---------------------------------------------------------------------------- target schema
def prepare_target_schema(spec: MigrationSpec) -> SchemaResult:
    """Create the target tables that are missing from the source's definitions (columns with
    their exact types, NOT NULL, primary key — secondary indexes may follow the load), plus the
    heartbeat table; report what was created and what was already present.

    A MongoDB target needs no DDL (empty result). When `spec.migrations` names a folder, its
    versioned migrations run after this step, on the tables it created (the migrate stage).
    """
    target = engine_for(spec)
    if not target.creates_tables:
        return SchemaResult()
    with connect_endpoint(spec.source, "source") as src, translated("source: describe tables"):
        infos = []
        for t in spec.tables:
            info = describe_table(src, t.schema_name, t.name)
            if info is None:
                raise PermanentError(f"table {t.source}: does not exist on the source")
            infos.append((t, info))
    created, present = target.prepare_schema(infos, heartbeat_table(spec))
    return SchemaResult(created=tuple(created), present=tuple(present))


def finish_target_schema(spec: MigrationSpec,
                         progress: Callable[[int, int, str], None] | None = None,
                         ) -> dict[str, Any]:
    """After the initial load: the target's indexes, unique and foreign-key constraints and
    triggers as the source has them, then fresh statistics (`Target.finish_schema`)."""
    return engine_for(spec).finish_schema(progress)


# ---------------------------------------------------------------------------- connector
def connector_status(spec: MigrationSpec, migration_id: str) -> ConnectorStatus:
    """The connector's and its tasks' states, with the first FAILED trace (ABSENT if none)."""
    name = names.connector_name(migration_id)
    with ConnectClient(spec.connect.url) as client:
        client.get_config(name)  # learns the stored secrets, so no trace can show them
        return _status(client, name)


def restart_failed(spec: MigrationSpec, migration_id: str) -> bool:
    """Ask Connect to restart the connector's FAILED instances only (connector and tasks; the
    running ones are left alone); False when the connector does not exist."""
    with ConnectClient(spec.connect.url) as client:
        return client.restart(names.connector_name(migration_id), include_tasks=True,
                              only_failed=True)


def _status(client: ConnectClient, name: str) -> ConnectorStatus:
    raw = client.status(name)
    if raw is None:
        return ConnectorStatus(name=name, state="ABSENT")
    conn = raw.get("connector") or {}
    tasks = tuple(
        TaskStatus(id=int(t.get("id", i)), state=str(t.get("state", "UNASSIGNED")),
                   worker_id=t.get("worker_id"), trace=t.get("trace"))
        for i, t in enumerate(raw.get("tasks") or [])
    )
    trace = conn.get("trace") if conn.get("state") == "FAILED" else None
    trace = trace or next((t.trace for t in tasks if t.state == "FAILED" and t.trace), None)
    return ConnectorStatus(name=name, state=str(conn.get("state", "UNASSIGNED")), tasks=tasks,
                           trace=trace)


def ensure_connector(spec: MigrationSpec, migration_id: str,
                     timeout: float | None = None) -> ConnectorResult:
    """Create or update the connector so it runs `connector_config`, then wait until connector
    and every task are RUNNING.

    Idempotent: when the stored config already equals the desired one nothing is written, so a
    second call leaves the running connector alone (a FAILED one is restarted once, a paused or
    stopped one resumed). A config Connect rejects, or a FAILED connector or task, raises
    ConnectorFailed with Connect's messages or the worker's trace; not RUNNING within `timeout`
    (default `spec.connect.ready_timeout_seconds`) raises TransientError.
    """
    name = names.connector_name(migration_id)
    desired = {"name": name, **connector_config(spec, migration_id)}
    deadline = time.monotonic() + (timeout or spec.connect.ready_timeout_seconds)
    start = time.monotonic()
    rotated = write_secret_file(spec, migration_id)
    with ConnectClient(spec.connect.url) as client:
        existing = client.get_config(name)
        if existing == desired:
            action = "unchanged"
            status = _status(client, name)
            if rotated and status.state != "ABSENT":
                client.restart(name, include_tasks=True, only_failed=False)
                action = "restarted"  # the task reads the new password when it starts
            elif status.failed:
                client.restart(name, include_tasks=True, only_failed=True)
                action = "restarted"
            elif status.state in ("PAUSED", "STOPPED"):
                client.resume(name)
                action = "resumed"
        else:
            errors = client.validate(POSTGRES_CONNECTOR, desired)
            if errors:
                raise ConnectorFailed(name, "configuration rejected by Kafka Connect:\n"
                                      + "\n".join(errors))
            action = "created" if client.put_config(name, desired) else "updated"
        status = _wait(client, name, deadline, lambda s: s.running)
    return ConnectorResult(name=name, state=status.state, action=action,
                           tasks=tuple(t.state for t in status.tasks),
                           seconds=round(time.monotonic() - start, 3))


def _wait(client: ConnectClient, name: str, deadline: float,
          done: Callable[[ConnectorStatus], bool], fail_on_failed: bool = True,
          ) -> ConnectorStatus:
    """Poll the connector's status until `done`; FAILED raises ConnectorFailed."""
    while True:
        status = _status(client, name)
        if fail_on_failed and status.failed:
            raise ConnectorFailed(name, status.trace or f"state {status.state}, tasks "
                                  f"{[t.state for t in status.tasks]}")
        if done(status):
            return status
        if time.monotonic() >= deadline:
            raise TransientError(f"connector {name!r} not ready in time: state {status.state}, "
                                 f"tasks {[t.state for t in status.tasks]}")
        time.sleep(_POLL_SECONDS)


# ---------------------------------------------------------------------------- teardown
def teardown(spec: MigrationSpec, migration_id: str, delete_topics: bool = False,
             timeout: float = 60) -> TeardownResult:
    """Remove what the migration holds: the connector (stopped first and its stored offsets
    reset, so a later run with the same id snapshots again), the replication slot (so WAL cannot
    pile up on the source), the publication, the applier's consumer group, and with
    `delete_topics` its topics (`migwatch.<id>.*` and the heartbeat topic; a DLQ topic the spec
    names explicitly is left alone), and last the applier's stored positions and offsets on the
    target (`clear_positions`: a later run with the same id starts from its new topics'
    beginning). Idempotent: what is already gone is skipped.

    The applier must be stopped first: a group that still has members raises TransientError.
    """
    name = names.connector_name(migration_id)
    deadline = time.monotonic() + timeout
    with ConnectClient(spec.connect.url) as client:
        had_connector = _remove_connector(client, name, deadline)
    if not spec.connect.password_reference:
        secret_file(spec, migration_id).unlink(missing_ok=True)
    slot, publication = _drop_slot_and_publication(spec, migration_id, deadline)
    group = _delete_consumer_group(spec, migration_id)
    topics = _delete_topics(spec, migration_id) if delete_topics else ()
    positions = clear_positions(spec, migration_id)
    return TeardownResult(connector=had_connector, slot=slot, publication=publication,
                          consumer_group=group, topics=topics, positions=positions)


def _remove_connector(client: ConnectClient, name: str, deadline: float) -> bool:
    if not client.stop(name):
        return False
    _wait(client, name, deadline, fail_on_failed=False,
          done=lambda s: s.state in ("STOPPED", "ABSENT") and not s.tasks)
    while True:  # the worker may still be shutting the tasks down: Connect answers 400 until then
        try:
            client.reset_offsets(name)
            break
        except ConfigError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_POLL_SECONDS)
    client.delete(name)
    return True


def _drop_slot_and_publication(spec: MigrationSpec, migration_id: str,
                               deadline: float) -> tuple[bool, bool]:
    slot = names.slot_name(migration_id)
    publication = names.publication_name(migration_id)
    with connect_endpoint(spec.source, "source", autocommit=True) as conn, \
            translated(f"source: drop slot {slot}"):
        while True:
            row = conn.execute("SELECT active, active_pid FROM pg_replication_slots "
                               "WHERE slot_name = %s", [slot]).fetchone()
            if row is None or not row[0]:
                break
            if time.monotonic() >= deadline:
                raise TransientError(f"replication slot {slot} is still in use by process "
                                     f"{row[1]}; stop whatever reads it and retry")
            time.sleep(_POLL_SECONDS)
        dropped_slot = row is not None
        if dropped_slot:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", [slot])
        had_publication = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                                       [publication]).fetchone() is not None
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
            sql.Identifier(publication)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(
            heartbeat_table(spec)[0], names.signal_table(migration_id))))
    return dropped_slot, had_publication


def kafka_admin(spec: MigrationSpec, bootstrap_timeout_ms: int = 15000) -> Any:
    from kafka import KafkaAdminClient
    from kafka import errors as kerr

    bootstrap = spec.kafka.bootstrap_servers
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="migwatch-capture",
                                request_timeout_ms=15000,
                                bootstrap_timeout_ms=bootstrap_timeout_ms)
    except kerr.KafkaError as exc:
        raise kafka_conn.translate(exc, f"Kafka at {bootstrap}") from exc


def _error_name(err: Any) -> str:
    if err is None:
        return "OK"
    if isinstance(err, str):
        return err
    return getattr(err, "__name__", None) or type(err).__name__


def _delete_consumer_group(spec: MigrationSpec, migration_id: str) -> bool:
    group = names.consumer_group(migration_id)
    admin = kafka_admin(spec)
    try:
        with kafka_conn.translated(f"delete consumer group {group}"):
            result = admin.delete_groups([group])
    finally:
        admin.close()
    pairs = result.items() if isinstance(result, dict) else result
    for _, err in pairs:
        code = _error_name(err)
        if code in ("OK", "NoError"):
            return True
        if code == "GroupIdNotFoundError":
            return False
        if code == "NonEmptyGroupError":
            raise TransientError(f"consumer group {group} still has members: stop the applier "
                                 "first")
        raise PermanentError(f"delete consumer group {group}: {code}")
    return False


def _delete_topics(spec: MigrationSpec, migration_id: str) -> tuple[str, ...]:
    prefix = names.topic_prefix(migration_id) + "."
    heartbeat = names.heartbeat_topic(migration_id)
    admin = kafka_admin(spec)
    try:
        with kafka_conn.translated(f"delete topics of {migration_id}"):
            mine = sorted(t for t in admin.list_topics() if t.startswith(prefix) or t == heartbeat)
            if mine:
                admin.delete_topics(mine, raise_errors=False)
    finally:
        admin.close()
    return tuple(mine)
