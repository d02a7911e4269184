"""PostgreSQL: connections with driver errors translated once, and table introspection.

Every psycopg exception that leaves this module is a migwatch error: unreachable or timed out →
TransientError; auth, missing objects, bad SQL → PermanentError. SQL is built with
`psycopg.sql` so identifiers from the spec are always quoted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from migwatch.config import Endpoint, postgres_conninfo
from migwatch.errors import MigwatchError, PermanentError, TransientError

_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")  # connection, resources, shutdown, rollback


def translate(exc: BaseException, what: str) -> MigwatchError:
    """Map a psycopg exception to the migwatch tree; `what` says which server/operation."""
    if isinstance(exc, MigwatchError):
        return exc
    sqlstate = getattr(exc, "sqlstate", None) or ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, pgerr.InvalidPassword | pgerr.InvalidAuthorizationSpecification):
        return PermanentError(f"{what}: authentication failed: {message}")
    if isinstance(exc, pgerr.QueryCanceled):  # a statement timeout: the same query would again
        return PermanentError(f"{what}: {message}")
    if isinstance(exc, psycopg.OperationalError) and not sqlstate:
        # no SQLSTATE: the server could not be reached at all
        if "password authentication failed" in message:
            return PermanentError(f"{what}: authentication failed")
        if "does not exist" in message:
            return PermanentError(f"{what}: {message}")
        return TransientError(f"{what}: unreachable: {message}")
    if sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
        return TransientError(f"{what}: {message}")
    return PermanentError(f"{what}: {message}")


def connect(conninfo: str, what: str, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection; failures become TransientError/PermanentError naming `what`."""
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.Error as exc:
        raise translate(exc, what) from exc


def connect_endpoint(endpoint: Endpoint, field: str, autocommit: bool = False,
                     application: str = "migwatch") -> psycopg.Connection:
    return connect(postgres_conninfo(endpoint, field, application), what=f"{field} "
                   f"({endpoint.redacted()})", autocommit=autocommit)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a block, translating psycopg errors into migwatch errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, what) from exc


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "numeric(12,2)", "timestamp with time zone"
    not_null: bool
    default: str | None = None


@dataclass(frozen=True)
class TableInfo:
    """A table's shape as the source defines it; enough to create it on a target."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    replica_identity: str = "d"  # d default, f full, n nothing, i index
    estimated_rows: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def table_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", [schema, name]
    ).fetchone()
    return row is not None


def describe_table(conn: psycopg.Connection, schema: str, name: str) -> TableInfo | None:
    """Columns (in order), primary key (in key order), replica identity, row estimate."""
    head = conn.execute(
        "SELECT c.oid, c.relreplident, greatest(c.reltuples, 0)::bigint "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", [schema, name]
    ).fetchone()
    if head is None:
        return None
    oid, replident, estimate = head
    cols = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_attribute a "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", [oid]
    ).fetchall()
    pk = conn.execute(
        "SELECT a.attname FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord", [oid]
    ).fetchall()
    return TableInfo(
        schema=schema, name=name,
        columns=tuple(Column(r[0], r[1], bool(r[2]), r[3]) for r in cols),
        primary_key=tuple(r[0] for r in pk),
        replica_identity=str(replident),
        estimated_rows=int(estimate),
    )


def create_table_sql(info: TableInfo, schema: str, name: str) -> sql.Composed:
    """CREATE TABLE IF NOT EXISTS for `info` under a (possibly different) name on the target.

    Column defaults are not copied: the target only ever receives values the source produced.
    """
    parts = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), sql.SQL(c.type),
            sql.SQL(" NOT NULL") if c.not_null else sql.SQL(""),
        )
        for c in info.columns
    ]
    if info.primary_key:
        parts.append(sql.SQL("PRIMARY KEY ({})").format(
            sql.SQL(", ").join(sql.Identifier(k) for k in info.primary_key)))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        sql.Identifier(schema, name), sql.SQL(", ").join(parts))


def current_lsn(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])
