"""The Debezium connector's configuration for a migration: which tables it captures (as regular
expressions Debezium matches), its heartbeat and signal tables, and the source password — never
in the configuration itself, but in a file Kafka Connect's FileConfigProvider reads
(`secret_file`), or a reference for a remote Connect (`connect.password_reference`).

Split from `capture.py` (which creates, checks and removes the connector) so each stays short.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from psycopg import sql

from migwatch import names
from migwatch.config import MigrationSpec, StackSettings, split_qualified
from migwatch.connectors.connect import redact
from migwatch.errors import ConfigError

POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
HEARTBEAT_WRITER = "debezium"


def heartbeat_table(spec: MigrationSpec) -> tuple[str, str]:
    """(schema, table) of the heartbeat table, the same name on source and target."""
    text = spec.monitor.heartbeat_table
    try:
        return split_qualified(text)  # the spec's form: a part with a dot or quote quoted
    except ValueError:
        parts = text.split(".")  # unquoted, as before: `Ops.be"at`
        if len(parts) == 2 and all(parts):
            return parts[0], parts[1]
    raise ConfigError(f"{text!r} must be 'table' or 'schema.table'",
                      field="monitor.heartbeat_table")


def _java_literal(text: str) -> str:
    """`text` as a regex matching only itself, in Java syntax, safe in Debezium's comma list."""
    # Debezium splits the list on commas (a `\,` stays one) and trims each entry, so a comma is
    # escaped and a space written as \x20; everything else re.escape quotes is valid Java too.
    return re.escape(text).replace(",", "\\,").replace("\\ ", "\\x20")


def table_regex(schema: str, table: str) -> str:
    """One `table.include.list` entry matching exactly `schema.table` — any name PostgreSQL
    accepts (dots, commas, quotes, spaces, regex metacharacters, any case, non-ASCII).

    Debezium matches the entries case-insensitively against `schema.table`, so
    `public.ProductReviews` would also catch a `public.productreviews`; `(?-i:…)` makes the entry
    match its own table only, and keeps the name's own characters away from the entry's ends.
    """
    return f"(?-i:{_java_literal(schema)}\\.{_java_literal(table)})"


def captured_tables(spec: MigrationSpec) -> list[tuple[str, str]]:
    """(schema, table) of everything the connector captures: the spec's tables, then the
    heartbeat table (last, once)."""
    tables = [(t.schema_name, t.name) for t in spec.tables]
    beat = heartbeat_table(spec)
    if beat not in tables:
        tables.append(beat)
    return tables


def include_list(spec: MigrationSpec) -> str:
    """`table.include.list`: the spec's tables and the heartbeat table, one exact regex each."""
    return ",".join(table_regex(s, t) for s, t in captured_tables(spec))


def signal_collection(spec: MigrationSpec, migration_id: str) -> str:
    """`signal.data.collection`: the migration's signal table, `schema.table` (beside the
    heartbeat table)."""
    schema, _ = heartbeat_table(spec)
    return f"{schema}.{names.signal_table(migration_id)}"


def _by_copy(spec: MigrationSpec) -> bool:
    from migwatch.load.run import by_copy

    return by_copy(spec)


def heartbeat_query(spec: MigrationSpec, migration_id: str) -> str:
    """The upsert Debezium runs on the source at every heartbeat, so this migration's row moves
    (and the slot advances) even when no included table changes."""
    schema, table = heartbeat_table(spec)
    query = sql.SQL(
        "INSERT INTO {t} (migration_id, beat_at, writer) VALUES ({mid}, now(), {writer}) "
        "ON CONFLICT (migration_id) DO UPDATE SET beat_at = EXCLUDED.beat_at, "
        "writer = EXCLUDED.writer"
    ).format(t=sql.Identifier(schema, table), mid=sql.Literal(migration_id),
             writer=sql.Literal(HEARTBEAT_WRITER))
    return query.as_string()


