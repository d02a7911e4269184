"""MongoDB (or FerretDB) as a validation side: documents paged by `_id`, hashed in migwatch.

MongoDB cannot hash server-side the way PostgreSQL does, so one pass pages the collection by
`_id` and renders each document to the canonical row text PostgreSQL computes in `text` mode
(`canonical.py`), bucketed by the same key bounds. A second pass, only when a bucket differs,
keeps the rows of the differing buckets. Timestamps are compared at milliseconds (BSON dates).
"""

from __future__ import annotations

import bisect
import datetime as dt
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from bson import Binary, Decimal128

from migwatch.connectors.mongo import translated
from migwatch.errors import UnsupportedValue
from migwatch.validation.base import Digest, Key, KeyRange, Side
from migwatch.validation.canonical import (
    MILLISECONDS,
    json_column_text,
    record_text,
    row_hash,
    value_text,
)

PAGE_SIZE = 5000
_BSON_ORDERED = {"int", "text", "uuid"}


def key_value(value: Any, kind: str) -> Any:
    """A key as PostgreSQL (psycopg) would return it, from its `_id` form."""
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if kind == "numeric":
        return value if isinstance(value, Decimal) else Decimal(str(value))
    if kind == "uuid":
        if isinstance(value, Binary):
            return uuid.UUID(bytes=bytes(value))
        return uuid.UUID(str(value))
    if kind in ("timestamptz", "timestamp") and isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware if kind == "timestamptz" else aware.replace(tzinfo=None)
    if kind == "date" and isinstance(value, dt.datetime):
        return value.date()
    if kind == "bytea":
        return bytes(value)
    return value


def _covers(outer: KeyRange, inner: KeyRange) -> bool:
    """Whether every key of `inner` lies in `outer`."""
    lo_ok = outer.lo is None or (inner.lo is not None and inner.lo >= outer.lo)
    hi_ok = outer.hi is None or (inner.hi is not None and inner.hi <= outer.hi)
    return lo_ok and hi_ok


