"""A batch of decoded change events, collapsed per table and key: what the applier hands a
target engine's writer (`migwatch.targets`), and the one exception a writer raises when the
target already applied part of it.

Kept apart from the consumer loop (applier.py) and the writers so that both sides depend on it
and neither on the other."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from migwatch import names
from migwatch.config import TableSpec
from migwatch.decoding import UNCHANGED
from migwatch.schema_changes import TableStopped

#: Debezium's `snapshot` values of a snapshot's last record (of the whole, or of one table)
SNAPSHOT_LAST = {"last", "last_in_data_collection"}

#: (table, keys, columns) → the source's current values of those columns by key, in the form
#: the writer takes them (a key whose row is gone is left out)
SourceRows = Callable[[str, list[tuple[Any, ...]], list[str]],
                      "dict[tuple[Any, ...], dict[str, Any]]"]


@dataclass
class Change:
    """One decoded change: `row` is None for a delete; `key` is the row's key tuple (None for a
    table without a key, whose update or delete finds its row by the `before` image)."""

    table: TableSpec
    op: str  # r c u d t (truncate)
    key: tuple[Any, ...] | None
    row: dict[str, Any] | None
    source_ts_ms: int
    lsn: int | None
    snapshot: str
    before: dict[str, Any] | None = None
    #: the key the row had before an UPDATE changed its key (Debezium's `__debezium.oldkey`)
    old_key: tuple[Any, ...] | None = None


@dataclass
class Batch:
    """Changes collapsed per table and key (in order, for tables without a key), plus what the
    position rows need."""

    upserts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    deletes: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    truncates: set[str] = field(default_factory=set)
    #: tables without a key: every change in source order (duplicates are rows of their own)
    ordered: dict[str, list[Change]] = field(default_factory=dict)
    #: tables with a key: each change since the last truncate, in source order — its key and
    #: its row as `upserts` holds it at that point (None: a delete). A writer whose target
    #: refuses the collapsed rows on a unique index re-applies these one by one
    steps: dict[str, list[tuple[tuple[Any, ...], dict[str, Any] | None]]] = \
        field(default_factory=dict)
    events: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op) -> count
    max_ts: dict[str, int] = field(default_factory=dict)
    max_lsn: dict[str, int] = field(default_factory=dict)
    snapshot_rows: dict[str, int] = field(default_factory=dict)
    snapshot_done: set[str] = field(default_factory=set)
    dlq: dict[str, int] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read
    #: first offset of each partition in the batch: the target refuses a batch that starts at
    #: or below what it already applied (a rebalance rewound the consumer)
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    #: rows this batch deleted, by table and key: a key change's new row takes the values of
    #: its unchanged TOASTed columns from them
    removed: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    #: rows still missing unchanged TOASTed values, by table: new key → old key (the writer
    #: reads them from the target's old row before deleting it)
    moved: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = field(default_factory=dict)
    #: partitions whose table stopped at a schema change its target does not follow: the
    #: offset of the first event that needs it (the batch holds the events before it), and why
    held: dict[TopicPartition, tuple[int, TableStopped]] = field(default_factory=dict)
    #: tables whose incremental snapshot Debezium says it has read to the end
    scanned: set[str] = field(default_factory=set)

    def add(self, ch: Change) -> None:
        t = ch.table.source
        if ch.key is None and ch.op != "t":
            self.ordered.setdefault(t, []).append(ch)
        elif ch.op == "t":
            self.upserts.setdefault(t, {}).clear()
            self.deletes.setdefault(t, set()).clear()
            self.ordered.pop(t, None)
            self.ordered.setdefault(t, [])
            self.steps[t] = []
            self.truncates.add(t)
        elif ch.op == "d":
            assert ch.key is not None
            gone = self.upserts.setdefault(t, {}).pop(ch.key, None)
            if gone is not None:
                self.removed.setdefault(t, {})[ch.key] = gone
            self.deletes.setdefault(t, set()).add(ch.key)
            self.steps.setdefault(t, []).append((ch.key, None))
        else:
            assert ch.row is not None and ch.key is not None
            ups = self.upserts.setdefault(t, {})
            self.deletes.setdefault(t, set()).discard(ch.key)
            row = ch.row
            if any(v is UNCHANGED for v in row.values()):
                # an unchanged TOASTed column keeps what an earlier change of this batch wrote —
                # under this key, or under the key the row had before this change
                earlier = ups.get(ch.key)
                if earlier is None and ch.old_key is not None:
                    earlier = self.removed.get(t, {}).get(ch.old_key)
                if earlier is not None:
                    row = {k: earlier.get(k, v) if v is UNCHANGED else v for k, v in row.items()}
                if ch.old_key is not None and any(v is UNCHANGED for v in row.values()):
                    self.moved.setdefault(t, {})[ch.key] = ch.old_key
            ups[ch.key] = row
            self.steps.setdefault(t, []).append((ch.key, row))
        if ch.op == "r":
            self.snapshot_rows[t] = self.snapshot_rows.get(t, 0) + 1
        self.events[(t, ch.op)] = self.events.get((t, ch.op), 0) + 1
        self.note_position(t, ch.source_ts_ms, ch.lsn)
        if ch.snapshot in SNAPSHOT_LAST:
            self.snapshot_done.add(t)
            if ch.snapshot == "last":
                self.snapshot_done.add(names.ALL_TABLES)

    def note_position(self, table: str, ts: int | None, lsn: int | None) -> None:
        for key in (table, names.ALL_TABLES):
            if ts is not None:
                self.max_ts[key] = max(self.max_ts.get(key, 0), ts)
            if lsn is not None:
                self.max_lsn[key] = max(self.max_lsn.get(key, 0), lsn)

    def note_offset(self, rec: Any) -> None:
        tp = TopicPartition(rec.topic, rec.partition)
        self.offsets[tp] = max(self.offsets.get(tp, 0), rec.offset + 1)
        self.first_offsets[tp] = min(self.first_offsets.get(tp, rec.offset), rec.offset)

    def fill_unknown(self, table: str, columns: Iterable[str]) -> None:
        """Rows decoded before the table gained columns (a source ADD COLUMN) carry none of
        them: the target keeps its value (UNCHANGED) — the one the ADD COLUMN gave every row."""
        for row in (self.upserts.get(table) or {}).values():
            for c in columns:
                row.setdefault(c, UNCHANGED)

    @property
    def tables(self) -> list[str]:
        return sorted(set(self.upserts) | set(self.deletes) | self.truncates | set(self.ordered))

    @property
    def event_count(self) -> int:
        return sum(self.events.values())


class StaleBatch(Exception):
    """The target already applied part of a batch (a rebalance rewound the consumer to its
    stored offsets while records were gathered): `stored` are the target's next offsets."""

    def __init__(self, stored: dict[TopicPartition, int]) -> None:
        self.stored = stored
        super().__init__(f"batch overlaps applied offsets: {stored}")
