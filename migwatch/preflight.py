"""Pre-flight: everything the migrate stage needs, checked before it creates anything — the
source (logical WAL, privileges, free slots and senders, and table shapes logical decoding can
carry exactly: a key to apply updates by, logged, no large objects, partitions through their
root), the target engine (it answers; what it cannot hold, `Target.table_problems`), Kafka
Connect with the Debezium plugin, and Kafka. One PreflightError names every failure, each with
what to do instead."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from migwatch import names
from migwatch.capture import kafka_admin
from migwatch.config import MigrationSpec, TableSpec, qualified
from migwatch.connector_config import POSTGRES_CONNECTOR, heartbeat_table
from migwatch.connectors.connect import ConnectClient
from migwatch.connectors.postgres import (
    KEY_NONE,
    KEY_PRIMARY,
    TableInfo,
    connect_endpoint,
    describe_table,
    leaf_partitions,
    translated,
)
from migwatch.decoding import uncarried
from migwatch.errors import MigwatchError, PreflightError
from migwatch.targets import engine_for
from migwatch.targets.base import Target


def preflight(spec: MigrationSpec, migration_id: str) -> list[str]:
    """Check everything the migrate stage needs before it creates anything; returns the checks
    that passed, or raises one PreflightError naming every failure."""
    passed: list[str] = []
    failures: list[str] = []
    for check in (_check_source, _check_target, _check_connect, _check_kafka):
        ok, bad = check(spec, migration_id)
        passed += ok
        failures += bad
    if failures:
        raise PreflightError(failures)
    return passed


Checks = tuple[list[str], list[str]]


def _check_source(spec: MigrationSpec, migration_id: str) -> Checks:
    ok: list[str] = []
    bad: list[str] = []
    try:
        conn = connect_endpoint(spec.source, "source", autocommit=True)
    except MigwatchError as exc:
        return ok, [f"source unreachable: {exc}"]
    slot = names.slot_name(migration_id)
    with conn, translated(f"source ({spec.source.redacted()})"):
        ok.append("source reachable")
        wal_level = _scalar(conn, "SHOW wal_level")
        if wal_level == "logical":
            ok.append("wal_level=logical")
        else:
            bad.append(f"source: wal_level is {wal_level!r}, must be 'logical'")
        row = conn.execute("SELECT current_user, rolsuper, rolreplication FROM pg_roles "
                           "WHERE rolname = current_user").fetchone()
        if row and (row[1] or row[2]):
            ok.append("REPLICATION privilege")
        else:
            user = row[0] if row else spec.source.user
            bad.append(f"source: user {user!r} has neither REPLICATION nor superuser")
        max_slots = int(_scalar(conn, "SHOW max_replication_slots"))
        used, mine = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE slot_name = %s) FROM pg_replication_slots",
            [slot]).fetchone() or (0, 0)
        if mine or used < max_slots:
            ok.append("replication slot available")
        else:
            bad.append(f"source: no free replication slot ({used} of max_replication_slots="
                       f"{max_slots} in use)")
        max_senders = int(_scalar(conn, "SHOW max_wal_senders"))
        senders = int(_scalar(conn, "SELECT count(*) FROM pg_stat_replication"))
        if senders < max_senders:
            ok.append("WAL sender available")
        else:
            bad.append(f"source: no free WAL sender ({senders} of max_wal_senders="
                       f"{max_senders} in use)")
        bad += _database_problems(conn)
        for t in spec.tables:
            problems = _table_problems(conn, t, engine_for(spec))
            if problems:
                bad += [f"table {t.source}: {p}" for p in problems]
            else:
                ok.append(f"table {t.source} ok")
        if row and not row[1]:
            missing = _source_privilege_problems(conn, spec, migration_id, row[0])
            bad += missing
            if not missing:
                ok.append("source privileges")
    return ok, bad


def _source_privilege_problems(conn: Any, spec: MigrationSpec, migration_id: str,
                               user: str) -> list[str]:
    """What a user who is not a superuser lacks (docs/privileges.md): SELECT on each table (the
    snapshot and validation read it), and — for Debezium to put a table in the migration's
    publication — its ownership (directly or through a role it belongs to) unless the table is
    already published, and CREATE on the database while the publication does not exist; the
    heartbeat and signal tables need CREATE on their schema (or INSERT/UPDATE/DELETE when they
    exist already)."""
    problems: list[str] = []
    publication = names.publication_name(migration_id)
    published = {(r[0], r[1]) for r in conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
        [publication]).fetchall()}
    has_publication = bool(_scalar(conn, sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {})").format(
            sql.Literal(publication))))
    if not has_publication and not _scalar(
            conn, "SELECT has_database_privilege(current_database(), 'CREATE')"):
        problems.append(f"source: user {user!r} lacks CREATE on the database (Debezium creates "
                        f"the publication {publication!r})")
    for t in spec.tables:
        row = conn.execute(
            "SELECT has_table_privilege(c.oid, 'SELECT'), "
            "pg_has_role(current_user, c.relowner, 'USAGE'), c.relowner::regrole::text "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", [t.schema_name, t.name]).fetchone()
        if row is None:
            continue  # named by the table checks already
        can_select, owns, owner = row
        if not can_select:
            problems.append(f"table {t.source}: user {user!r} lacks SELECT on it")
        if not owns and (t.schema_name, t.name) not in published:
            problems.append(f"table {t.source}: user {user!r} is not its owner {owner} nor a "
                            "member of that role (PostgreSQL lets only the owner add a table "
                            "to a publication)")
    schema, _ = heartbeat_table(spec)
    for table in (heartbeat_table(spec)[1], names.signal_table(migration_id)):
        exists = _scalar(conn, sql.SQL("SELECT to_regclass({}) IS NOT NULL").format(
            sql.Literal(sql.Identifier(schema, table).as_string(conn))))
        if exists:
            ok = _scalar(conn, sql.SQL(
                "SELECT has_table_privilege({}, 'INSERT, UPDATE, DELETE, SELECT')").format(
                    sql.Literal(sql.Identifier(schema, table).as_string(conn))))
            what = f"INSERT, UPDATE, DELETE and SELECT on {schema}.{table}"
        else:
            ok = _scalar(conn, sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {s}) AND "
                "has_schema_privilege({s}, 'CREATE')").format(s=sql.Literal(schema)))
            what = f"CREATE on schema {schema!r} (for the table {table!r})"
        if not ok:
            problems.append(f"source: user {user!r} lacks {what}")
    return problems


def _database_problems(conn: Any) -> list[str]:
    """What stops the connector whatever the tables: Debezium (3.6) reads every type of the
    database when it starts, and fails on a domain over an enum (a NullPointerException in its
    type registry) — wherever the domain is used, even by no table of the spec."""
    rows = conn.execute(
        "SELECT format('%I.%I', n.nspname, t.typname) FROM pg_type t "
        "JOIN pg_type b ON b.oid = t.typbasetype JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE t.typtype = 'd' AND b.typtype = 'e' ORDER BY 1").fetchall()
    return [f"source: domain {r[0]} is over an enum, and Debezium's PostgreSQL connector fails to "
            "start on a database that holds one (it reads every type at start); use the enum "
            "itself, or a text domain with a CHECK, instead" for r in rows]


_IDENTITY = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX"}


def _table_problems(conn: Any, table: TableSpec, target: Target) -> list[str]:
    """Why logical decoding cannot carry this table exactly (nothing when it can): it is
    missing, a partition rather than its root, unlogged, holds large objects, or its updates
    and deletes would arrive without a key to apply them by; on a MongoDB target also what a
    document cannot hold (`Target.table_problems`). Each says what to do instead."""
    schema, name = table.schema_name, table.name
    info = describe_table(conn, schema, name)
    if info is None:
        return ["does not exist on the source"]
    ident = sql.Identifier(schema, name).as_string(conn)
    if info.partition_of is not None:
        root = qualified(*info.partition_of)
        return [f"is a partition of {root}: name the partitioned table {root} in the spec "
                "instead (the changes of all its partitions are captured through it)"]
    problems: list[str] = []
    if info.unlogged:
        problems.append(f"is UNLOGGED, and logical decoding does not carry its changes; "
                        f"make it logged first (ALTER TABLE {ident} SET LOGGED)")
    lobs = [c.name for c in info.columns if c.large_object]
    if lobs:
        problems.append(f"column(s) {', '.join(lobs)} hold large-object references (oid/lo): "
                        "logical decoding carries the reference number, never the large "
                        "object's data; move the data into a bytea column first")
    left_out = [f"{c.name} ({c.type})" for c in info.columns if uncarried(c.value_type)]
    if left_out:
        problems.append(f"column(s) {', '.join(left_out)}: Debezium's change events do not "
                        "carry values of this type exactly (bit varying loses its length, "
                        "interval arrays are left out); change the column's type, e.g. to text")
    if info.partitioned:
        for leaf in leaf_partitions(conn, schema, name):
            problems += [f"partition {leaf.qualified}: {p}" for p in
                         _partition_problems(info, leaf, sql.Identifier(
                             leaf.schema, leaf.name).as_string(conn))]
    else:
        problems += _key_problems(info, ident)
    problems += [p for p in target.table_problems(info, table) if not p.startswith(tuple(
        f"column {c.name!r} (" for c in info.columns if uncarried(c.value_type)))]
    return problems


def _key_problems(info: TableInfo, ident: str) -> list[str]:
    """A table's updates and deletes must carry its row key (TableInfo.primary_key)."""
    identity = _IDENTITY.get(info.replica_identity, info.replica_identity)
    if info.replica_identity == "n":
        return [f"has REPLICA IDENTITY NOTHING: once published, its updates and deletes fail on "
                f"the source; ALTER TABLE {ident} REPLICA IDENTITY DEFAULT (or FULL)"]
    if info.key_source == KEY_NONE and info.replica_identity != "f":
        gone = " whose index no longer exists" if info.replica_identity == "i" else ""
        return [f"has no primary key and REPLICA IDENTITY {identity}{gone}, so its updates and "
                f"deletes could not be applied by key; add a primary key, or ALTER TABLE "
                f"{ident} REPLICA IDENTITY FULL, or REPLICA IDENTITY USING INDEX <a unique "
                "index on NOT NULL columns>"]
    if (info.key_source == KEY_PRIMARY and info.replica_identity == "i"
            and info.identity_index != info.primary_key):
        return [f"has REPLICA IDENTITY USING INDEX ({', '.join(info.identity_index)}), not its "
                f"primary key ({', '.join(info.primary_key)}): deleted rows would arrive "
                f"without their primary key; ALTER TABLE {ident} REPLICA IDENTITY DEFAULT"]
    return []