class MongoSide(Side):
    """A collection holding a source table mapped by `migwatch.mapping`."""

    can_split = False

    def __init__(self, collection: Any, columns: Sequence[str], kinds: dict[str, str],
                 primary_key: Sequence[str], json_string_columns: Sequence[str] = (),
                 label: str = "target",
                 on_rows: Callable[[int], None] | None = None,
                 decimal128: bool = True) -> None:
        self.coll = collection
        self.columns = list(columns)
        self.kinds = kinds
        self.primary_key = list(primary_key)
        self.as_json = set(json_string_columns)
        self.label = label
        self.what = f"{label} collection {collection.name}"
        self.on_rows = on_rows
        self.decimal128 = decimal128  # how numeric keys are stored in `_id`
        self.unreadable: list[str] = []  # `_id`s that do not map back to a key
        self._rows: dict[Key, tuple[int, dict[str, Any]]] = {}
        self._prefetched: list[KeyRange] = []

    # --- reading ----------------------------------------------------------------------------
    def _documents(self, query: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Documents in `_id` order, fetched a page (`PAGE_SIZE` documents) per round trip.

        One sorted cursor rather than a fresh `{_id: {$gt: last}}` query per page: FerretDB
        does not push such a filter down, so each page query would scan the whole collection
        again (100k documents: 3 s with one cursor, 50 s with page queries)."""
        batch = 0
        with translated(self.what):
            cursor = self.coll.find(query or {}).sort("_id", 1).batch_size(PAGE_SIZE)
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

    def _range_filter(self, ranges: Sequence[KeyRange]) -> dict[str, Any] | None:
        """A server-side `_id` filter for `ranges`, when BSON orders these keys as the source
        does (integers, text in code-point order, uuid); None means read everything and filter
        here. MongoDB answers it from the `_id` index; FerretDB still scans, but migwatch then
        renders only the documents of the differing ranges."""
        if any(self.kinds[k] not in _BSON_ORDERED for k in self.primary_key) or len(ranges) > 50:
            return None
        from migwatch.mapping import key_to_id

        clauses = []
        for r in ranges:
            cond: dict[str, Any] = {}
            if r.lo is not None:
                cond["$gte"] = key_to_id(list(r.lo), self.primary_key)
            if r.hi is not None:
                cond["$lt"] = key_to_id(list(r.hi), self.primary_key)
            if not cond:
                return None
            clauses.append({"_id": cond})
        return clauses[0] if len(clauses) == 1 else {"$or": clauses}

    def _key(self, doc: dict[str, Any]) -> Key | None:
        _id = doc.get("_id")
        try:
            if len(self.primary_key) == 1:
                return (key_value(_id, self.kinds[self.primary_key[0]]),)
            if not isinstance(_id, dict):
                return None
            return tuple(key_value(_id[k], self.kinds[k]) for k in self.primary_key)
        except (KeyError, ValueError, TypeError, ArithmeticError):
            return None

    def _texts(self, key: Key, doc: dict[str, Any]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for c in self.columns:
            kind = self.kinds[c]
            if c in self.primary_key:
                v = doc["_id"] if len(self.primary_key) == 1 else doc["_id"][c]
            else:
                v = doc.get(c)
            try:
                if c in self.as_json and isinstance(v, str):
                    out[c] = json_column_text(v, kind, MILLISECONDS)
                else:
                    out[c] = value_text(v, kind, MILLISECONDS)
            except (ValueError, TypeError, ArithmeticError, AttributeError):
                out[c] = f"<unreadable {type(v).__name__}>"
        return out

    def _hash(self, texts: dict[str, str | None]) -> int:
        return row_hash(record_text(texts[c] for c in self.columns))

    # --- Side -------------------------------------------------------------------------------
    def bucket_digests(self, bounds: Sequence[Key], within: KeyRange) -> dict[int, Digest]:
        digests: dict[int, list[int]] = {}
        self.unreadable = []
        for doc in self._documents():
            key = self._key(doc)
            if key is None:
                self.unreadable.append(repr(doc.get("_id"))[:80])
                continue
            if not within.contains(key):
                continue
            try:
                b = bisect.bisect_right(bounds, key)
            except TypeError:
                self.unreadable.append(repr(doc.get("_id"))[:80])
                continue
            h = self._hash(self._texts(key, doc))
            acc = digests.setdefault(b, [0, 0])
            acc[0] += 1
            acc[1] ^= h
        return {b: (n, h) for b, (n, h) in digests.items()}

    def prefetch(self, ranges: Sequence[KeyRange]) -> None:
        """Keep the rows of `ranges` (one more pass) for row_digests and column_tokens; a no-op
        when the rows already kept cover them (locating inside a prefetched range)."""
        if all(any(_covers(p, r) for p in self._prefetched) for r in ranges):
            return
        self._rows = {}
        self._prefetched = list(ranges)
        for doc in self._documents(self._range_filter(ranges)):
            key = self._key(doc)
            if key is None:
                continue
            try:
                if any(r.contains(key) for r in ranges):
                    texts = self._texts(key, doc)
                    self._rows[key] = (self._hash(texts), texts)
            except TypeError:
                continue

    def new_snapshot(self) -> None:
        self._rows = {}
        self._prefetched = []

    def key_hashes(self, keys: Sequence[Key]) -> dict[Key, int]:
        """Read the documents of `keys` by `_id` (kept for column_tokens) and hash them."""
        from migwatch.mapping import key_to_id

        self._rows = {}
        self._prefetched = []
        ids = []
        for key in keys:
            try:
                ids.append(key_to_id(list(key), self.primary_key, decimal128=self.decimal128))
            except UnsupportedValue:  # a key the applier could not store either
                continue
        for i in range(0, len(ids), 1000):
            with translated(self.what):
                docs = list(self.coll.find({"_id": {"$in": ids[i:i + 1000]}}))
            for doc in docs:
                found = self._key(doc)
                if found is not None:
                    texts = self._texts(found, doc)
                    self._rows[found] = (self._hash(texts), texts)
        return {k: h for k, (h, _) in self._rows.items()}

    def row_digests(self, within: KeyRange) -> dict[Key, int]:
        return {k: h for k, (h, _) in self._rows.items() if within.contains(k)}

    def keys(self, within: KeyRange, limit: int) -> list[Key]:
        return sorted(k for k in self._rows if within.contains(k))[:limit]

    def column_tokens(self, keys: Sequence[Key]) -> dict[Key, dict[str, tuple[Any, str | None]]]:
        out = {}
        for key in keys:
            if key in self._rows:
                texts = self._rows[key][1]
                out[key] = {c: (t, t) for c, t in texts.items()}
        return out