def connector_config(spec: MigrationSpec, migration_id: str) -> dict[str, str]:
    """The Debezium PostgreSQL connector config for this migration. It holds no password: the
    source's password is a config-provider reference (`password_reference`) that Connect
    resolves when it starts the task, so its REST API and config topic never hold it.

    Defaults are chosen so the applier can decode every value without the embedded schema
    (numeric as string, bytea as base64, truncates not skipped); `spec.connect.overrides` win.
    """
    src = spec.source
    config: dict[str, str] = {
        "connector.class": POSTGRES_CONNECTOR,
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": src.host,
        "database.port": str(src.port),
        "database.user": src.user or "",
        "database.dbname": src.database,
        "topic.prefix": names.topic_prefix(migration_id),
        "slot.name": names.slot_name(migration_id),
        "publication.name": names.publication_name(migration_id),
        "publication.autocreate.mode": "filtered",
        # a partitioned table's changes are published as its root's (one topic, the root's
        # name) instead of each partition's, which the include list would not match — Debezium
        # creates the publication WITH (publish_via_partition_root = true); no-op otherwise
        "publish.via.partition.root": "true",
        "table.include.list": include_list(spec),
        # loaded by COPY from the slot's exported snapshot (`migwatch.load`): Debezium only
        # streams, from the slot's consistent point
        "snapshot.mode": "no_data" if _by_copy(spec) else "initial",
        # a table added to a running migration is loaded by an incremental snapshot, asked for
        # with a row in the migration's signal table; its progress arrives as notifications
        "signal.enabled.channels": "source",
        "signal.data.collection": signal_collection(spec, migration_id),
        "notification.enabled.channels": "sink",
        "notification.sink.topic.name": names.notification_topic(migration_id),
        "heartbeat.interval.ms": str(spec.connect.heartbeat_interval_ms),
        # how long Debezium waits for more changes before handing a batch over (500 ms by
        # default): every change, and the cutover's fence, reaches Kafka sooner
        "poll.interval.ms": "100",
        "heartbeat.action.query": heartbeat_query(spec, migration_id),
        "skipped.operations": "none",
        "decimal.handling.mode": "string",
        # bytes (base64 text under JsonConverter): only this mode marks an unchanged TOASTed
        # bytea with the placeholder; base64 mode sends it as NULL, a value it never had
        "binary.handling.mode": "bytes",
        "interval.handling.mode": "string",
        "hstore.handling.mode": "json",
        "time.precision.mode": "adaptive_time_microseconds",
        "tombstones.on.delete": "true",
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "false",
        "value.converter": JSON_CONVERTER,
        # every event carries its row's definition as of the change: each column's source type,
        # length and scale (`event_schema`) — an applier behind schema changes reads each event
        # by the definition it was written under, not by the catalog as it is now
        "value.converter.schemas.enable": "true",
        "column.propagate.source.type": ".*",
        # a NULL stays NULL: JsonConverter otherwise writes a field's schema default in its
        # place (KIP-581) — and Debezium's default is its reading of the *current* catalog
        "value.converter.replace.null.with.default": "false",
        # the definitions make events ~10× larger, and repeat from event to event: compressed
        # by the producer, the topics hold about what schema-less events did (bench/envelope.py)
        "producer.override.compression.type": "zstd",
    }
    if src.password is not None:
        config["database.password"] = password_reference(spec, migration_id)
    config.update({str(k): str(v) for k, v in spec.connect.overrides.items()})
    return config


#: the key of the password in the connector's secret file
_PASSWORD_KEY = "database.password"


def secret_file(spec: MigrationSpec, migration_id: str) -> Path:
    """The connector's password file on the Connect host (in `connect.secrets_dir`)."""
    folder = spec.connect.secrets_dir or str(StackSettings().connect_secrets_dir)
    return Path(folder) / f"{names.connector_name(migration_id)}.properties"


def password_reference(spec: MigrationSpec, migration_id: str) -> str:
    """What the connector config holds instead of the password: the spec's own reference for a
    remote Connect, else `${file:<secret file>:database.password}` for Connect's
    FileConfigProvider."""
    if spec.connect.password_reference:
        return spec.connect.password_reference
    return f"${{file:{secret_file(spec, migration_id)}:{_PASSWORD_KEY}}}"


def write_secret_file(spec: MigrationSpec, migration_id: str) -> bool:
    """Write the source password where the connector's reference points (mode 0600, replaced
    atomically); nothing when the spec names its own reference or no password. True when the
    file's content changed (a new or rotated password: a running task must restart to read it)."""
    secret = spec.source.secret("source")
    if spec.connect.password_reference or secret is None:
        return False
    path = secret_file(spec, migration_id)
    text = f"{_PASSWORD_KEY}={properties_escape(secret.get_secret_value())}\n"
    try:
        if path.read_text(encoding="ascii") == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)
    os.replace(tmp, path)
    return True


def properties_escape(value: str) -> str:
    """`value` as a java.util.Properties value that reads back exactly: backslash escapes for
    the separators, comment marks and whitespace, \\uXXXX (UTF-16 units) beyond ASCII."""
    out = []
    for i, ch in enumerate(value):
        if ch == "\\":
            out.append("\\\\")
        elif ch in "=:#!" or (ch == " " and i == 0):
            out.append("\\" + ch)
        elif ch in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            units = ch.encode("utf-16-be")
            out.extend(f"\\u{units[j]:02x}{units[j + 1]:02x}" for j in range(0, len(units), 2))
    return "".join(out)


def redacted_config(spec: MigrationSpec, migration_id: str) -> dict[str, str]:
    """`connector_config` safe to log or show: secrets replaced by `********`."""
    return redact(connector_config(spec, migration_id))


