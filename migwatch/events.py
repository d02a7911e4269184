"""Debezium's change events, one Kafka record each, read into `Change`s by the source's own
table definitions: routed by the event's `source.schema` and `source.table` (never by topic
name: Debezium sanitises topic names, and two tables can share one), values decoded by column
type (`decoding.py`), and each row mapped to what the target engine stores as it is read, so a
value the target cannot hold dead-letters its own event."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from migwatch.batches import Change
from migwatch.config import TableSpec
from migwatch.connectors import postgres as pg
from migwatch.decoding import (
    FROM_SOURCE,
    UNCHANGED,
    ColumnDecoder,
    SkipEvent,
    load_value,
    uncarried,
)
from migwatch.errors import UnsupportedValue
from migwatch.event_schema import UnknownEventType, resolve, row_fields
from migwatch.schema_changes import widens
from migwatch.targets.base import Target, Writer

log = logging.getLogger("migwatch.applier")

#: how long the source's column names of a table are taken as known (`_catalog_names`)
CATALOG_SECONDS = 5.0

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
        self.on_schema_change: Callable[..., bool] | None = None
        #: the source connection the event definitions' types are resolved on (`Applier`)
        self.source_conn: Callable[[], Any] | None = None
        #: per (table, envelope schema): the columns the event defines (`event_schema`)
        self._shapes: dict[tuple[str, bytes], _Shape] = {}
        #: per (table, column): the position (LSN) of the event at which the target's
        #: definition of the column last changed (added, dropped, retyped); an event before it
        #: (read again after the target moved on) neither moves the target back nor writes
        #: that column's older value (`schema_changes.ColumnChange.since`)
        self.changed_at: dict[tuple[str, str], int] = {}
        #: per table: the latest of those
        self.last_change: dict[str, int] = {}
        #: tables whose events carry their definition
        self.defined: set[str] = set()
        #: per table: the last event's envelope schema and its definition
        self._last: dict[str, tuple[bytes, _Shape]] = {}
        #: tables whose target was brought to the definition of their first event read
        self._verified: set[str] = set()
        #: per table: when its column names were read from the source, and what they were
        self._catalog: dict[str, tuple[float, frozenset[str]]] = {}
        #: (table, reason, columns) the source's catalog was read for without finding a change
        #: — a column Debezium always leaves out (interval[]) — not read again for each event
        self._unchanged: set[tuple[str, str, frozenset[str]]] = set()

    def note_changes(self, table: str, columns: Iterable[str], at: int) -> None:
        """The target's definition of `columns` changed at the event at position `at`."""
        for c in columns:
            if at > self.changed_at.get((table, c), -1):
                self.changed_at[(table, c)] = at
                self.last_change[table] = max(self.last_change.get(table, -1), at)

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

    def _shape_of(self, table: str, schema: Any, at: int,
                  ) -> tuple[_Shape, frozenset[str]] | None:
        """The definition this event was written under, and the columns whose definition on
        the target changed after the event (`changed_at`: an event read again after the target
        moved on — its values of those columns are older than what the target holds); None
        when the envelope carries no definition (decode by the table's known one).

        A definition the target does not hold yet is followed first (`on_schema_change` with
        it: additive changes are applied, others stop the table before this event); a column
        the target holds that the event leaves out is one added after the event (its value:
        the row's, UNCHANGED) — or, when the source no longer has it, a dropped column."""
        raw = bytes(schema) if not isinstance(schema, dict) else orjson.dumps(schema)
        last = self._last.get(table)
        # most events repeat the previous one's definition: compared byte for byte, no hashing
        shape = last[1] if last is not None and last[0] == raw else \
            self._shapes.get((table, raw))
        if shape is None:
            shape = self._resolve(table, schema)
            if shape is None:
                return None
            if len(self._shapes) > 1000:
                self._shapes.clear()
            self._shapes[(table, raw)] = shape
            self.defined.add(table)
        self._last[table] = (raw, shape)
        followed = self.infos[table]
        if shape.followed is not followed:
            shape.check(followed)
        stale: frozenset[str] = frozenset()
        if at < self.last_change.get(table, -1):
            stale = frozenset(c for (t, c), lsn in self.changed_at.items()
                              if t == table and lsn > at)
        gone = [c for c in shape.missing if c not in stale]
        if gone:  # columns the source still has were added after this event
            gone = [c for c in gone if c not in self._catalog_names(table)]
        needs = shape.needs if not stale else any(
            c.name not in stale and c.name in shape.needy for c in shape.columns)
        if table not in self._verified:
            # the first event of the table since the applier started: the target is brought
            # to its definition whatever the applier believed (it started from the catalog)
            self._verified.add(table)
            needs = True
        if (needs or gone) and self.on_schema_change is not None:
            # a stale column stays as the target holds it (or away, when the target dropped it)
            held = {c.name: c for c in followed.columns}
            keep = [c for c in followed.columns if c.name in shape.missing and c.name not in gone]
            wanted = dataclasses.replace(followed, columns=(
                *(held[c.name] if c.name in stale else c for c in shape.columns
                  if c.name not in stale or c.name in held), *keep))
            log.debug("table %s: event at %s defines %s; the target holds %s (stale %s, gone "
                      "%s)", table, at, [c.name for c in shape.columns],
                      [c.name for c in followed.columns], sorted(stale), gone)
            self.on_schema_change(table, wanted, at)
            if self.infos[table] is not followed:
                shape.check(self.infos[table])
        return shape, stale

    def _catalog_names(self, table: str) -> frozenset[str]:
        """The table's columns on the source, read again at most every few seconds: a column
        an event leaves out that the source still has was added after the event; one it no
        longer has was dropped."""
        known = self._catalog.get(table)
        if known is None or time.monotonic() - known[0] >= CATALOG_SECONDS:
            self._describe(table)
        return self._catalog[table][1]

    def _describe(self, table: str) -> pg.TableInfo | None:
        """The table as the source has it now; its column names remembered (`_catalog`)."""
        assert self.source_conn is not None
        spec = next(t for t in self.tables if t.source == table)
        with pg.translated(f"source: describe {table}"):
            now = pg.describe_table(self.source_conn(), spec.schema_name, spec.name)
        self._catalog[table] = (time.monotonic(), frozenset(
            c.name for c in now.columns) if now is not None else frozenset())
        return now

    def _resolve(self, table: str, schema: Any) -> _Shape | None:
        fields = row_fields(schema)
        if fields is None or self.source_conn is None:
            return None
        spec = next(t for t in self.tables if t.source == table)
        now = self._describe(table)
        with pg.translated(f"source: describe {table}"):
            try:
                columns, generated = resolve(self.source_conn(), spec.schema_name, spec.name,
                                             fields, now)
            except UnknownEventType as exc:
                raise SkipEvent("unsupported_value", str(exc)) from exc
        decoder = ColumnDecoder(columns, full_identity=self.infos[table].replica_identity == "f",
                                dropped=generated)
        return _Shape(tuple(columns), decoder)

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
        update = op in ("u", "d") or key_change
        found = None if schema is None else \
            self._shape_of(table.source, schema, lsn if isinstance(lsn, int) else -1)
        if found is None:
            row = self._decode(table.source, image, schema, update=update)
            decoder = self.decoders[table.source]
        else:
            shaped, stale = found
            decoder = shaped.decoder
            row = decoder.decode(image, schema, update=update)
            for c in stale:  # the target holds a later value (or no such column)
                row.pop(c, None)
            if shaped.left_out and not update:
                # a whole row without a column Debezium leaves out of every event: never
                # written as NULL (a column added after the event is UNCHANGED: the row's value)
                raise SkipEvent("missing_column", f"column {shaped.left_out[0]!r} is not in "
                                                  "the event: Debezium does not carry its type")
        info = self.infos[table.source]
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


class _Shape:
    """One event definition of a table (its envelope schema), resolved to PostgreSQL types, and
    how it differs from the definition the target was brought to (`check`)."""

    def __init__(self, columns: tuple[pg.Column, ...], decoder: ColumnDecoder) -> None:
        self.columns = columns
        self.decoder = decoder
        self.followed: pg.TableInfo | None = None
        #: the event has a column the target lacks, or of a type the target's does not hold
        self.needs = False
        self.needy: frozenset[str] = frozenset()
        #: columns the target holds that the event leaves out
        self.missing: tuple[str, ...] = ()
        #: of those, the ones Debezium leaves out of every event (their type)
        self.left_out: tuple[str, ...] = ()

    def check(self, followed: pg.TableInfo) -> None:
        held = {c.name: c.type for c in followed.columns}
        names_ = {c.name for c in self.columns}
        self.needy = frozenset(c.name for c in self.columns
                               if c.name not in held or not widens(c.type, held[c.name]))
        self.needs = bool(self.needy)
        self.missing = tuple(n for n in held if n not in names_)
        self.left_out = tuple(c.name for c in followed.columns
                              if c.name in self.missing and uncarried(c.value_type))
        self.followed = followed


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
