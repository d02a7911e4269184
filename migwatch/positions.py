"""The applier's position rows on the target, read in one place.

The applier writes, in the same transaction as each batch, one row per (migration_id, table) —
plus `table_name = '*'` for the newest event of any table, heartbeats included: the source
commit time and LSN of the newest applied event, events applied, snapshot rows and whether the
table's snapshot is done, events dead-lettered, and when the row was written (the target's
clock). Each target engine keeps them its own way (`migwatch.targets`: PostgreSQL in
`migwatch.applied_position`, MongoDB in the collection `migwatch_applied_position`). The
monitor, the snapshot follower, revalidation and the report all read them through `read` (or a
`Target.session` they hold).

`AppliedThrough` owns the one question revalidation, the cutover's drain, the health check and
scale-out ask: has the target applied every change of a table up to source position L?
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from migwatch import names
from migwatch.config import MigrationSpec
from migwatch.consumer_lag import group_lag
from migwatch.targets import engine_for
from migwatch.targets.base import Position


def read(spec: MigrationSpec, migration_id: str, tables: Sequence[str] | None = None,
         application: str = "migwatch") -> dict[str, Position]:
    """The migration's position rows (only `tables` when given) by table; {} before any."""
    with engine_for(spec).session(application) as session:
        return session.positions(migration_id, tables)


# ----------------------------------------------------------------------------- applied through L
def lsn_text(lsn: int) -> str:
    """A numeric LSN as PostgreSQL prints it (`16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def handed_over_lsn(offsets: Sequence[dict[str, Any]]) -> int | None:
    """The source LSN up to which Debezium's changes are in Kafka, from Connect's committed
    source offsets: the last processed event's LSN, or the last fully processed transaction's
    commit. Transactions are decoded in commit order, so every change committed before it is
    in Kafka too (Connect commits an offset only once every record before it is acknowledged)."""
    found = [int(o["offset"][k]) for o in offsets if isinstance(o.get("offset"), dict)
             for k in ("lsn_proc", "lsn_commit", "lsn") if o["offset"].get(k) is not None]
    return max(found) if found else None


@dataclass(frozen=True)
class Through:
    """The answer for one table: applied through L, or why not (and whether nobody knows)."""

    done: bool
    why: str | None = None
    unknown: bool = False


class AppliedThrough:
    """Has the target applied every change of a table up to source LSN `lsn`? (`check`)

    1. Debezium has handed every change up to `lsn` to Kafka: the connector's committed source
       offset is past it — else a change can still sit in Connect's producer while every topic
       reads as applied. (With no connector to ask, this step is skipped and step 2 needs the
       all-tables position past `lsn` too.)
    2. The table's own applied position is at or past `lsn` — or, for a table with no event
       after `lsn`, every partition of its topic is applied to its end (the target's stored
       offsets against Kafka's end offsets, read after step 1).
    One connection each to the target and Connect for the life of a `with` block."""

    def __init__(self, spec: MigrationSpec, migration_id: str,
                 clock: Callable[[], float] = time.monotonic, poll_seconds: float = 0.25,
                 application: str = "migwatch") -> None:
        self.spec = spec
        self.migration_id = migration_id
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.application = application
        self._session: Any = None
        self._connect: Any = None

    def __enter__(self) -> AppliedThrough:
        from migwatch.connectors.connect import ConnectClient

        self._session = engine_for(self.spec).session(self.application)
        self._connect = ConnectClient(self.spec.connect.url, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        for closer in (self._session, self._connect):
            if closer is not None:
                with suppress(Exception):
                    closer.close()

    # --- what it reads -----------------------------------------------------------------------
    def positions(self, table: str) -> tuple[int | None, int | None]:
        """(LSN of the table's newest applied event, LSN of the newest of any table)."""
        wanted = [table, names.ALL_TABLES]
        found = self._session.positions(self.migration_id, wanted)
        tbl, every = found.get(table), found.get(names.ALL_TABLES)
        return (None if tbl is None else tbl.lsn), (None if every is None else every.lsn)

    def handed_over(self) -> int | None:
        """Connect's committed source LSN; None when there is no connector to ask."""
        from migwatch.errors import MigwatchError

        try:
            offsets = self._connect.source_offsets(names.connector_name(self.migration_id))
        except MigwatchError:
            return None
        return None if offsets is None else handed_over_lsn(offsets)

    def unapplied(self, table: str) -> int:
        """Messages of the table's topic past what the target has applied (its stored offsets
        against Kafka's end offsets)."""
        return self.unapplied_each([table])[table]

    def unapplied_each(self, tables: Sequence[str]) -> dict[str, int]:
        """`unapplied` of many tables at once: one read of Kafka's offsets for every topic."""
        topics = {names.table_topic(self.migration_id, t): t for t in tables}
        lag = group_lag(self.spec.kafka.bootstrap_servers,
                        names.consumer_group(self.migration_id), list(topics))
        stored = {topic: self._stored_offsets(topic) for topic in topics}
        out = dict.fromkeys(tables, 0)
        for p in lag.partitions:
            mine = stored[p.topic]
            out[topics[p.topic]] += max(0, p.end_offset - mine[p.partition]) \
                if p.partition in mine else p.lag
        return out

    def _stored_offsets(self, topic: str) -> dict[int, int]:
        return dict(self._session.stored_offsets(self.migration_id, topic))

    # --- the answer --------------------------------------------------------------------------
    def check(self, table: str, lsn: int) -> Through:
        own, every = self.positions(table)
        handed = self.handed_over()
        if handed is not None and handed < lsn:
            return Through(False, f"Debezium has handed changes to Kafka up to "
                                  f"{lsn_text(handed)}, not yet past {lsn_text(lsn)}")
        if own is not None and own >= lsn:
            return Through(True)
        if handed is None:
            if every is None:
                return Through(False, "applier position unknown", unknown=True)
            if every < lsn:
                return Through(False, f"the applier is at {lsn_text(every)}, not yet past "
                                      f"{lsn_text(lsn)}")
        pending = self.unapplied(table)
        if pending == 0:
            return Through(True)
        return Through(False, f"{pending} message(s) of the table not applied yet")

    def wait(self, table: str, lsn: int, seconds: float,
             unknown_seconds: float) -> tuple[str | None, bool]:
        """Wait until `check` holds: (None, _) once it does, else (why not, whether the applier's
        position is unknown) after `seconds` — or `unknown_seconds` while it is unknown."""
        started = self.clock()
        while True:
            through = self.check(table, lsn)
            if through.done:
                return None, False
            if self.clock() - started >= (unknown_seconds if through.unknown else seconds):
                return through.why, through.unknown
            time.sleep(self.poll_seconds)
