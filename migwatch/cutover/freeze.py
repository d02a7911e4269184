"""The built-in freeze: writes on the source stop, with an undo until the switch.

`default_transaction_read_only` set on the source database makes every *new* session start
read-only; migwatch's own role (which Debezium uses too: its heartbeats and its task restarts
must keep working) and the spec's `exempt_roles` are exempt by a role-in-database setting, which
PostgreSQL prefers to the database's. Sessions already open keep their setting, so the
application's are then ended (`pg_terminate_backend`, waiting until each is gone) and reconnect
read-only. A session has no undo: once ended it is gone, so the report says how many were.

The setting is the application's default, not a lock: a session that says `BEGIN READ WRITE` or
`SET default_transaction_read_only = off` can still write. Pair it with a hook that stops the
application's writes where it connects (a proxy, a feature flag) when that matters.

What each setting was before is read first, and the undo puts exactly that back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from migwatch.config import MigrationSpec
from migwatch.connectors import postgres as pg

SETTING = "default_transaction_read_only"
APPLICATION = "migwatch-cutover"

_SETTINGS = """
SELECT coalesce(r.rolname, ''), s.setconfig
FROM pg_db_role_setting s
JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
LEFT JOIN pg_roles r ON r.oid = s.setrole
"""

_SESSIONS = """
SELECT pid, usename, coalesce(application_name, ''), coalesce(host(client_addr), 'local')
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
"""


@dataclass(frozen=True)
class Session:
    pid: int
    role: str
    application: str
    client: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.role}, {self.application or 'no application_name'}, " \
               f"{self.client})"


def exempt_roles(spec: MigrationSpec) -> list[str]:
    """The roles that keep writing through the freeze: migwatch's (and Debezium's, the same
    login) and the spec's `cutover.freeze.exempt_roles`."""
    own = [spec.source.user] if spec.source.user else []
    return list(dict.fromkeys([*own, *spec.cutover.freeze.exempt_roles]))


def _own(session: Session) -> bool:
    """migwatch's sessions name themselves `migwatch…`; Debezium's JDBC sessions carry its name
    or the driver's default."""
    app = session.application.lower()
    return app.startswith("migwatch") or "debezium" in app or app == "postgresql jdbc driver"


def sessions(conn: Any) -> list[Session]:
    return [Session(int(pid), str(role or ""), str(app), str(client))
            for pid, role, app, client in conn.execute(_SESSIONS).fetchall()]


def shared_role_sessions(conn: Any, exempt: Iterable[str]) -> list[Session]:
    """Sessions of an exempt role that are neither migwatch's nor Debezium's: an application
    sharing migwatch's role would keep writing through the freeze, so pre-flight refuses it."""
    roles = set(exempt)
    return [s for s in sessions(conn) if s.role in roles and not _own(s)]


def application_sessions(conn: Any, exempt: Iterable[str]) -> list[Session]:
    roles = set(exempt)
    return [s for s in sessions(conn) if s.role not in roles]


def _read_settings(conn: Any) -> dict[str, str | None]:
    """role ('' for the database itself) → its `default_transaction_read_only` here, or None."""
    found: dict[str, str | None] = {}
    for role, config in conn.execute(_SETTINGS).fetchall():
        for item in config or ():
            name, _, value = str(item).partition("=")
            if name == SETTING:
                found[str(role)] = value
    return found


@dataclass
class Frozen:
    """What `freeze` changed, so `thaw` can put it back: the database's and each exempt role's
    setting as they were (None: not set), and how many sessions were ended."""

    database: str
    before: dict[str, str | None] = field(default_factory=dict)
    terminated: list[str] = field(default_factory=list)
    thawed: bool = False


def _set(conn: Any, role: str, value: str | None, database: str) -> None:
    db = sql.Identifier(database)
    if role:
        target = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), db)
    else:
        target = sql.SQL("ALTER DATABASE {}").format(db)
    if value is None:
        conn.execute(sql.SQL("{} RESET {}").format(target, sql.Identifier(SETTING)))
    else:
        conn.execute(sql.SQL("{} SET {} = {}").format(target, sql.Identifier(SETTING),
                                                       sql.Literal(value)))


def freeze(spec: MigrationSpec, terminate: bool, terminate_timeout: float) -> Frozen:
    """New sessions read-only except the exempt roles'; then, when `terminate`, the open
    sessions of every other role ended and awaited. Returns what `thaw` undoes."""
    exempt = exempt_roles(spec)
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn, pg.translated("source: freeze"):
        database = str(conn.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        before = _read_settings(conn)
        frozen = Frozen(database, {r: before.get(r) for r in ["", *exempt]})
        with conn.transaction():
            for role in exempt:
                _set(conn, role, "off", database)
            _set(conn, "", "on", database)
        if terminate:
            try:
                frozen.terminated = _terminate(conn, exempt, terminate_timeout)
            except BaseException:
                thaw(spec, frozen)  # half a freeze is no freeze: put the settings back
                raise
    return frozen


def _terminate(conn: Any, exempt: Sequence[str], timeout: float) -> list[str]:
    """End every session of a non-exempt role in this database; wait (up to `timeout` each, as
    `pg_terminate_backend(pid, timeout)` does) until it is gone, so none commits after."""
    ended: list[str] = []
    for s in application_sessions(conn, exempt):
        row = conn.execute("SELECT pg_terminate_backend(%s, %s)",
                           (s.pid, int(timeout * 1000))).fetchone()
        if row and row[0]:
            ended.append(s.describe())
    left = [s for s in application_sessions(conn, exempt)
            if s.describe() in ended]
    if left:
        from migwatch.errors import PermanentError

        raise PermanentError("sessions still open after pg_terminate_backend: "
                             + ", ".join(s.describe() for s in left))
    return ended


def thaw(spec: MigrationSpec, frozen: Frozen) -> None:
    """Put every setting `freeze` changed back as it was (the source writable again)."""
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn, pg.translated("source: thaw"), \
            conn.transaction():
        for role, value in frozen.before.items():
            _set(conn, role, value, frozen.database)
    frozen.thawed = True


def read_only_setting(conn: Any) -> bool:
    """Whether the database's own setting makes new sessions read-only."""
    return (_read_settings(conn).get("") or "off").lower() in ("on", "true", "1", "yes")


def is_read_only(spec: MigrationSpec) -> bool:
    """Whether the source database's own setting makes new sessions read-only now."""
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application=APPLICATION) as conn, pg.translated("source: settings"):
        return read_only_setting(conn)
