"""The initial load into a MongoDB target straight from the source: each row read (in the
load's snapshot) in the text forms `ValueForm.select` gives, mapped to its document by the same
`DocumentForm` the applier writes by, inserted in batches; then the table's position row
(snapshot rows, done), or the key range's entry in the load plan. Inserts are not one
transaction: a load cut off mid-table leaves the table (or range) unrecorded; the resumed load
empties a whole table first, and replaces a range's documents by key (`upsert`: each batch's
keys deleted, then inserted) — what a cut-off
range inserted and the source deleted since, the slot's replay deletes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from migwatch import names
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import mongo
from migwatch.connectors import postgres as pg
from migwatch.load.ranges import KeyRange
from migwatch.targets.mongo.values import DocumentForm, supports_decimal128
from migwatch.targets.mongo.writer import FERRETDB_WRITE_CHUNK

#: rows read per round trip and documents per insert (FerretDB: smaller write commands)
BATCH = 5000


def load_into(spec: MigrationSpec, migration_id: str, table: TableSpec, info: pg.TableInfo,
              source: Any, empty_first: bool, key_range: KeyRange | None = None,
              upsert: bool = False, on_rows: Callable[[int, int], None] | None = None) -> int:
    client = mongo.client(spec.target, appname="migwatch-load", tz_aware=False)
    try:
        with mongo.translated(f"target: load {table.target_table}"):
            build = client.admin.command("buildInfo")
            step = FERRETDB_WRITE_CHUNK * 10 if "ferretdbVersion" in build else BATCH
            form = DocumentForm(info, decimal128=supports_decimal128(build),
                                json_string_columns=table.json_string_columns)
            db = client[spec.target.database]
            coll = db[table.target_table]
            if empty_first:
                coll.delete_many({})
            source.execute(pg.SOURCE_SESSION)  # the text forms ValueForm.select reads
            rows = 0
            with source.cursor(name="migwatch_load") as cur:
                cur.itersize = BATCH
                cur.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
                    form.select_list(), sql.Identifier(table.schema_name, table.name),
                    key_range.condition() if key_range else sql.SQL("true")))
                docs: list[dict[str, Any]] = []
                for row in cur:
                    docs.append(form.document(dict(zip(form.columns, row, strict=True))))
                    if len(docs) >= step:
                        rows += _insert(coll, docs, upsert, on_rows)
                        docs = []
                if docs:
                    rows += _insert(coll, docs, upsert, on_rows)
            if key_range is None:
                record_loaded(db, migration_id, table.source, rows)
            else:
                db[names.LOAD_RANGES_COLLECTION].update_one(
                    {"_id": _range_id(migration_id, table.source, key_range.number)},
                    {"$set": {"rows": rows, "done": True}})
    finally:
        client.close()
    return rows


def record_loaded(db: Any, migration_id: str, table: str, rows: int) -> None:
    db[names.POSITION_COLLECTION].update_one(
        {"_id": {"migration_id": migration_id, "table_name": table}},
        {"$set": {"snapshot_rows": rows, "snapshot_done": True},
         "$currentDate": {"updated_at": True}}, upsert=True)


def _range_id(migration_id: str, table: str, number: int) -> dict[str, Any]:
    return {"migration_id": migration_id, "table_name": table, "range_no": number}


def read_plan(db: Any, migration_id: str, table: str) -> list[KeyRange]:
    with mongo.translated(f"target: load plan of {table}"):
        docs = db[names.LOAD_RANGES_COLLECTION].find(
            {"_id.migration_id": migration_id, "_id.table_name": table})
        found = [KeyRange(table, d["_id"]["range_no"], d["count"], d["column"], d.get("low"),
                          d.get("high"), int(d.get("rows", 0)), bool(d.get("done")))
                 for d in docs]
    return sorted(found, key=lambda r: r.number)


def save_plan(db: Any, migration_id: str, table: str, ranges: list[KeyRange]) -> None:
    with mongo.translated(f"target: save the load plan of {table}"):
        coll = db[names.LOAD_RANGES_COLLECTION]
        coll.delete_many({"_id.migration_id": migration_id, "_id.table_name": table})
        coll.insert_many([{"_id": _range_id(migration_id, table, r.number), "count": r.count,
                           "column": r.column, "low": r.low, "high": r.high, "rows": 0,
                           "done": False} for r in ranges])


def _insert(coll: Any, docs: list[dict[str, Any]], upsert: bool,
            on_rows: Callable[[int, int], None] | None) -> int:
    if upsert:  # what a cut-off try inserted goes first (one command, not one per document)
        coll.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
    coll.insert_many(docs, ordered=False)
    if on_rows is not None:
        on_rows(len(docs), 0)
    return len(docs)
