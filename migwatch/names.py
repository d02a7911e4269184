"""Every name derived from a migration id, in one place (one name for one thing everywhere).

    connector        migwatch-<id>                     Kafka Connect connector
    topic prefix     migwatch.<id>                     Debezium `topic.prefix`
    table topic      migwatch.<id>.<schema>.<table>    change events of one source table
    heartbeat topic  __debezium-heartbeat.migwatch.<id>
    notifications    migwatch.<id>.notifications       Debezium's (incremental snapshot progress)
    signal table     migwatch_signal_<id, - as _>      on the source, beside the heartbeat table
    DLQ topic        migwatch.<id>.dlq                 (spec.kafka.dlq_topic overrides)
    consumer group   migwatch-<id>                     the CDC applier
    slot/publication migwatch_<id with - as _>         PostgreSQL replication slot and publication

On the target, the applier records how far it got in the same transaction as each batch:
PostgreSQL `migwatch.applied_position`, MongoDB collection `migwatch_applied_position`;
one row per (migration_id, table_name), plus `table_name = '*'` for the newest event of any table
(heartbeats included). `migwatch.positions` reads them.
"""

from __future__ import annotations

from migwatch.config import check_migration_id, pg_name, split_qualified

POSITION_SCHEMA = "migwatch"
POSITION_TABLE = "applied_position"
POSITION_COLLECTION = "migwatch_applied_position"
#: the applier's stored Kafka offsets on the target, next to its positions
OFFSETS_TABLE = "applied_offsets"
#: `application_name` / `appname` of validation's connections
VALIDATE_APPLICATION = "migwatch-validate"
OFFSETS_COLLECTION = "migwatch_applied_offsets"
#: the schema changes the applier saw and what it did (`schema_changes.SchemaChange`)
SCHEMA_CHANGES_TABLE = "schema_changes"
#: the COPY load's plan of key ranges per split table, and which are loaded
LOAD_RANGES_TABLE = "load_ranges"
LOAD_RANGES_COLLECTION = "migwatch_load_ranges"
SCHEMA_CHANGES_COLLECTION = "migwatch_schema_changes"
ALL_TABLES = "*"


def connector_name(migration_id: str) -> str:
    return f"migwatch-{check_migration_id(migration_id)}"


def topic_prefix(migration_id: str) -> str:
    return f"migwatch.{check_migration_id(migration_id)}"


def table_topic(migration_id: str, qualified_table: str) -> str:
    """Topic of `schema.table` as Debezium names it: case kept, every character outside Kafka's
    topic charset `[A-Za-z0-9._-]` replaced by `_` — one per UTF-16 code unit, as Java counts
    characters. Sanitised names can collide (`a b`, `a_b`): events are routed by their source
    schema and table, never by topic."""
    schema, table = split_qualified(qualified_table)
    return sanitized_topic(f"{topic_prefix(migration_id)}.{schema}.{table}")


def sanitized_topic(name: str) -> str:
    out = []
    for ch in name:
        if ch in "._-" or ("A" <= ch <= "Z") or ("a" <= ch <= "z") or ("0" <= ch <= "9"):
            out.append(ch)
        else:
            out.append("__" if ord(ch) > 0xFFFF else "_")
    return "".join(out)


def heartbeat_topic(migration_id: str) -> str:
    return f"__debezium-heartbeat.{topic_prefix(migration_id)}"


def notification_topic(migration_id: str) -> str:
    """Debezium's notifications (an incremental snapshot's progress) for the migration."""
    return f"{topic_prefix(migration_id)}.notifications"


def signal_table(migration_id: str) -> str:
    """The migration's Debezium signal table on the source (beside the heartbeat table): a row
    inserted there asks the connector for an incremental snapshot of a table added later."""
    return f"migwatch_signal_{pg_name(migration_id)}"


def consumer_group(migration_id: str) -> str:
    return f"migwatch-{check_migration_id(migration_id)}"


def slot_name(migration_id: str) -> str:
    return pg_name(migration_id)


def publication_name(migration_id: str) -> str:
    return pg_name(migration_id)
