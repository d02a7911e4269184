"""`migwatch resume-table`: a table the applier stopped at a source schema change its target
does not follow by itself (`schema_changes`) continues.

Either the user brings the target along (a versioned migration: the applier notices within
seconds and continues by itself), or they accept the source's definition: migwatch removes the
target's copy of every column the change made stale — a dropped column, or one whose type
changed in a way the target does not follow — and the applier, at its next check, follows the
source's definition from there: a column the source still has is added again and filled from
the source's current values (sound against the stream, as for any added column: the table's
held events re-apply on top). The acceptance is recorded in the migration's schema-change
history, with what was removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from migwatch.config import MigrationSpec, TableSpec
from migwatch.errors import PermanentError
from migwatch.schema_changes import (
    ACCEPTED,
    CHANGED,
    CONTINUED,
    DROPPED,
    WIDENED,
    SchemaChange,
    stopped_tables,
)
from migwatch.targets import engine_for

#: the application name of resume-table's connections
APPLICATION = "migwatch-resume"


class TableNotStopped(PermanentError):
    """`resume-table` was asked about a table the applier has not stopped."""

    def __init__(self, table: str, stopped: list[str]) -> None:
        self.table = table
        super().__init__(f"table {table} is not stopped by a schema change"
                         + (f" (stopped: {', '.join(stopped)})" if stopped
                            else " (no table is)"))


@dataclass(frozen=True)
class Resumption:
    """What `resume` found and did for one stopped table."""

    table: str
    stopped: SchemaChange
    #: the target's columns the change made stale: what accepting removes
    stale: tuple[str, ...]
    #: what was removed (empty unless accepted)
    removed: tuple[str, ...] = ()
    accepted: bool = False
    #: the applier continued the table (None: not waited for)
    continued: bool | None = None


def table_spec(spec: MigrationSpec, table: str) -> TableSpec:
    """The spec's table named `table` (`schema.table`, or a table in `public`)."""
    for t in spec.tables:
        if table in (t.source, t.name if t.schema_name == "public" else None):
            return t
    raise PermanentError(f"table {table!r} is not in the migration's spec "
                         f"(tables: {', '.join(t.source for t in spec.tables)})")


def stale_columns(stopped: SchemaChange) -> tuple[str, ...]:
    """The columns of a stop whose copy on the target cannot stay as it is."""
    return tuple(dict.fromkeys(c.column for c in stopped.changes
                               if c.kind in (DROPPED, CHANGED, WIDENED)))


def resume(spec: MigrationSpec, migration_id: str, table: str, accept: bool = False,
           wait_seconds: float = 0.0, clock: Callable[[], float] = time.monotonic,
           poll_seconds: float = 1.0) -> Resumption:
    """The stopped table's change and what accepting it does; with `accept`, do it and record
    it, then wait up to `wait_seconds` for the applier to continue the table."""
    t = table_spec(spec, table)
    engine = engine_for(spec)
    with engine.session(APPLICATION) as session:
        history = session.schema_changes(migration_id)
        stopped = stopped_tables(history)
        if t.source not in stopped:
            raise TableNotStopped(t.source, sorted(stopped))
        found = Resumption(t.source, stopped[t.source], stale_columns(stopped[t.source]))
        if not accept:
            return found
        removed = tuple(engine.forget_columns(t, found.stale))
        session.record_schema_change(migration_id, SchemaChange(
            time.time(), t.source, ACCEPTED, found.stopped.changes,
            f"removed from the target: {', '.join(removed)}" if removed
            else "nothing to remove on the target"))
        continued = None
        if wait_seconds > 0:
            seen = len(history)
            deadline = clock() + wait_seconds
            continued = False
            while clock() < deadline and not continued:
                time.sleep(poll_seconds)
                later = session.schema_changes(migration_id)[seen:]
                continued = any(r.table == t.source and r.outcome == CONTINUED for r in later)
    return Resumption(t.source, found.stopped, found.stale, removed, True, continued)
