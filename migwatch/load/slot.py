"""The publication and the replication slot with an exported snapshot, held open for the load.

The slot is created on a `replication=database` connection (`CREATE_REPLICATION_SLOT … LOGICAL
pgoutput EXPORT_SNAPSHOT`, simple query protocol, autocommit); its snapshot lives only while that
connection stays open and runs nothing else, so `ExportedSlot` keeps it idle until `close`.
Creating the slot waits for every transaction open on the source to finish: after
`slot_timeout_seconds` the creation is cancelled and the error names the transactions it waited
for.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from migwatch import names
from migwatch.config import MigrationSpec, postgres_conninfo
from migwatch.connector_config import captured_tables, heartbeat_table
from migwatch.connectors import postgres as pg
from migwatch.errors import TransientError

APPLICATION = "migwatch-load"


def ensure_publication(spec: MigrationSpec, migration_id: str) -> bool:
    """The migration's publication: the captured tables (the spec's and the heartbeat table)
    and Debezium's signal table, published through a partitioned table's root, as Debezium's
    own `filtered` mode makes it. One that exists is set to exactly those tables (a table added
    to the spec while a load was cut off must be published before it is copied again, or its
    changes between that copy and Debezium's own update would be lost). Returns whether it was
    created now."""
    name = sql.Identifier(names.publication_name(migration_id))
    schema, _ = heartbeat_table(spec)
    published = [*captured_tables(spec), (schema, names.signal_table(migration_id))]
    tables = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in published)
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn, \
            pg.translated("source: publication"):
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                        [names.publication_name(migration_id)]).fetchone():
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(name, tables))
            return False
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH "
                             "(publish_via_partition_root = true)").format(name, tables))
    return True


def slot_exists(spec: MigrationSpec, migration_id: str) -> bool:
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn, pg.translated("source: slot"):
        return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                            [names.slot_name(migration_id)]).fetchone() is not None


class ExportedSlot:
    """The slot, created with an exported snapshot that lives until `close`."""

    def __init__(self, spec: MigrationSpec, migration_id: str) -> None:
        self.spec = spec
        self.slot = names.slot_name(migration_id)
        self.conn: psycopg.Connection[Any] | None = None
        self.snapshot = ""
        self.consistent_lsn = ""

    def open(self) -> ExportedSlot:
        conninfo = postgres_conninfo(self.spec.source, "source", APPLICATION)
        with pg.translated("source: replication connection"):
            self.conn = psycopg.connect(conninfo, autocommit=True, replication="database")
        pid = self.conn.info.backend_pid
        started = time.time()
        done = threading.Event()
        blockers: list[str] = []
        timeout = self.spec.snapshot.slot_timeout_seconds
        watchdog = threading.Thread(target=self._cancel_after, daemon=True,
                                    args=(pid, started, timeout, done, blockers))
        watchdog.start()
        try:
            row = self.conn.execute(sql.SQL(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT").format(
                sql.Identifier(self.slot))).fetchone()
        except psycopg.Error as exc:
            self.close()
            if blockers:
                raise TransientError(
                    f"source: creating replication slot {self.slot} waited {timeout:g}s "
                    "(snapshot.slot_timeout_seconds) for transactions still open: "
                    + ", ".join(blockers) + " — let them finish (or end them) and run again"
                ) from exc
            raise pg.translate(exc, f"source: create replication slot {self.slot}") from exc
        finally:
            done.set()
        assert row is not None
        # slot_name, consistent_point, snapshot_name, output_plugin
        self.consistent_lsn, self.snapshot = str(row[1]), str(row[2])
        return self

    def _cancel_after(self, pid: int, started: float, timeout: float,
                      done: threading.Event, blockers: list[str]) -> None:
        """After `timeout`, name the transactions older than the slot's creation and cancel it."""
        if done.wait(timeout):
            return
        try:
            with pg.connect_endpoint(self.spec.source, "source", autocommit=True,
                                     application=APPLICATION) as conn:
                rows = conn.execute(
                    "SELECT pid, usename, coalesce(application_name, ''), "
                    "round(extract(epoch FROM now() - xact_start))::bigint FROM pg_stat_activity"
                    " WHERE xact_start < to_timestamp(%s) AND pid <> %s "
                    "AND backend_type = 'client backend' ORDER BY xact_start",
                    [started, pid]).fetchall()
                blockers.extend(f"pid {p} ({u}, {a or 'no application_name'}, open {s}s)"
                                for p, u, a, s in rows)
                if not blockers:
                    blockers.append("none found (they may have just ended)")
                conn.execute("SELECT pg_cancel_backend(%s)", [pid])
        except Exception:  # the creation goes on waiting; its own error says the rest
            return

    def close(self) -> None:
        """Release the exported snapshot (every COPY must have taken it by now)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
