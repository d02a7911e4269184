"""What the applier stores on a MongoDB target beside the data — the collections
`migwatch_applied_position` (one document per migration and table, see `migwatch.positions`)
and `migwatch_applied_offsets` (the next Kafka offset per partition) — read and cleared here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from migwatch import names
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import mongo
from migwatch.schema_changes import ColumnChange, SchemaChange
from migwatch.targets.base import Position, TargetSession


def read_positions(db: Any, migration_id: str, tables: Sequence[str] | None = None,
                   ) -> dict[str, Position]:
    """The migration's position documents on an open database (the target's)."""
    query: dict[str, Any] = {"_id.migration_id": migration_id}
    if tables is not None:
        query["_id.table_name"] = {"$in": list(tables)}
    with mongo.translated("target: read applied position"):
        docs = list(db[names.POSITION_COLLECTION].find(query))
    out = {}
    for d in docs:
        name = d["_id"]["table_name"]
        out[name] = Position(
            name, _int(d.get("source_ts_ms")), _int(d.get("lsn")), int(d.get("events") or 0),
            int(d.get("snapshot_rows") or 0), bool(d.get("snapshot_done")),
            int(d.get("dlq_events") or 0), _epoch(d.get("updated_at")))
    return out


def record_schema_change(db: Any, migration_id: str, record: SchemaChange) -> None:
    """Append `record`; its time is the target's clock (`$currentDate`)."""
    from bson import ObjectId

    db[names.SCHEMA_CHANGES_COLLECTION].update_one({"_id": ObjectId()}, {
        "$set": {"migration_id": migration_id, "table_name": record.table,
                 "outcome": record.outcome, "changes": [c.to_dict() for c in record.changes],
                 "note": record.note},
        "$currentDate": {"seen_at": True}}, upsert=True)


def read_schema_changes(db: Any, migration_id: str) -> list[SchemaChange]:
    """The migration's schema-change records, oldest first."""
    with mongo.translated("target: read schema changes"):
        docs = list(db[names.SCHEMA_CHANGES_COLLECTION].find(
            {"migration_id": migration_id}).sort([("seen_at", 1), ("_id", 1)]))
    return [SchemaChange(_epoch(d.get("seen_at")) or 0.0, d["table_name"], d["outcome"],
                         tuple(ColumnChange.from_dict(c) for c in d.get("changes") or ()),
                         d.get("note")) for d in docs]


def clear_positions(db: Any, migration_id: str) -> int:
    removed = int(db[names.SCHEMA_CHANGES_COLLECTION].delete_many(
        {"migration_id": migration_id}).deleted_count)
    for name in (names.POSITION_COLLECTION, names.OFFSETS_COLLECTION,
                 names.LOAD_RANGES_COLLECTION):
        removed += int(db[name].delete_many({"_id.migration_id": migration_id}).deleted_count)
    return removed


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _epoch(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return None


class MongoSession(TargetSession):
    """One client of a MongoDB target."""

    def __init__(self, spec: MigrationSpec, application: str,
                 timeout_ms: int | None = None) -> None:
        self.client = mongo.client(spec.target, appname=application, tz_aware=False,
                                   select_ms=timeout_ms or mongo.SELECT_MS)
        self.db = self.client[spec.target.database]

    def positions(self, migration_id: str, tables: Sequence[str] | None = None,
                  ) -> dict[str, Position]:
        return read_positions(self.db, migration_id, tables)

    def stored_offsets(self, migration_id: str, topic: str) -> dict[int, int]:
        with mongo.translated("target: read applied offsets"):
            docs = self.db[names.OFFSETS_COLLECTION].find(
                {"_id.migration_id": migration_id, "_id.topic": topic})
            return {int(d["_id"]["partition"]): int(d["next_offset"]) for d in docs}

    def heartbeat_at(self, migration_id: str, beat: TableSpec) -> float | None:
        with mongo.translated("target: read heartbeat"):
            doc = self.db[beat.target_table].find_one({"_id": migration_id})
        return _epoch(doc.get("beat_at") if doc else None)

    def clear_positions(self, migration_id: str) -> int:
        with mongo.translated("target: clear applied positions"):
            return clear_positions(self.db, migration_id)

    def clear_table_positions(self, migration_id: str, tables: Sequence[str]) -> int:
        with mongo.translated("target: clear positions of tables"):
            return sum(int(self.db[name].delete_many(
                {"_id.migration_id": migration_id, "_id.table_name": {"$in": list(tables)}}
            ).deleted_count) for name in (names.POSITION_COLLECTION,
                                          names.LOAD_RANGES_COLLECTION))

    def schema_changes(self, migration_id: str) -> list[SchemaChange]:
        return read_schema_changes(self.db, migration_id)

    def record_schema_change(self, migration_id: str, record: SchemaChange) -> None:
        with mongo.translated("target: record a schema change"):
            record_schema_change(self.db, migration_id, record)

    def close(self) -> None:
        self.client.close()
