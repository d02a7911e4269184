"""The MongoDB target engine (see `migwatch.targets.base` for what each method is for); values
land in the form `values.py` defines, which its validation side compares by."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from migwatch import names
from migwatch.batches import SourceRows
from migwatch.config import TableSpec
from migwatch.connectors import mongo
from migwatch.connectors import postgres as pg
from migwatch.errors import PermanentError, TargetNotEmpty
from migwatch.targets.base import Emptied, Target, TargetSession
from migwatch.targets.mongo.positions import MongoSession, clear_positions
from migwatch.targets.mongo.values import (
    READABLE_KEY_KINDS,
    DocumentForm,
    kind_of,
    supports_decimal128,
)
from migwatch.targets.mongo.writer import MongoWriter

if TYPE_CHECKING:
    from migwatch.load.ranges import KeyRange


class MongoTarget(Target):
    kind = "mongodb"
    label = "MongoDB"
    migrations_label = "MongoDB"
    migrations_kind = "mongodb"
    applies_keyless = False  # `_id` needs a key; such tables are refused at pre-flight
    creates_tables = False
    runs_expectations = False
    loads = True
    validation_note = (
        "MongoDB target: each source row is compared as the document the applier writes for "
        "it (docs/types.md: timestamps at milliseconds, numbers in JSON as doubles, timetz at "
        "UTC); a value the target cannot hold counts as a difference")

    def table_name(self, table: TableSpec) -> str:
        return table.target_table

    def session(self, application: str, timeout_ms: int | None = None) -> TargetSession:
        return MongoSession(self.spec, application, timeout_ms)

    @contextmanager
    def _database(self, appname: str = "migwatch-load") -> Iterator[Any]:
        client = mongo.client(self.endpoint, appname=appname, tz_aware=False)
        try:
            yield client[self.endpoint.database]
        finally:
            client.close()

    def ping(self) -> None:
        client = mongo.client(self.endpoint, appname="migwatch-preflight", select_ms=5000,
                              socket_ms=5000)
        try:
            with mongo.translated(f"target ({self.endpoint.redacted()}): ping"):
                client.admin.command("ping")
        finally:
            client.close()

    def table_problems(self, info: pg.TableInfo, table: TableSpec) -> list[str]:
        name = table.target_table
        out = []
        if not name or "$" in name or "\x00" in name or name.startswith("system."):
            out.append(f"collection name {name!r}: MongoDB refuses names that are empty, hold "
                       "'$' or NUL, or start with 'system.' (name another with `target:`)")
        elif '"' in name and self._ferretdb():
            out.append(f"collection name {name!r}: FerretDB cannot create a collection whose "
                       "name holds a double quote (name another with `target:`)")
        return out + DocumentForm(info, json_string_columns=table.json_string_columns).refusals()

    def _ferretdb(self) -> bool:
        """Whether the target server is FerretDB (asked once)."""
        if self._is_ferretdb is None:
            with mongo.database(self.endpoint, appname="migwatch-preflight", select_ms=5000) \
                    as db, mongo.translated(f"target ({self.endpoint.redacted()})"):
                self._is_ferretdb = not supports_decimal128(db.client.admin.command("buildInfo"))
        return self._is_ferretdb

    _is_ferretdb: bool | None = None

    def make_fresh(self, migration_id: str, reset: bool) -> Emptied:
        with mongo.database(self.endpoint, appname="migwatch-migrate") as db, \
                mongo.translated("target: check target collections"):
            full = [t.target_name for t in self.spec.tables
                    if db[t.target_table].find_one({}, {"_id": 1}) is not None]
            if full and not reset:
                raise TargetNotEmpty(migration_id, full)
            emptied = []
            for t in self.spec.tables if reset else ():
                db[t.target_table].delete_many({})
                emptied.append(t.target_name)
            removed = clear_positions(db, migration_id)
        return Emptied(tuple(full), tuple(emptied), removed)

    def forget_columns(self, table: TableSpec, columns: Sequence[str]) -> list[str]:
        """`$unset` of the fields from every document of the collection that has them."""
        held = []
        with mongo.database(self.endpoint, appname="migwatch-resume") as db, \
                mongo.translated(f"target: remove fields of {table.target_name}"):
            coll = db[table.target_table]
            for c in columns:
                if coll.find_one({c: {"$exists": True}}, {"_id": 1}) is not None:
                    coll.update_many({c: {"$exists": True}}, {"$unset": {c: ""}})
                    held.append(c)
        return held

    def prepare_schema(self, tables: Sequence[tuple[TableSpec, pg.TableInfo]],
                       heartbeat: tuple[str, str]) -> tuple[list[str], list[str]]:
        return [], []  # collections come with their first document

    def finish_schema(self, progress: Callable[[int, int, str], None] | None = None,
                      ) -> dict[str, Any]:
        """After the load: the source's unique constraints and unique indexes as unique indexes
        of the collections, named as on the source (`indexes.py`: the primary key is `_id`;
        what cannot mean the same on MongoDB is left out, each named with why, as are the
        tables' check and foreign-key constraints and triggers). `progress(done, total,
        object)` after each index; each one's seconds are returned."""
        from migwatch.targets.mongo import indexes

        found = []
        with pg.connect_endpoint(self.spec.source, "source", autocommit=True) as src, \
                pg.translated("source: unique keys"):
            for t in self.spec.tables:
                info = pg.describe_table(src, t.schema_name, t.name)
                if info is None:
                    raise PermanentError(f"table {t.source}: does not exist on the source")
                found.append((t, info, indexes.read_uniques(src, t.schema_name, t.name),
                              indexes.read_not_carried(src, t.schema_name, t.name,
                                                       t.source)))
        built: list[str] = []
        covered: list[str] = []
        left_out: list[str] = []
        seconds: dict[str, float] = {}
        with mongo.database(self.endpoint, appname="migwatch-migrate") as db, \
                mongo.translated(f"target ({self.endpoint.redacted()}): unique indexes"):
            decimal128 = supports_decimal128(db.client.admin.command("buildInfo"))
            plans = [(t, indexes.plan(t.source, info, DocumentForm(
                          info, decimal128=decimal128, json_string_columns=t.json_string_columns),
                          uniques), not_carried)
                     for t, info, uniques, not_carried in found]
            total, done = sum(len(p.create) for _, p, _ in plans), 0
            for t, planned, not_carried in plans:
                coll = db[t.target_table]
                for index in planned.create:
                    what = f"unique index {index.name} on {t.target_table}"
                    started = time.monotonic()
                    made, why = indexes.create(coll, index)
                    if made:
                        built.append(what)
                        seconds[what] = round(time.monotonic() - started, 3)
                    elif why is not None:
                        left_out.append(f"{index.what} of {t.source}: not carried — {why}")
                    done += 1
                    if progress is not None:
                        progress(done, total, what)
                covered += planned.covered
                left_out += planned.left_out + not_carried
        return {"built": built, "covered": covered, "left_out": left_out, "seconds": seconds,
                "analyzed": []}

    def writer(self, migration_id: str, infos: dict[str, pg.TableInfo],
               tables: list[TableSpec], keyless: set[str],
               source_rows: SourceRows | None) -> MongoWriter:
        return MongoWriter(self.spec, migration_id, infos, tables, source_rows=source_rows)

    def open_validation(self, table: TableSpec, source: Any, info: pg.TableInfo,
                        result: Any, closers: list[Callable[[], None]],
                        on_rows: Callable[[int], None] | None, keep_limit: int,
                        ) -> tuple[Any, Any]:
        """Both sides as documents (`validation.py`): the source's rows mapped by the value
        form, the target's as stored, hashed in migwatch."""
        from migwatch.targets.mongo.validation import MappedSourceSide, MongoSide
        from migwatch.validation.kinds import MILLISECONDS
        from migwatch.validation.postgres import PostgresDialect, collations

        client = mongo.client(self.endpoint, appname=names.VALIDATE_APPLICATION, tz_aware=False)
        closers.append(client.close)
        with mongo.translated(f"target ({self.endpoint.redacted()})"):
            decimal128 = supports_decimal128(client.admin.command("buildInfo"))
        form = DocumentForm(info, decimal128=decimal128,
                            json_string_columns=table.json_string_columns)
        refused = form.refusals()
        if refused:
            raise PermanentError(f"source {table.source}: a MongoDB target cannot hold it: "
                                 + "; ".join(refused))
        unreadable = [k for k in info.primary_key
                      if kind_of(info.column(k).value_type, info.column(k).enum)
                      not in READABLE_KEY_KINDS]
        if unreadable:
            raise PermanentError(f"source {table.source}: key column(s) {unreadable} cannot "
                                 "be read back from _id for comparison")
        with pg.translated("source"):  # the text forms ValueForm.select reads (before the
            source.rollback()          # snapshot: a SET inside it would end with it)
            source.autocommit = True
            source.execute(pg.SOURCE_SESSION)
            source.autocommit = False
        columns = [c.name for c in info.columns]
        result.method = ("md5 of each row's document — the source's mapped as the applier "
                         "maps it, the target's as stored — over primary-key ranges, in "
                         "migwatch")
        result.precision = MILLISECONDS
        coll = client[self.endpoint.database][table.target_table]
        return (MappedSourceSide(source, PostgresDialect(
                    info, columns, list(info.primary_key),
                    *collations(source, info, "source")), "source", form),
                MongoSide(coll, form, columns, on_rows=on_rows, keep_limit=keep_limit))

    def load_table(self, migration_id: str, table: TableSpec, info: pg.TableInfo,
                   source: Any, empty_first: bool, key_range: KeyRange | None = None,
                   resumed: bool = False,
                   on_rows: Callable[[int, int], None] | None = None) -> int:
        from migwatch.targets.mongo.load import load_into

        return load_into(self.spec, migration_id, table, info, source, empty_first,
                         key_range, upsert=resumed and key_range is not None, on_rows=on_rows)

    def load_plan(self, migration_id: str, table: str) -> list[KeyRange]:
        from migwatch.targets.mongo.load import read_plan

        with self._database() as db:
            return read_plan(db, migration_id, table)

    def save_load_plan(self, migration_id: str, table: str, ranges: list[KeyRange]) -> None:
        from migwatch.targets.mongo.load import save_plan

        with self._database() as db:
            save_plan(db, migration_id, table, ranges)

    def finish_load(self, migration_id: str, table: str, rows: int) -> None:
        from migwatch.targets.mongo.load import record_loaded

        with self._database() as db, mongo.translated(f"target: record {table} loaded"):
            record_loaded(db, migration_id, table, rows)

    def migrations_backend(self) -> Any:
        from migwatch.targets.mongo.migrations import MongoBackend

        return MongoBackend.from_endpoint(self.endpoint)
