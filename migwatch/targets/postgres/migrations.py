"""PostgreSQL backend: `V<version>__<description>.sql` scripts, each in its own transaction.

History lives in `migwatch.schema_history`, the lock in a row of `migwatch.schema_lock` (owner,
expiry by the server's clock). A script and its history row commit together; a failing script
rolls back entirely and its failed row is written in a second transaction. Scripts run with the
session's search_path minus the `migwatch` schema, so unqualified names never land next to the
history. Scripts that cannot run inside a transaction (`CREATE INDEX CONCURRENTLY`, `VACUUM`)
fail with the server's message.
Lock calls use a second connection, so the lock can be renewed while a script runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from migwatch.config import Endpoint
from migwatch.connectors.postgres import connect_endpoint, translate, translated
from migwatch.errors import TransientError
from migwatch.migrations._backend import LockAttempt, LockInfo, Progress, ScriptFailed
from migwatch.migrations._model import HistoryRow, Kind, RepairPlan, Step

SCHEMA = "migwatch"
HISTORY_TABLE = "schema_history"
LOCK_TABLE = "schema_lock"
LOCK_NAME = "migrations"

_HISTORY = sql.Identifier(SCHEMA, HISTORY_TABLE)
_LOCK = sql.Identifier(SCHEMA, LOCK_TABLE)
_COLUMNS = ("version", "description", "script", "checksum", "applied_at", "duration_ms",
            "status", "applied_by", "in_transaction", "error_type")

_DDL = sql.SQL("""
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {history} (
    version text PRIMARY KEY,
    description text NOT NULL,
    script text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL,
    duration_ms bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('success', 'failed')),
    applied_by text NOT NULL,
    in_transaction boolean NOT NULL,
    error_type text
);
CREATE TABLE IF NOT EXISTS {lock} (
    name text PRIMARY KEY,
    owner text NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
""").format(schema=sql.Identifier(SCHEMA), history=_HISTORY, lock=_LOCK)

_UPSERT = sql.SQL(
    "INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT (version) DO UPDATE SET {sets}"
).format(
    t=_HISTORY,
    cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
    vals=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
    sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                            for c in _COLUMNS[1:]),
)


def _row_params(row: HistoryRow) -> list[Any]:
    return [row.version, row.description, row.script, row.checksum, row.applied_at,
            row.duration_ms, row.status, row.applied_by, row.in_transaction, row.error_type]


class PostgresBackend:
    """Versioned SQL migrations on one PostgreSQL database."""

    kind: Kind = "sql"
    counts_documents = False

    def __init__(self, connect: Callable[[], psycopg.Connection], where: str) -> None:
        self._connect = connect
        self._where = where
        self._conn = connect()
        self._lock_conn: psycopg.Connection | None = None
        self._lock_guard = threading.Lock()

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint) -> PostgresBackend:
        def connect() -> psycopg.Connection:
            return connect_endpoint(endpoint, "target", autocommit=True,
                                    application="migwatch-migrations")

        return cls(connect, endpoint.redacted())

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        for conn in (self._conn, self._lock_conn):
            if conn is not None:
                conn.close()

    # ------------------------------------------------------------------ history

    def _storage_exists(self, conn: psycopg.Connection, table: str) -> bool:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                           [f"{SCHEMA}.{table}"]).fetchone()
        return bool(row and row[0])

    def history(self) -> list[HistoryRow]:
        with translated(f"target {self._where}: read migration history"):
            if not self._storage_exists(self._conn, HISTORY_TABLE):
                return []
            rows = self._conn.execute(sql.SQL("SELECT {cols} FROM {t}").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), t=_HISTORY)).fetchall()
        return [HistoryRow(*r) for r in rows]

    def ensure_storage(self) -> None:
        with translated(f"target {self._where}: create migration history"):
            if self._storage_exists(self._conn, HISTORY_TABLE) and \
                    self._storage_exists(self._conn, LOCK_TABLE):
                return
            with self._conn.transaction():
                # two first runs at once would race on the catalog: serialise the DDL
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('migwatch.schema'))")
                self._conn.execute(_DDL)

    def record(self, row: HistoryRow) -> None:
        with translated(f"target {self._where}: write migration history"), \
                self._conn.transaction():
            self._conn.execute(_UPSERT, _row_params(row))

    def repair(self, plan: RepairPlan) -> None:
        with translated(f"target {self._where}: repair migration history"), \
                self._conn.transaction():
            for mig in plan.accept_checksums:
                self._conn.execute(sql.SQL(
                    "UPDATE {} SET checksum = %s, description = %s, script = %s "
                    "WHERE version = %s").format(_HISTORY),
                    [mig.checksum, mig.description, mig.script, str(mig.version)])
            for row in plan.clear_failed:
                self._conn.execute(sql.SQL(
                    "DELETE FROM {} WHERE version = %s AND status = 'failed'").format(_HISTORY),
                    [row.version])

    # ------------------------------------------------------------------ running a script

    def execute(self, step: Step, row_for: Callable[..., HistoryRow],
                progress: Progress) -> bool:
        mig = step.migration
        path = mig.path if step.direction == "up" else mig.undo_path
        assert path is not None, "plan_down refuses SQL steps without an undo script"
        script = path.read_bytes()  # bytes: sent as written, never formatted
        progress.begin(True)
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT set_config('search_path', %s, true)",
                                   [self._script_search_path()])
                self._conn.execute(script)
                if step.direction == "up":
                    self._conn.execute(_UPSERT, _row_params(row_for(True)))
                else:
                    self._conn.execute(sql.SQL("DELETE FROM {} WHERE version = %s").format(
                        _HISTORY), [str(mig.version)])
        except psycopg.Error as exc:
            progress.discard()
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ScriptFailed(type(exc).__name__, message,
                               transient=isinstance(translate(exc, path.name), TransientError),
                               in_transaction=True) from exc
        progress.commit()
        return True

    def _script_search_path(self) -> str:
        """The session's search_path without migwatch's own schema.

        With the default `"$user", public` and a user named like the schema (`migwatch`), an
        unqualified CREATE TABLE in a script would land next to the history; scripts see the
        rest of the path unchanged.
        """
        row = self._conn.execute("SELECT current_setting('search_path'), current_user").fetchone()
        assert row is not None
        path, user = str(row[0]), str(row[1])
        keep = []
        for part in (p.strip() for p in path.split(",")):
            name = part.strip('"')
            if name == SCHEMA or (name == "$user" and user == SCHEMA) or not name:
                continue
            keep.append(part)
        return ", ".join(keep) or "public"

    # ------------------------------------------------------------------ the lock

    def _locking(self) -> psycopg.Connection:
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = self._connect()
        return self._lock_conn

    def lock_holder(self) -> LockInfo | None:
        with translated(f"target {self._where}: read migrations lock"):
            if not self._storage_exists(self._conn, LOCK_TABLE):
                return None
            row = self._conn.execute(sql.SQL(
                "SELECT owner, acquired_at, expires_at FROM {} WHERE name = %s").format(_LOCK),
                [LOCK_NAME]).fetchone()
        return LockInfo(*row) if row else None

    def try_lock(self, owner: str, ttl_seconds: float) -> LockAttempt:
        with self._lock_guard, translated(f"target {self._where}: take migrations lock"):
            conn = self._locking()
            with conn.transaction():
                row = conn.execute(sql.SQL(
                    "SELECT owner, acquired_at, expires_at, expires_at < clock_timestamp() "
                    "FROM {} WHERE name = %s FOR UPDATE").format(_LOCK), [LOCK_NAME]).fetchone()
                if row is None:
                    inserted = conn.execute(sql.SQL(
                        "INSERT INTO {} (name, owner, acquired_at, expires_at) "
                        "VALUES (%s, %s, clock_timestamp(), "
                        "clock_timestamp() + make_interval(secs => %s)) "
                        "ON CONFLICT (name) DO NOTHING RETURNING owner").format(_LOCK),
                        [LOCK_NAME, owner, ttl_seconds]).fetchone()
                    return LockAttempt(inserted is not None)
                holder = LockInfo(row[0], row[1], row[2])
                if row[0] != owner and not row[3]:
                    return LockAttempt(False, holder=holder)
                conn.execute(sql.SQL(
                    "UPDATE {} SET owner = %s, acquired_at = clock_timestamp(), "
                    "expires_at = clock_timestamp() + make_interval(secs => %s) "
                    "WHERE name = %s").format(_LOCK), [owner, ttl_seconds, LOCK_NAME])
                return LockAttempt(True, previous=holder if row[0] != owner else None)

    def renew_lock(self, owner: str, ttl_seconds: float) -> bool:
        with self._lock_guard, translated(f"target {self._where}: renew migrations lock"):
            cur = self._locking().execute(sql.SQL(
                "UPDATE {} SET expires_at = clock_timestamp() + make_interval(secs => %s) "
                "WHERE name = %s AND owner = %s").format(_LOCK), [ttl_seconds, LOCK_NAME, owner])
            return cur.rowcount == 1

    def release_lock(self, owner: str) -> None:
        with self._lock_guard, translated(f"target {self._where}: release migrations lock"):
            self._locking().execute(sql.SQL("DELETE FROM {} WHERE name = %s AND owner = %s")
                                    .format(_LOCK), [LOCK_NAME, owner])
