"""A MongoDB (or FerretDB) target compared with its PostgreSQL source, both as documents.

Both sides turn every row into the document the applier would write — the source's rows read
with `ValueForm.select` and mapped by `targets.mongo_values` (the one definition the applier
writes by), the target's documents as stored — and hash each row from its values' canonical
texts (`mongo_values.canonical`), in migwatch. So a hash differs only where a stored value is
not the value the source maps to; no second rendering of values exists to disagree with it.

MongoDB cannot digest key ranges server-side, and FerretDB scans for any `_id` filter, so the
target side reads whole passes in `_id` order and buckets documents by their key, mapped back
from `_id` (`mongo_values.key_value`). Rows of differing ranges are kept as (key → hash) only,
and only up to the comparison's `locate_limit` (`MongoSide.prefetch`); values are read again by
`_id` for the few rows a sample shows.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from migwatch.connectors import postgres as pg
from migwatch.connectors.mongo import translated
from migwatch.errors import UnsupportedValue
from migwatch.targets.mongo.values import (
    DocumentForm,
    canonical,
    display,
    key_value,
    row_hash,
)
from migwatch.validation.base import Digest, Key, KeyRange, Side
from migwatch.validation.postgres import PostgresDialect, PostgresSide

PAGE_SIZE = 5000
#: a value the target cannot hold: its canonical text, never equal to a stored value's
REFUSED = "!refused"


def _covers(outer: KeyRange, inner: KeyRange) -> bool:
    """Whether every key of `inner` lies in `outer`."""
    lo_ok = outer.lo is None or (inner.lo is not None and inner.lo >= outer.lo)
    hi_ok = outer.hi is None or (inner.hi is not None and inner.hi <= outer.hi)
    return lo_ok and hi_ok


def _bucket(bounds: Sequence[Key], key: Key) -> int | None:
    try:
        return bisect.bisect_right(bounds, key)
    except TypeError:  # a key of another type than the source's
        return None


def _digests(rows: Iterator[tuple[Key, int]], bounds: Sequence[Key],
             within: KeyRange) -> dict[int, Digest]:
    acc: dict[int, list[int]] = {}
    for key, h in rows:
        if not within.contains(key):
            continue
        b = _bucket(bounds, key)
        if b is None:
            continue
        d = acc.setdefault(b, [0, 0])
        d[0] += 1
        d[1] ^= h
    return {b: (n, h) for b, (n, h) in acc.items()}


class DocumentHash:
    """A row's hash and column tokens from its document values, in the compared columns' order."""

    def __init__(self, form: DocumentForm, columns: Sequence[str]) -> None:
        self.form = form
        self.columns = list(columns)
        self._index = [form.columns.index(c) for c in self.columns]

    def texts(self, values: Sequence[Any]) -> list[str]:
        return [canonical(values[i]) for i in self._index]

    def of(self, values: Sequence[Any]) -> int:
        return row_hash(self.texts(values))

    def tokens(self, values: Sequence[Any]) -> dict[str, tuple[Any, str | None]]:
        return {c: (canonical(values[i]), display(values[i]))
                for c, i in zip(self.columns, self._index, strict=True)}


# ----------------------------------------------------------------------------- the source
class MappedSourceSide(PostgresSide):
    """The PostgreSQL source, each row mapped to its document: keys, counts, cut points and row
    versions from SQL, row hashes from the mapped values (streamed, a batch at a time)."""

    def __init__(self, conn: psycopg.Connection, dialect: PostgresDialect, label: str,
                 form: DocumentForm) -> None:
        super().__init__(conn, dialect, label)
        self.form = form
        self.hashing = DocumentHash(form, dialect.columns)
        # named apart from the key columns, which ORDER BY would else find twice
        self.select = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(form.forms[c].select(sql.Identifier(c)),
                                       sql.Identifier(f"_v{i}"))
            for i, c in enumerate(form.columns))

    def _values(self, raw: Sequence[Any]) -> list[Any]:
        """A row's document values in the table's column order; a value the target cannot
        hold becomes REFUSED (the row then differs from whatever the target holds)."""
        out = []
        for c, v in zip(self.form.columns, raw, strict=True):
            try:
                out.append(self.form.forms[c].to_bson(v))
            except UnsupportedValue as exc:
                out.append(f"{REFUSED}: {exc}")
        return out

    def _rows(self, where: sql.Composable, params: Sequence[Any], versions: bool = False,
              ) -> Iterator[tuple[Key, list[Any], str | None]]:
        """(key, document values, row version) of the rows `where` selects, in key order."""
        n = len(self.d.primary_key)
        version = sql.SQL(", xmin::text") if versions else sql.SQL(", NULL")
        query = sql.SQL("SELECT {keys}{version}, {values} FROM {table} WHERE {where} "
                        "ORDER BY {order}").format(
            keys=self.d.key_list(), version=version, values=self.select, table=self.d.table,
            where=where, order=self.d.order_by())
        rows = self.batches(query, params, PAGE_SIZE)
        try:
            for batch in rows:
                for r in batch:
                    yield tuple(r[:n]), self._values(r[n + 1:]), r[n]
        finally:
            rows.close()

    def _hashes(self, within: KeyRange | Sequence[KeyRange]) -> Iterator[tuple[Key, int]]:
        where, params = self.d.where_any(within)
        for key, values, _ in self._rows(where, params):
            yield key, self.hashing.of(values)

    def bucket_digests(self, bounds: Sequence[Key],
                       within: KeyRange | Sequence[KeyRange]) -> dict[int, Digest]:
        rng = within if isinstance(within, KeyRange) else KeyRange()
        return _digests(self._hashes(within), bounds, rng)

    def row_digests_in(self, ranges: Sequence[KeyRange],
                       bounds: Sequence[Key]) -> dict[int, dict[Key, int]]:
        out: dict[int, dict[Key, int]] = {}
        for key, h in self._hashes(ranges):
            b = _bucket(bounds, key) if bounds else 0
            if b is not None:
                out.setdefault(b, {})[key] = h
        return out

    def _by_keys(self, keys: Sequence[Key], versions: bool = False,
                 ) -> Iterator[tuple[Key, list[Any], str | None]]:
        for i in range(0, len(keys), 500):
            where, params = self.d._keys_in(keys[i:i + 500])
            yield from self._rows(where, params, versions)

    def key_hashes(self, keys: Sequence[Key]) -> dict[Key, int]:
        return {k: self.hashing.of(v) for k, v, _ in self._by_keys(keys)}

    def key_versions(self, keys: Sequence[Key]) -> dict[Key, tuple[str, int]]:
        return {k: (str(ver), self.hashing.of(v)) for k, v, ver in self._by_keys(keys, True)}

    def column_tokens(self, keys: Sequence[Key]) -> dict[Key, dict[str, tuple[Any, str | None]]]:
        return {k: self.hashing.tokens(v) for k, v, _ in self._by_keys(keys)}

    def range_versions(self, within: KeyRange | None) -> tuple[int, int, int]:
        """(rows, data digest, version digest) of a range, in this side's snapshot."""
        rng = within or KeyRange()
        where, params = self.d.range_where(rng)
        n, h = 0, 0
        for _, values, _ in self._rows(where, params):
            n += 1
            h ^= self.hashing.of(values)
        with pg.translated(self.what):  # the same snapshot: every write moves (xmin, ctid)
            row = self.conn.execute(sql.SQL(
                "SELECT coalesce(bit_xor(hashtextextended(xmin::text || ctid::text, 0)), 0) "
                "FROM {} WHERE {}").format(self.d.table, where), params).fetchone()
        return n, h, int(row[0]) if row else 0


