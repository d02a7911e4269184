"""PostgreSQL: connections with driver errors translated once, and table introspection.

Every psycopg exception that leaves this module is a migwatch error: unreachable or timed out →
TransientError; auth, missing objects, bad SQL → PermanentError. SQL is built with
`psycopg.sql` so identifiers from the spec are always quoted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import errors as pgerr
from psycopg import sql

from migwatch.config import Endpoint, postgres_conninfo, qualified
from migwatch.errors import MigwatchError, PermanentError, StackError, TransientError

#: PostgreSQL's client programs (pg_dump, pg_restore): Debian's postgresql-client, which the
#: stack installs
PG_BIN = Path(os.environ.get("MIGWATCH_PG_BIN", "/usr/lib/postgresql/15/bin"))

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


def database_missing(exc: BaseException) -> bool:
    """`exc` (a migwatch error, or the psycopg error itself) says the database connected to does
    not exist — SQLSTATE 3D000, which at connect time libpq reports only as the server's text."""
    cause = exc.__cause__ if isinstance(exc, MigwatchError) else exc
    if getattr(cause, "sqlstate", None) == "3D000":
        return True
    return isinstance(cause, psycopg.OperationalError) and \
        re.search(r'database ".*" does not exist', str(cause)) is not None


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


#: a source session reading values as text for a target (the applier's reads of current rows,
#: validation against MongoDB): one text per value whatever the server's defaults
SOURCE_SESSION = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; "
                  "SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 1; "
                  "SET bytea_output = 'hex'")


#: both sides of a COPY in text format (the initial load): one text form of every value
#: whatever the servers' defaults
COPY_SESSION = ("SET DateStyle = 'ISO, MDY'", "SET IntervalStyle = 'postgres'",
                "SET TimeZone = 'UTC'", "SET extra_float_digits = 3", "SET bytea_output = 'hex'")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "numeric(12,2)", "timestamp with time zone"
    not_null: bool
    default: str | None = None
    #: (schema, name) of the column's collation when it is not its type's default, else None
    collation: tuple[str, str] | None = None
    #: the column holds large-object references: type `oid`, or a domain over it such as `lo`
    large_object: bool = False
    #: `format_type()` of the type under its domains ("" when the column's type is not a
    #: domain): what the value is made of — Debezium sends a domain's values as its base's
    base: str = ""
    #: the (base) type, or an array's element type, is an enum (its values are labels: text)
    enum: bool = False

    @property
    def value_type(self) -> str:
        """The type whose values the column holds: `base` for a domain, else `type`."""
        return self.base or self.type


#: where `TableInfo.primary_key` comes from
KEY_PRIMARY = "primary_key"  # the table's primary key
#: no primary key, REPLICA IDENTITY USING INDEX: the index's columns
KEY_REPLICA_IDENTITY_INDEX = "replica_identity_index"
KEY_NONE = "none"  # neither: `primary_key` is empty (REPLICA IDENTITY FULL makes the row its key)


@dataclass(frozen=True)
class TableInfo:
    """A table's shape as the source defines it; enough to create it on a target.

    `primary_key` is the row key every part of migwatch uses (applier, validator, target DDL):
    the primary key, or — on a table without one whose replica identity is a unique index on
    NOT NULL columns (REPLICA IDENTITY USING INDEX) — that index's columns; `key_source` says
    which. Logical decoding identifies rows by exactly that key, so it is the one to apply by.
    """

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    replica_identity: str = "d"  # d default, f full, n nothing, i index
    estimated_rows: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    key_source: str = KEY_PRIMARY
    #: columns of the replica identity index (REPLICA IDENTITY USING INDEX), in index order;
    #: empty when the identity is not an index or its index is gone
    identity_index: tuple[str, ...] = ()
    kind: str = "r"  # relkind: r table, p partitioned table
    unlogged: bool = False
    #: (schema, table) of the partition root when this table is a partition of another
    partition_of: tuple[str, str] | None = None

    @property
    def qualified(self) -> str:
        """`schema.table` in the spec's canonical form (a part with a dot or quote quoted)."""
        return qualified(self.schema, self.name)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def partitioned(self) -> bool:
        return self.kind == "p"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def table_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", [schema, name]
    ).fetchone()
    return row is not None


