"""Drain exactly: every change committed before the freeze is on the target.

Once the application's sessions are gone (the freeze), migwatch writes a *fence*: the
migration's heartbeat row, in a transaction that first reads the WAL insert position L. Every
transaction the application committed has its commit record before L, and logical decoding
hands transactions over in commit order — so once Debezium's committed source offset in
Connect (`GET /connectors/<name>/offsets`) is at or past L, every one of them is in Kafka. Then
each table must be applied through L (`positions.AppliedThrough`) with no message of its topic
left unapplied on any partition: the target then holds every change made before the freeze.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from migwatch.config import MigrationSpec
from migwatch.connector_config import heartbeat_query
from migwatch.connectors import postgres as pg
from migwatch.errors import TransientError
from migwatch.positions import AppliedThrough, lsn_text

APPLICATION = "migwatch-cutover"


def write_fence(spec: MigrationSpec, migration_id: str) -> int:
    """Write the fence (the migration's heartbeat row) on the source; returns the WAL insert
    position read in its transaction before the write — past every commit before it."""
    with pg.connect_endpoint(spec.source, "source", application=APPLICATION) as conn, \
            pg.translated("source: fence"):
        row = conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
                           ).fetchone()
        assert row is not None
        conn.execute(heartbeat_query(spec, migration_id))
        conn.commit()
    return int(row[0])


@dataclass
class Drained:
    """How the drain went: the fence, the LSN Connect had handed over when it held, and how
    long it took."""

    fence: int
    handed_over: int | None = None
    seconds: float = 0.0
    tables: list[str] = field(default_factory=list)
    #: when Connect's stored offset first stood past the fence (seconds after the start)
    handed_seconds: float = 0.0

    def describe(self) -> str:
        return (f"every table applied through the fence {lsn_text(self.fence)}, no message "
                f"left unapplied, in {self.seconds:.2f}s (Connect's stored offset past it "
                f"after {self.handed_seconds:.2f}s, at {lsn_text(self.handed_over or 0)})")


def drain(spec: MigrationSpec, migration_id: str, fence: int, timeout: float,
          poll_seconds: float = 0.1, clock: Callable[[], float] = time.monotonic) -> Drained:
    """Wait until Connect's stored offset has passed `fence` and every table is applied
    through it with nothing unapplied; a `TransientError` saying what is missing after
    `timeout`."""
    started = clock()
    tables = [t.source for t in spec.tables]
    why = "not checked yet"
    handed_at: float | None = None
    with AppliedThrough(spec, migration_id, application=APPLICATION) as applied:
        while True:
            handed = applied.handed_over()
            if handed is None:
                why = "Connect has no stored offset for the connector"
            elif handed < fence:
                why = (f"Connect's stored offset is at {lsn_text(handed)}, not yet past the "
                       f"fence {lsn_text(fence)}")
            else:
                if handed_at is None:
                    handed_at = clock() - started
                why = _tables_behind(applied, tables)
                if not why:
                    return Drained(fence, handed, round(clock() - started, 3), tables,
                                   round(handed_at, 3))
            if clock() - started >= timeout:
                raise TransientError(f"drain: not done after {timeout:g}s: {why}")
            time.sleep(poll_seconds)


def _tables_behind(applied: AppliedThrough, tables: list[str]) -> str:
    """With Connect's offset past the fence (read first), a table whose topic has nothing
    unapplied on any partition is applied through the fence (`AppliedThrough.check`'s second
    way, for every table in one read of Kafka's offsets)."""
    behind = [f"{t}: {n} message(s) not applied yet"
              for t, n in applied.unapplied_each(tables).items() if n]
    return "; ".join(behind)