# ----------------------------------------------------------------------------- the target
class MongoSide(Side):
    """A collection holding a source table's documents (see the module doc)."""

    can_split = False

    def __init__(self, collection: Any, form: DocumentForm, columns: Sequence[str],
                 label: str = "target", on_rows: Callable[[int], None] | None = None,
                 keep_limit: int = 200_000) -> None:
        self.coll = collection
        self.form = form
        self.hashing = DocumentHash(form, columns)
        self.key_columns = [next(c for c in form.info.columns if c.name == k)
                            for k in form.primary_key]
        self.label = label
        self.what = f"{label} collection {collection.name}"
        self.on_rows = on_rows
        #: at most this many rows kept (key → hash) by `prefetch`
        self.keep_limit = keep_limit
        self.unreadable: list[str] = []  # `_id`s that do not map back to a key
        self._rows: dict[Key, int] = {}
        self._prefetched: list[KeyRange] = []

    # --- reading ----------------------------------------------------------------------------
    def _documents(self) -> Iterator[dict[str, Any]]:
        """Every document in `_id` order, a page (`PAGE_SIZE` documents) per round trip.

        One sorted cursor rather than a fresh `{_id: {$gt: last}}` query per page: FerretDB
        does not push such a filter down, so each page query would scan the whole collection
        again (100k documents: 3 s with one cursor, 50 s with page queries)."""
        batch = 0
        with translated(self.what):
            cursor = self.coll.find({}).sort("_id", 1).batch_size(PAGE_SIZE)
            try:
                for doc in cursor:
                    yield doc
                    batch += 1
                    if batch == PAGE_SIZE:
                        if self.on_rows is not None:
                            self.on_rows(batch)
                        batch = 0
            finally:
                cursor.close()
        if self.on_rows is not None and batch:
            self.on_rows(batch)

    def key_of(self, doc: dict[str, Any]) -> Key | None:
        """The source key a document's `_id` stands for; None when it stands for none."""
        _id = doc.get("_id")
        try:
            if len(self.key_columns) == 1:
                return (key_value(_id, self.key_columns[0]),)
            if not isinstance(_id, dict) or len(_id) != len(self.key_columns):
                return None
            return tuple(key_value(_id[c.name], c) for c in self.key_columns)
        except (KeyError, ValueError, TypeError, ArithmeticError):
            return None

    def _hashes(self) -> Iterator[tuple[Key, int]]:
        self.unreadable = []
        for doc in self._documents():
            key = self.key_of(doc)
            if key is None:
                self.unreadable.append(repr(doc.get("_id"))[:80])
                continue
            yield key, self.hashing.of(self.form.values(doc))

    # --- Side -------------------------------------------------------------------------------
    def bucket_digests(self, bounds: Sequence[Key], within: KeyRange) -> dict[int, Digest]:
        return _digests(self._hashes(), bounds, within)

    def prefetch(self, ranges: Sequence[KeyRange]) -> None:
        """Keep (key → hash) of the rows of `ranges` — one more pass — for row_digests; a no-op
        when the rows kept already cover them. Keeps at most `keep_limit` rows: the ranges past
        it are the comparison's unlocated ones."""
        if all(any(_covers(p, r) for p in self._prefetched) for r in ranges):
            return
        self._rows = {}
        self._prefetched = list(ranges)
        for key, h in self._hashes():
            try:
                if any(r.contains(key) for r in ranges):
                    self._rows[key] = h
            except TypeError:
                continue
            if len(self._rows) >= self.keep_limit:
                break

    def new_snapshot(self) -> None:
        self._rows = {}
        self._prefetched = []

    def _by_keys(self, keys: Sequence[Key]) -> Iterator[tuple[Key, list[Any]]]:
        """The documents of `keys`, read by `_id` (1000 per query)."""
        ids = []
        for key in keys:
            try:
                ids.append(self.form.id(key))
            except UnsupportedValue:  # a key the applier could not store either
                continue
        for i in range(0, len(ids), 1000):
            with translated(self.what):
                docs = list(self.coll.find({"_id": {"$in": ids[i:i + 1000]}}))
            for doc in docs:
                found = self.key_of(doc)
                if found is not None:
                    yield found, self.form.values(doc)

    def key_hashes(self, keys: Sequence[Key]) -> dict[Key, int]:
        return {k: self.hashing.of(v) for k, v in self._by_keys(keys)}

    def row_digests(self, within: KeyRange) -> dict[Key, int]:
        return {k: h for k, h in self._rows.items() if within.contains(k)}

    def keys(self, within: KeyRange, limit: int) -> list[Key]:
        return sorted(k for k in self._rows if within.contains(k))[:limit]

    def column_tokens(self, keys: Sequence[Key]) -> dict[Key, dict[str, tuple[Any, str | None]]]:
        return {k: self.hashing.tokens(v) for k, v in self._by_keys(keys)}

    def count(self) -> int:
        with translated(self.what):
            return int(self.coll.count_documents({}))
