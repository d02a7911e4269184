"""Debezium's change events, one Kafka record each, read into `Change`s by the source's own
table definitions: routed by the event's `source.schema` and `source.table` (never by topic
name: Debezium sanitises topic names, and two tables can share one), values decoded by column
type (`decoding.py`), and each row mapped to what the target engine stores as it is read, so a
value the target cannot hold dead-letters its own event."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from migwatch.batches import Change
from migwatch.config import TableSpec
from migwatch.connectors import postgres as pg
from migwatch.decoding import FROM_SOURCE, UNCHANGED, ColumnDecoder, SkipEvent, load_value
from migwatch.errors import UnsupportedValue
from migwatch.targets.base import Target, Writer

log = logging.getLogger("migwatch.applier")

#: the column a decoding failure names (`column 'x': …`)
_COLUMN_NAMED = re.compile(r"column '([^']*)'")

#: on the create event of an UPDATE that changed the key: the row's key before it
OLD_KEY_HEADER = "__debezium.oldkey"


class EventReader:
    """Reads one migration's events (its tables described once, by `load`)."""

    def __init__(self, tables: list[TableSpec], engine: Target) -> None:
        self.tables = tables
        self.engine = engine
        self.by_source: dict[tuple[str, str], TableSpec] = {
            (t.schema_name, t.name): t for t in tables}
        self.infos: dict[str, pg.TableInfo] = {}
        self.decoders: dict[str, ColumnDecoder] = {}
        #: tables without a key (REPLICA IDENTITY FULL), on an engine that applies them in order
        self.keyless: set[str] = set()
        #: tables without a key on an engine that cannot hold them: their events dead-letter
        self.unkeyed: set[str] = set()
        #: the writer whose `target_row` maps each decoded row (None: rows stay as decoded)
        self.writer: Writer | None = None
        #: called with a table when its events stop matching its known columns (a field it
        #: does not know, a column left out of a whole row): reads the source's catalog again
        #: and brings the target along (`Applier.follow_schema`); True when the table changed
        self.on_schema_change: Callable[[str], bool] | None = None
        #: (table, reason, columns) the source's catalog was read for without finding a change
        #: — a column Debezium always leaves out (interval[]) — not read again for each event
        self._unchanged: set[tuple[str, str, frozenset[str]]] = set()

    def set_table(self, table: str, info: pg.TableInfo) -> None:
        """The table's definition as the source has it now (after a schema change): the
        columns it gained may be left out of events written before they were added, and the
        columns it lost may still be in them (their values are dropped: the target followed)."""
        old = self.decoders.get(table)
        now = {c.name for c in info.columns}
        known = set(old.kinds) if old is not None else now
        added = ((old.added if old is not None else set()) | (now - known))
        dropped = ((old.dropped if old is not None else set()) | known) - now
        self.infos[table] = info
        self.decoders[table] = ColumnDecoder(info.columns,
                                             full_identity=info.replica_identity == "f",
                                             added=added, dropped=dropped)
        self._unchanged = {u for u in self._unchanged if u[0] != table}

    def _decode(self, table: str, image: dict[str, Any], schema: Any,
                update: bool = False) -> dict[str, Any]:
        """One row image; a field the table does not know, or a column missing from a whole
        row, first has the source's catalog read again — a schema change — then decodes by
        the table's new definition (SkipEvent when nothing changed). So does a value its
        column's type cannot read (the column's type may have changed)."""
        try:
            return self.decoders[table].decode(image, schema, update=update)
        except SkipEvent as exc:
            if exc.reason not in ("unknown_column", "missing_column", "bad_value") or \
                    self.on_schema_change is None:
                raise
            # a value its column's known type cannot read may be the column's new type
            fields = frozenset(_COLUMN_NAMED.findall(exc.detail)[:1]) \
                if exc.reason == "bad_value" \
                else frozenset(image) ^ frozenset(self.decoders[table].kinds)
            seen = (table, exc.reason, fields)
            if seen in self._unchanged:
                raise
            changed = self.on_schema_change(table)
            decoder = self.decoders[table]
            # a field the source's catalog, just read, does not have either: a column added
            # and dropped again before this event was read — the target never had it, so its
            # value goes nowhere and the rest of the row lands
            gone = set(image) - decoder.kinds.keys() - decoder.dropped
            if exc.reason == "unknown_column" and gone:
                log.warning("table %s: column(s) %s in events but no longer on the source "
                            "(added and dropped meanwhile): their values are left out",
                            table, sorted(gone))
                decoder.dropped |= gone
            elif not changed:
                self._unchanged.add(seen)
                raise
        return self.decoders[table].decode(image, schema, update=update)

    def load(self, conn: Any) -> None:
        """Each table's columns and key from the source — the truth the target mirrors."""
        for t in self.tables:
            with pg.translated(f"source: describe {t.source}"):
                info = pg.describe_table(conn, t.schema_name, t.name)
            if info is None:
                log.warning("table %s is missing on the source", t.source)
                continue
            if not info.primary_key:
                (self.keyless if self.engine.applies_keyless else self.unkeyed).add(t.source)
            self.infos[t.source] = info
            self.decoders[t.source] = ColumnDecoder(
                info.columns, full_identity=info.replica_identity == "f")

    def decode(self, record: Any) -> Change | None:
        """A Change, None for a tombstone (the delete before it applied), or SkipEvent."""
        if record.value is None:
            return None
        value, schema = load_value(record.value)
        if not isinstance(value, dict):
            raise SkipEvent("invalid_envelope", "value is not an object")
        source = value.get("source")
        if not isinstance(source, dict):
            raise SkipEvent("invalid_envelope", "no source block")
        table = self.by_source.get((str(source.get("schema")), str(source.get("table"))))
        if table is None:
            raise SkipEvent("unknown_table", f"table {source.get('schema')!r}."
                                             f"{source.get('table')!r} is not in the spec")
        try:
            return self._change(table, value, source, schema, record.headers)
        except SkipEvent as exc:
            exc.table = table.source
            raise

    def _change(self, table: TableSpec, value: dict[str, Any], source: dict[str, Any],
                schema: Any, headers: Any = None) -> Change:
        if table.source not in self.infos:
            raise SkipEvent("unknown_table", f"table {table.source!r} not found on the source")
        op = value.get("op")
        if op not in ("r", "c", "u", "d", "t"):
            raise SkipEvent("invalid_envelope", f"unknown op {op!r}")
        if table.source in self.unkeyed:
            raise SkipEvent("unsupported_value", f"table {table.source}: no primary key (nor "
                                                 "REPLICA IDENTITY USING INDEX): a "
                                                 f"{self.engine.label} target needs one")
        try:
            ts = int(source.get("ts_ms") or value.get("ts_ms") or 0)
        except (TypeError, ValueError) as exc:
            raise SkipEvent("invalid_envelope", f"ts_ms {source.get('ts_ms')!r} is not a "
                                                "number") from exc
        lsn = source.get("lsn")
        snap = str(source.get("snapshot") or "false").lower()
        if op == "t":
            return Change(table, "t", (), None, ts, lsn, snap)
        image = value.get("before") if op == "d" else value.get("after")
        if not isinstance(image, dict):
            raise SkipEvent("invalid_envelope", f"op {op!r} without a row image")
        key_change = op == "c" and bool(headers) and OLD_KEY_HEADER in dict(headers)
        # an update's new image and a delete's old one may leave columns out (a delete under
        # REPLICA IDENTITY USING INDEX carries the key only)
        row = self._decode(table.source, image, schema, update=op in ("u", "d") or key_change)
        info = self.infos[table.source]
        decoder = self.decoders[table.source]
        if table.source in self.keyless:
            before = value.get("before")
            if op in ("u", "d") and not isinstance(before, dict):
                raise SkipEvent("invalid_envelope", f"op {op!r} of a table without a key "
                                                    "carries no before image")
            old = decoder.decode(before, schema) if op == "u" and isinstance(before, dict) \
                else row if op == "d" else None
            if old is not None and op == "u":  # REPLICA IDENTITY FULL: the old row is whole
                row = {k: old.get(k) if v is UNCHANGED or v is FROM_SOURCE else v
                       for k, v in row.items()}
            return Change(table, op, None, None if op == "d" else row, ts, lsn, snap, old)
        key = _key_of(row, info.primary_key, "")
        old_key = None
        if op == "c" and headers:
            raw = dict(headers).get(OLD_KEY_HEADER)
            if raw:
                try:
                    image = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise SkipEvent("invalid_envelope", f"header {OLD_KEY_HEADER}: not JSON"
                                    ) from exc
                if not isinstance(image, dict):
                    raise SkipEvent("invalid_envelope", f"header {OLD_KEY_HEADER}: not an "
                                                        "object")
                old = decoder.decode(image, update=True)  # the key columns only
                old_key = _key_of(old, info.primary_key, f"header {OLD_KEY_HEADER}: ")
        if self.writer is not None:
            try:
                row = self.writer.target_row(table.source, op, key, row, old_key)
            except UnsupportedValue as exc:  # dead-letters this event, naming the column
                raise SkipEvent("unsupported_value", str(exc)) from exc
        return Change(table, op, key, None if op == "d" else row, ts, lsn, snap,
                      old_key=old_key)


def _key_of(row: dict[str, Any], key_columns: Sequence[str], where: str) -> tuple[Any, ...]:
    """The key's values in key-column order; an event without one (left out, or null — a key
    column is NOT NULL) is malformed, naming the column."""
    for k in key_columns:
        v = row.get(k, UNCHANGED)
        if v is UNCHANGED:
            raise SkipEvent("invalid_envelope", f"{where}key column {k!r} is not in the event")
        if v is None:
            raise SkipEvent("invalid_envelope", f"{where}key column {k!r} is null")
    return tuple(row[k] for k in key_columns)