def describe_table(conn: psycopg.Connection, schema: str, name: str) -> TableInfo | None:
    """Columns (in order, with collations that differ from their type's), the row key (primary
    key, else the replica identity index — see TableInfo), replica identity, kind, persistence,
    partition root, row estimate; None when no such table (or partitioned table) exists."""
    head = conn.execute(
        "SELECT c.oid, c.relreplident, greatest(c.reltuples, 0)::bigint, c.relkind, "
        "c.relpersistence = 'u', CASE WHEN c.relispartition THEN "
        "(SELECT ARRAY[rn.nspname::text, r.relname::text] FROM pg_class r "
        "JOIN pg_namespace rn ON rn.oid = r.relnamespace "
        "WHERE r.oid = pg_partition_root(c.oid)) END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')", [schema, name]
    ).fetchone()
    if head is None:
        return None
    oid, replident, estimate, kind, unlogged, root = head
    cols = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid), "
        "CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation "
        "THEN ARRAY[cn.nspname::text, co.collname::text] END, "
        "a.atttypid = 'oid'::regtype OR (t.typtype = 'd' AND t.typbasetype = 'oid'::regtype), "
        # the type under its domains (an array's element too), and whether that is an enum
        "(WITH RECURSIVE d(oid, mod, arr) AS ("
        " SELECT CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN t.typelem "
        " ELSE a.atttypid END, a.atttypmod, t.typcategory = 'A' AND t.typelem <> 0 "
        " UNION ALL SELECT b.typbasetype, b.typtypmod, d.arr FROM d "
        " JOIN pg_type b ON b.oid = d.oid WHERE b.typtype = 'd') "
        " SELECT ARRAY[format_type(d.oid, d.mod) || CASE WHEN d.arr THEN '[]' ELSE '' END, "
        " (e.typtype = 'e')::text, (SELECT count(*) FROM d)::text] "
        " FROM d JOIN pg_type e ON e.oid = d.oid WHERE e.typtype <> 'd') "
        "FROM pg_attribute a "
        "JOIN pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        "LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        # a generated column is computed by each side itself: logical decoding does not carry
        # it, and no one writes it
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
        "ORDER BY a.attnum", [oid]
    ).fetchall()
    pk = _index_columns(conn, oid, "indisprimary")
    identity = _index_columns(conn, oid, "indisreplident") if replident == "i" else ()
    key, source = (pk, KEY_PRIMARY) if pk else \
        (identity, KEY_REPLICA_IDENTITY_INDEX) if identity else ((), KEY_NONE)
    return TableInfo(
        schema=schema, name=name,
        columns=tuple(Column(r[0], r[1], bool(r[2]), r[3],
                             (r[4][0], r[4][1]) if r[4] else None, bool(r[5]),
                             base=_base_type(r[1], r[6]), enum=bool(r[6]) and r[6][1] == "true")
                      for r in cols),
        primary_key=key,
        replica_identity=str(replident),
        estimated_rows=int(estimate),
        key_source=source,
        identity_index=identity,
        kind=str(kind),
        unlogged=bool(unlogged),
        partition_of=(root[0], root[1]) if root else None,
    )


def describe_type(conn: psycopg.Connection, type_oid: int, typmod: int,
                  ) -> tuple[str, str, bool]:
    """(format_type, base type under its domains or "", enum) of a type and modifier — what
    `describe_table` says of a column of that type."""
    row = conn.execute(
        "WITH RECURSIVE d(oid, mod, arr) AS ("
        " SELECT CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN t.typelem ELSE t.oid END,"
        " %s::int, t.typcategory = 'A' AND t.typelem <> 0 FROM pg_type t WHERE t.oid = %s"
        " UNION ALL SELECT b.typbasetype, b.typtypmod, d.arr FROM d"
        " JOIN pg_type b ON b.oid = d.oid WHERE b.typtype = 'd') "
        "SELECT format_type(%s, %s), ARRAY[format_type(d.oid, d.mod) || CASE WHEN d.arr "
        "THEN '[]' ELSE '' END, (e.typtype = 'e')::text, (SELECT count(*) FROM d)::text] "
        "FROM d JOIN pg_type e ON e.oid = d.oid WHERE e.typtype <> 'd'",
        [typmod, type_oid, type_oid, typmod]).fetchone()
    if row is None:
        raise PermanentError(f"source: no type with oid {type_oid}")
    return str(row[0]), _base_type(row[0], row[1]), row[1][1] == "true"


