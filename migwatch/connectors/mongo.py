"""MongoDB: clients built in one place, with pymongo's errors translated.

Every client has bounded timeouts — server selection, connect and socket — so a server that stops
answering (FerretDB on SQLite can, see `FERRETDB_WRITE_CHUNK` in applier.py) fails the call
instead of hanging its caller; dates come back timezone-aware. An unreachable server or a
timeout is a TransientError; everything else pymongo raises is a PermanentError naming the
operation (never its values).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from migwatch.config import Endpoint, mongodb_uri
from migwatch.errors import MigwatchError, PermanentError, TransientError

#: default bounds (ms): choosing a server, opening a connection, waiting for one answer
SELECT_MS = 10_000
CONNECT_MS = 10_000
SOCKET_MS = 60_000


def client(endpoint: Endpoint, field: str = "target", *, appname: str = "migwatch",
           select_ms: int = SELECT_MS, socket_ms: int | None = SOCKET_MS,
           tz_aware: bool = True) -> Any:
    """A pymongo client for `endpoint` (its password from the spec's reference); `socket_ms`
    None only where one command may rightly run for long (a versioned migration)."""
    from pymongo import MongoClient

    with translated(f"{field} ({endpoint.redacted()})"):
        return MongoClient(mongodb_uri(endpoint, field), appname=appname, tz_aware=tz_aware,
                           serverSelectionTimeoutMS=select_ms, connectTimeoutMS=CONNECT_MS,
                           socketTimeoutMS=socket_ms)


@contextmanager
def database(endpoint: Endpoint, field: str = "target", **options: Any) -> Iterator[Any]:
    """The endpoint's database on a short-lived client, closed on exit."""
    c = client(endpoint, field, **options)
    try:
        yield c[endpoint.database]
    finally:
        c.close()


_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed


def translate(exc: BaseException, what: str, detail: bool = False) -> MigwatchError:
    """pymongo's exceptions → the migwatch tree: network trouble and timeouts are transient,
    the rest permanent. `detail` adds the first line of the server's message (for errors of
    user code, e.g. a migration's duplicate key); pymongo's messages carry no credentials."""
    from pymongo.errors import (
        AutoReconnect,
        ConnectionFailure,
        ExecutionTimeout,
        OperationFailure,
        ServerSelectionTimeoutError,
        WaitQueueTimeoutError,
        WTimeoutError,
    )

    if isinstance(exc, MigwatchError):
        return exc
    name = type(exc).__name__
    text = str(exc).strip()
    more = f": {text.splitlines()[0]}" if detail and text else ""
    if isinstance(exc, AutoReconnect | ConnectionFailure | ServerSelectionTimeoutError
                  | ExecutionTimeout | WTimeoutError | WaitQueueTimeoutError):
        return TransientError(f"{what}: unreachable ({name}){more}")
    if isinstance(exc, OperationFailure):
        if exc.code in _AUTH_CODES:
            return PermanentError(f"{what}: not authorised ({name}){more}")
        code = (exc.details or {}).get("codeName") or f"code {exc.code}"
        return PermanentError(f"{what}: {name} ({code}){more}")
    return PermanentError(f"{what}: {name}{more}")


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is network trouble or a timeout (worth a retry)."""
    return isinstance(translate(exc, ""), TransientError)


@contextmanager
def translated(what: str, detail: bool = False) -> Iterator[None]:
    """pymongo errors → TransientError (unreachable, timeouts) or PermanentError (the rest)."""
    from pymongo.errors import PyMongoError

    try:
        yield
    except PyMongoError as exc:
        raise translate(exc, what, detail) from exc
