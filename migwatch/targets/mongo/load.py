"""The initial load into a MongoDB target straight from the source: each row read (in the
load's snapshot) in the text forms `ValueForm.select` gives, mapped to its document by the same
`DocumentForm` the applier writes by, inserted in batches; then the table's position row
(snapshot rows, done). Inserts are not one transaction: a load cut off mid-table leaves the
table unrecorded, and the resumed load empties it first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from migwatch import names
from migwatch.config import MigrationSpec, TableSpec
from migwatch.connectors import mongo
from migwatch.connectors import postgres as pg
from migwatch.targets.mongo.values import DocumentForm, supports_decimal128
from migwatch.targets.mongo.writer import FERRETDB_WRITE_CHUNK

#: rows read per round trip and documents per insert (FerretDB: smaller write commands)
BATCH = 5000


def load_into(spec: MigrationSpec, migration_id: str, table: TableSpec, info: pg.TableInfo,
              source: Any, empty_first: bool,
              on_rows: Callable[[int, int], None] | None = None) -> int:
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
                cur.execute(sql.SQL("SELECT {} FROM {}").format(
                    form.select_list(), sql.Identifier(table.schema_name, table.name)))
                docs: list[dict[str, Any]] = []
                for row in cur:
                    docs.append(form.document(dict(zip(form.columns, row, strict=True))))
                    if len(docs) >= step:
                        rows += _insert(coll, docs, on_rows)
                        docs = []
                if docs:
                    rows += _insert(coll, docs, on_rows)
            db[names.POSITION_COLLECTION].update_one(
                {"_id": {"migration_id": migration_id, "table_name": table.source}},
                {"$set": {"snapshot_rows": rows, "snapshot_done": True},
                 "$currentDate": {"updated_at": True}}, upsert=True)
    finally:
        client.close()
    return rows


def _insert(coll: Any, docs: list[dict[str, Any]],
            on_rows: Callable[[int, int], None] | None) -> int:
    coll.insert_many(docs, ordered=False)
    if on_rows is not None:
        on_rows(len(docs), 0)
    return len(docs)
