"""What the load holds on the source, before and while it runs.

Before: the tables' size over an assumed copy rate gives the load's time; the source's WAL
rate, measured over a few seconds, times that time is the WAL the slot will hold by the end —
compared with `max_slot_wal_keep_size` (past it PostgreSQL invalidates the slot and the
migration must start again). Free disk is not visible through SQL: the estimate says how much
WAL the source's disk must take.

While: the exported snapshot holds back the source's xmin horizon (VACUUM cannot remove rows
dead since it began) and the slot holds WAL from its consistent point — both shown with the
load's progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from migwatch import names
from migwatch.config import MigrationSpec
from migwatch.connectors import postgres as pg

#: the slot must not come closer than this share of `max_slot_wal_keep_size`
KEEP_MARGIN = 0.8


def _mib(n: float) -> str:
    return f"{n / 1048576:,.1f} MiB"


@dataclass(frozen=True)
class LoadEstimate:
    table_bytes: int
    load_seconds: float
    wal_bytes_per_second: float
    #: `max_slot_wal_keep_size` in bytes; None when unlimited (-1)
    keep_bytes: int | None

    @property
    def wal_held(self) -> float:
        return self.wal_bytes_per_second * self.load_seconds

    def warnings(self) -> list[str]:
        if self.keep_bytes is not None and self.wal_held > KEEP_MARGIN * self.keep_bytes:
            return [f"the slot would hold ~{_mib(self.wal_held)} of WAL by the end of the load, "
                    f"past {KEEP_MARGIN:.0%} of max_slot_wal_keep_size ({_mib(self.keep_bytes)})"
                    ": PostgreSQL would invalidate it and the migration start again — raise "
                    "max_slot_wal_keep_size, load when the source writes less, or raise "
                    "snapshot.copy_workers"]
        return []

    def describe(self) -> str:
        keep = ("unlimited (the source's disk must take it)" if self.keep_bytes is None
                else _mib(self.keep_bytes))
        return (f"load estimate: {_mib(self.table_bytes)} of tables in ~{self.load_seconds:,.0f}s;"
                f" source WAL {_mib(self.wal_bytes_per_second)}/s → the slot holds "
                f"~{_mib(self.wal_held)} by the end; max_slot_wal_keep_size {keep}")


def estimate(spec: MigrationSpec, sample_seconds: float = 1.0) -> LoadEstimate:
    """Measure the WAL rate over `sample_seconds` and estimate the load's time from the tables'
    size at `snapshot.estimate_mib_per_second` per copy worker."""
    with pg.connect_endpoint(spec.source, "source", autocommit=True,
                             application="migwatch-load") as conn, \
            pg.translated("source: load estimate"):
        size = 0
        for t in spec.tables:
            row = conn.execute("SELECT coalesce(pg_table_size(to_regclass(%s)), 0)",
                               [sql.Identifier(t.schema_name, t.name).as_string(conn)]
                               ).fetchone()
            size += int(row[0]) if row else 0
        keep = conn.execute("SELECT setting::bigint, unit FROM pg_settings "
                            "WHERE name = 'max_slot_wal_keep_size'").fetchone()
        first = _lsn(conn)
        started = time.monotonic()
        time.sleep(sample_seconds)
        rate = (_lsn(conn) - first) / max(1e-3, time.monotonic() - started)
    keep_bytes = None
    if keep is not None and int(keep[0]) >= 0:
        keep_bytes = int(keep[0]) * (1048576 if keep[1] == "MB" else 1)
    speed = spec.snapshot.estimate_mib_per_second * 1048576 * spec.snapshot.copy_workers
    return LoadEstimate(size, size / speed, max(0.0, rate), keep_bytes)


def _lsn(conn: Any) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class SourceHold:
    """What the load holds on the source right now."""

    #: transactions the oldest load session's snapshot holds the xmin horizon back by
    xmin_age: int
    #: WAL the migration's slot keeps (from its restart point to the current WAL position)
    wal_bytes: int

    def describe(self) -> str:
        return (f"source held: xmin horizon {self.xmin_age:,} transactions back, "
                f"slot WAL {_mib(self.wal_bytes)}")


def hold(conn: Any, migration_id: str, application: str) -> SourceHold:
    with pg.translated("source: what the load holds"):
        row = conn.execute(
            "SELECT (SELECT coalesce(max(age(backend_xmin)), 0) FROM pg_stat_activity "
            "        WHERE application_name = %s AND backend_xmin IS NOT NULL),"
            " (SELECT coalesce(max(pg_current_wal_lsn() - restart_lsn), 0) "
            "        FROM pg_replication_slots WHERE slot_name = %s)",
            [application, names.slot_name(migration_id)]).fetchone()
    return SourceHold(int(row[0]), int(row[1])) if row else SourceHold(0, 0)