def _base_type(type_name: str, base: list[str] | None) -> str:
    """The base type's name when the column's type is a domain (or an array of one), else ""."""
    if not base or base[0] == type_name or int(base[2]) <= 1:
        return ""
    return base[0]


def _index_columns(conn: psycopg.Connection, oid: int, which: str) -> tuple[str, ...]:
    """Key columns, in index order, of the table's primary key (`indisprimary`) or replica
    identity index (`indisreplident`)."""
    rows = conn.execute(sql.SQL(
        "SELECT a.attname FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.{} AND k.ord <= i.indnkeyatts ORDER BY k.ord"
    ).format(sql.Identifier(which)), [oid]).fetchall()
    return tuple(r[0] for r in rows)


def leaf_partitions(conn: psycopg.Connection, schema: str, name: str) -> list[TableInfo]:
    """Every leaf partition of a partitioned table, at any depth, described; [] for a plain
    table. Their own persistence and replica identity decide what logical decoding carries."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_partition_tree(("
        "SELECT r.oid FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace "
        "WHERE rn.nspname = %s AND r.relname = %s)) p "
        "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE p.isleaf AND p.level > 0 ORDER BY 1, 2", [schema, name]).fetchall()
    leaves = [describe_table(conn, s, n) for s, n in rows]
    return [leaf for leaf in leaves if leaf is not None]


def create_table_sql(info: TableInfo, schema: str, name: str) -> sql.Composed:
    """CREATE TABLE IF NOT EXISTS for `info` under a (possibly different) name on the target.

    Columns keep their exact types and their collations (where not the type's default), and
    the row key becomes the primary key — the replica identity index's columns on a source
    table without one, so the applier's upserts have a conflict target. A partitioned source
    table becomes one plain table that holds the rows of all its partitions. Column defaults
    are not copied: the target only ever receives values the source produced.
    """
    parts = [
        sql.SQL("{} {}{}{}").format(
            sql.Identifier(c.name), sql.SQL(c.type),
            sql.SQL(" COLLATE {}").format(sql.Identifier(*c.collation)) if c.collation
            else sql.SQL(""),
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


def rows_by_position(table: sql.Identifier, columns: sql.Composable, pk: list[str],
                      types: dict[str, str], count: int) -> sql.Composed:
    """SELECT the ordinal of each of `count` keys (bound as parameters, cast to the key
    columns' types) with `columns` of its row in `table` — keys matched by position, since a
    decoded key and the driver's value of it need not print alike."""
    slots = [sql.Identifier(f"k{i}") for i in range(len(pk))]
    return sql.SQL("SELECT v.i{} FROM {} AS t JOIN (VALUES {}) AS v(i, {}) ON ({}) = ({})").format(
        columns, table,
        sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(n), sql.SQL(", ").join(
            sql.SQL("CAST(%s AS {})").format(sql.SQL(types[k])) for k in pk))
            for n in range(count)),
        sql.SQL(", ").join(slots),
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in pk),
        sql.SQL(", ").join(sql.SQL("v.{}").format(slot) for slot in slots))


def heartbeat_table_sql(schema: str, table: str) -> list[sql.Composed]:
    """The heartbeat table (source and PostgreSQL target alike): one row per migration."""
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (migration_id text PRIMARY KEY, "
                "beat_at timestamptz NOT NULL, writer text)").format(
            sql.Identifier(schema, table)),
    ]


def client_tool(name: str) -> str:
    """The path of one of PostgreSQL's client programs; a StackError saying how to get it."""
    path = PG_BIN / name
    if not path.exists():
        raise StackError("postgres-client", f"{name} not found at {path}: install Debian's "
                                            "postgresql-client (the stack does) or set "
                                            "MIGWATCH_PG_BIN")
    return str(path)


def dump_pattern(schema: str, name: str) -> str:
    """An exact pg_dump pattern for schema.name: each part in double quotes (inside which
    wildcards are literal), a double quote doubled."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


def tool_env(endpoint: Endpoint, field_name: str) -> dict[str, str]:
    """libpq environment for a client program: the password never on its command line."""
    env = {**os.environ, "PGHOST": endpoint.host, "PGPORT": str(endpoint.port),
           "PGDATABASE": endpoint.database, "PGCONNECT_TIMEOUT": "10"}
    if endpoint.user:
        env["PGUSER"] = endpoint.user
    secret = endpoint.secret(field_name)
    if secret is not None:
        env["PGPASSWORD"] = secret.get_secret_value()
    return env