def _partition_problems(root: TableInfo, leaf: TableInfo, ident: str) -> list[str]:
    """A partition's own persistence and replica identity decide what is published for it,
    under its root's name (publish_via_partition_root)."""
    problems = []
    if leaf.unlogged:
        problems.append(f"is UNLOGGED, and logical decoding does not carry its changes; "
                        f"ALTER TABLE {ident} SET LOGGED")
    if root.primary_key:
        problems += _key_problems(leaf, ident)
    elif leaf.replica_identity != "f":
        problems.append(
            f"REPLICA IDENTITY {_IDENTITY.get(leaf.replica_identity, leaf.replica_identity)} "
            f"and {root.qualified} has no primary key, so updates and deletes could not be "
            f"applied by key; add a primary key to {root.qualified}, or ALTER TABLE {ident} "
            "REPLICA IDENTITY FULL (on every partition)")
    return problems


def _check_target(spec: MigrationSpec, migration_id: str) -> Checks:
    target = engine_for(spec)
    try:
        target.ping()
    except MigwatchError as exc:
        return [], [f"target unreachable: {exc}"]
    missing = target.privilege_problems()
    return [f"target reachable ({spec.target.kind})"], missing


def _check_connect(spec: MigrationSpec, migration_id: str) -> Checks:
    try:
        with ConnectClient(spec.connect.url, timeout=10) as client:
            classes = {p.get("class") for p in client.plugins()}
    except MigwatchError as exc:
        return [], [f"Kafka Connect: {exc}"]
    if POSTGRES_CONNECTOR not in classes:
        return ["Kafka Connect reachable"], [
            f"Kafka Connect at {spec.connect.url}: the Debezium PostgreSQL plugin "
            f"({POSTGRES_CONNECTOR}) is not loaded"]
    return ["Kafka Connect reachable", "Debezium PostgreSQL plugin loaded"], []


def _check_kafka(spec: MigrationSpec, migration_id: str) -> Checks:
    try:
        kafka_admin(spec, bootstrap_timeout_ms=5000).close()
    except MigwatchError as exc:
        return [], [f"Kafka: {exc}"]
    return ["Kafka reachable"], []


def _scalar(conn: Any, query: str | sql.Composable) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None
