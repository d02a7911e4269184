"""PostgreSQL as a validation side: the dialect builds SQL (pure), the side runs it (I/O).

Range hashes are computed inside the database — rows of a matching range never leave it:

    SELECT width_bucket(<key>, <bounds>) b, count(*), bit_xor(h)
    FROM (SELECT <key>, <row hash> h FROM t WHERE <range>) s GROUP BY b

The row hash is `hash_record_extended(ROW(c1, c2, …), 0)` — the types' own hash functions,
which already make equal values hash equal (numeric 1.0 = 1.00, jsonb key order, bpchar
padding, int4 = int8) at full (microsecond) timestamp precision, without rendering text; it
needs PostgreSQL 14+ (`hash_record_extended`, `bit_xor`). A MongoDB target is compared as
documents instead (`validation/mongo.py`), with keys, counts and cut points from here.

Keys are ordered in ONE byte order on both sides, whatever their collations: every comparison,
ORDER BY and `width_bucket` of a key column with a collation says `COLLATE "C"` — unless the
column's own collation already orders bytewise (C, POSIX, C.UTF-8: `byte_ordered_keys`), which
keeps the primary-key index usable. Source and target then cut and bucket keys identically, and
migwatch's own (code point) order of `str` agrees with both.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Iterator, Sequence
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import sql

from migwatch.config import split_qualified
from migwatch.connectors import postgres as pg
from migwatch.errors import PermanentError
from migwatch.validation.base import Digest, Key, KeyRange, Side
from migwatch.validation.kinds import byte_ordered_keys, column_kind

SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex'; "
    # a merge reads its cursors to the end: plan them for all rows, not the first ones
    "SET cursor_tuple_fraction = 1"
)

_HASHABLE = {"int", "numeric", "float4", "float8", "bool", "text", "bpchar", "timestamptz",
             "timestamp", "date", "time", "timetz", "interval", "jsonb", "bytea", "uuid"}
_TEXT_KEY_KINDS = {"text", "bpchar"}
#: key kinds whose Python values (as psycopg returns them) order exactly as PostgreSQL orders
#: them (text under "C"); other keys are merged in the order of their text (`merge_query`)
_PY_ORDERED = {"int", "numeric", "text", "uuid", "date", "timestamp", "timestamptz", "bool",
               "bytea"}
#: types of kind "text" that do not order by their characters
_UNORDERED_TEXT_TYPES = {"citext"}


def coalesced(ranges: Sequence[KeyRange]) -> list[KeyRange]:
    """`ranges` with each run of adjacent ones (one's `hi` the next one's `lo`) joined."""
    out: list[KeyRange] = []
    for rng in ranges:
        if out and out[-1].hi is not None and out[-1].hi == rng.lo:
            out[-1] = KeyRange(out[-1].lo, rng.hi)
        else:
            out.append(rng)
    return out


class PostgresDialect:
    """SQL for one table on one PostgreSQL server. Pure: builds, never runs."""

    def __init__(self, info: pg.TableInfo, columns: Sequence[str], primary_key: Sequence[str],
                 collated: Collection[str] | None = None,
                 byte_ordered: Collection[str] = ()) -> None:
        """`collated`: the key columns that have a collation (None: those of text kinds);
        `byte_ordered`: those whose collation already orders bytewise (no `COLLATE "C"`)."""
        self.info = info
        self.columns = list(columns)
        self.primary_key = list(primary_key)
        self.table = info.ident
        self.kinds = {c.name: column_kind(c.type) for c in info.columns}
        self.types = {c.name: c.type for c in info.columns}
        if collated is None:
            collated = [k for k in self.primary_key if self.kinds[k] in _TEXT_KEY_KINDS]
        self.collated = set(collated)
        #: key columns compared, ordered and bucketed with `COLLATE "C"`
        self.c_keys = self.collated - set(byte_ordered)
        #: whether Python orders this table's keys as the database does (see `merge_query`)
        self.py_ordered = all(
            self.kinds[k] in _PY_ORDERED and self.types[k] not in _UNORDERED_TEXT_TYPES
            for k in self.primary_key)

    # --- expressions ----------------------------------------------------------------------
    def _hash_input(self, column: str) -> sql.Composable:
        """What of a column the row hash covers: the value as its type hashes it, except
        json — its exact text (a PostgreSQL target keeps json's spacing and key order, and a
        value holding \u0000 has no jsonb form) —, arrays — with their bounds, which the
        array hash leaves out (`[0:2]={1,2,3}` hashes as `{1,2,3}`) — and timetz — at UTC:
        Debezium carries the instant, not the offset (docs/types.md)."""
        ident = sql.Identifier(column)
        kind = self.kinds[column]
        if kind == "json":
            return sql.SQL("{}::text").format(ident)
        if kind == "timetz":
            return sql.SQL("({} AT TIME ZONE 'UTC')").format(ident)
        if kind.startswith("array:"):
            base = kind[6:]
            if base == "timetz":  # each element at UTC, in order (array_dims keeps the shape)
                value: sql.Composable = sql.SQL(
                    "(SELECT array_agg(e AT TIME ZONE 'UTC' ORDER BY n) "
                    "FROM unnest({}) WITH ORDINALITY AS u(e, n))").format(ident)
            elif base in _HASHABLE and base != "json":
                value = ident
            else:
                value = sql.SQL("{}::text").format(ident)
            return sql.SQL("{}, array_dims({})").format(value, ident)
        if kind not in _HASHABLE:
            return sql.SQL("{}::text").format(ident)
        return ident

    def text_expr(self, column: str) -> sql.Composable:
        """A column's text, to show a differing value."""
        return sql.SQL("{}::text").format(sql.Identifier(column))

    def row_hash(self) -> sql.Composable:
        return sql.SQL("hash_record_extended(ROW({}), 0)").format(
            sql.SQL(", ").join(self._hash_input(c) for c in self.columns))

    def _key_column(self, column: str) -> sql.Composable:
        ident = sql.Identifier(column)
        if column in self.c_keys:
            return sql.SQL('{} COLLATE "C"').format(ident)
        return ident

    def key_expr(self) -> sql.Composable:
        cols = [self._key_column(k) for k in self.primary_key]
        if len(cols) == 1:
            return cols[0]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(cols))

    def bucket_key(self) -> sql.Composable:
        """The key as `width_bucket` takes it. A composite key is a record, compared field by
        field in each field's collation, which must be the same in the key and in the bounds
        (`_key_value(collate=True)`): every collated field says "C" there, even where the
        column's own collation already orders bytewise."""
        if len(self.primary_key) == 1:
            return self.key_expr()
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL('{} COLLATE "C"').format(sql.Identifier(k)) if k in self.collated
            else sql.Identifier(k) for k in self.primary_key))

    def key_list(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(k) for k in self.primary_key)

    def order_by(self) -> sql.Composable:
        return sql.SQL(", ").join(self._key_column(k) for k in self.primary_key)

    def _key_value(self, key: Key, collate: bool = False) -> tuple[sql.Composable, list[Any]]:
        """`(%s, %s)` (or `%s`) for a key value, typed as this side's key columns; with
        `collate`, "C" for collated columns (`bucket_key`; a comparison with the key
        expression takes the key's collation without it)."""
        parts = [sql.SQL('%s::{} COLLATE "C"' if collate and k in self.collated else "%s::{}")
                 .format(sql.SQL(self.types[k])) for k in self.primary_key]
        if len(parts) == 1:
            return parts[0], [key[0]]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(parts)), list(key)

    def range_where(self, within: KeyRange) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        for op, bound in ((">=", within.lo), ("<", within.hi)):
            if bound is None:
                continue
            value, p = self._key_value(bound)
            clauses.append(sql.SQL("{} {} {}").format(self.key_expr(), sql.SQL(op), value))
            params += p
        if not clauses:
            return sql.SQL("true"), []
        return sql.SQL(" AND ").join(clauses), params

    def where_any(self, within: KeyRange | Sequence[KeyRange]) -> tuple[sql.Composable,
                                                                       list[Any]]:
        """Keys in a range, or in any of several (an OR of ranges: one index scan each; each
        run of adjacent ranges is one range — a row tests fewer clauses)."""
        ranges = [within] if isinstance(within, KeyRange) else coalesced(within)
        if len(ranges) == 1:
            return self.range_where(ranges[0])
        parts: list[sql.Composable] = []
        params: list[Any] = []
        for r in ranges:
            where, p = self.range_where(r)
            parts.append(sql.SQL("({})").format(where))
            params += p
        return sql.SQL(" OR ").join(parts), params

    def bucket_expr(self, bounds: Sequence[Key], on: sql.Composable) -> tuple[sql.Composable,
                                                                             list[Any]]:
        """`width_bucket(on, bounds)`: bucket i holds bounds[i-1] <= key < bounds[i].

        Without bounds every key is in bucket 0: the constant, not `width_bucket` over an empty
        array (`ARRAY[]` has no type PostgreSQL can infer for a composite key)."""
        if not bounds:
            return sql.SQL("0"), []
        if len(self.primary_key) == 1:
            return sql.SQL("width_bucket({}, %s::{}[])").format(
                on, sql.SQL(self.types[self.primary_key[0]])), [[b[0] for b in bounds]]
        items = []
        params: list[Any] = []
        for b in bounds:
            value, p = self._key_value(b, collate=True)
            items.append(value)
            params += p
        return sql.SQL("width_bucket({}, ARRAY[{}])").format(
            on, sql.SQL(", ").join(items)), params

    # --- queries --------------------------------------------------------------------------
    def bucket_query(self, bounds: Sequence[Key], within: KeyRange | Sequence[KeyRange],
                     ) -> tuple[sql.Composed, list[Any]]:
        """(bucket, rows, xor of row hashes) per bucket; without bounds one plain aggregate
        (no grouping: a whole-table digest costs little more than reading the rows)."""
        where, params = self.where_any(within)
        if not bounds:
            return sql.SQL(
                "SELECT 0, count(*), coalesce(bit_xor({hash}), 0) FROM {table} WHERE {where}"
            ).format(hash=self.row_hash(), table=self.table, where=where), params
        bucket, bparams = self.bucket_expr(bounds, sql.SQL("k"))
        query = sql.SQL(
            "SELECT {bucket} AS b, count(*), coalesce(bit_xor(h), 0) "
            "FROM (SELECT {key} AS k, {hash} AS h FROM {table} WHERE {where}) s GROUP BY 1"
        ).format(bucket=bucket, key=self.bucket_key(), hash=self.row_hash(), table=self.table,
                 where=where)
        return query, bparams + params  # the bucket expression comes first in the text

    def row_digest_query(self, within: KeyRange | Sequence[KeyRange],
                         bounds: Sequence[Key] = ()) -> tuple[sql.Composed, list[Any]]:
        """Key columns and row hash of every row in range(s); with `bounds`, each row's
        bucket first."""
        where, params = self.where_any(within)
        bucket, bparams = self.bucket_expr(bounds, self.bucket_key()) if bounds \
            else (sql.SQL("0"), [])
        return sql.SQL("SELECT {bucket}, {keys}, {hash} FROM {table} WHERE {where}").format(
            bucket=bucket, keys=self.key_list(), hash=self.row_hash(), table=self.table,
            where=where), bparams + params

    def boundaries_in_query(self, ranges: Sequence[KeyRange], bounds: Sequence[Key],
                            every: Sequence[int]) -> tuple[sql.Composed, list[Any]]:
        """Every `every[b]`-th key of each bucket b of `bounds` (restricted to `ranges`), with
        its bucket: the cut points of several ranges in one query."""
        where, params = self.where_any(ranges)
        bucket, bparams = self.bucket_expr(bounds, self.bucket_key())
        return sql.SQL(
            "SELECT b, {keys} FROM (SELECT b, {keys}, row_number() OVER (PARTITION BY b "
            "ORDER BY {order}) AS rn FROM (SELECT {bucket} AS b, {keys} FROM {table} "
            "WHERE {where}) s1) s2 WHERE rn %% (%s::int[])[b + 1] = 0 ORDER BY b, rn"
        ).format(keys=self.key_list(), bucket=bucket, order=self.order_by(), table=self.table,
                 where=where), bparams + params + [list(every)]

    def merge_query(self, ranges: Sequence[KeyRange], bounds: Sequence[Key],
                    ) -> tuple[sql.Composed, list[Any]]:
        """Bucket of `bounds`, key columns and row hash of every row in `ranges`, in merge
        order: by key when Python orders these keys as the database does (`py_ordered`: the
        bucket then grows with the key), else by bucket and then by the key columns' text
        under "C" (selected after the key columns, for migwatch to compare)."""
        where, params = self.where_any(ranges)
        bucket, bparams = self.bucket_expr(bounds, self.bucket_key())
        if self.py_ordered:
            texts: sql.Composable = sql.SQL("")
            order = self.order_by()
        else:
            cols = [sql.SQL('{}::text COLLATE "C"').format(sql.Identifier(k))
                    for k in self.primary_key]
            texts = sql.SQL(", {}").format(sql.SQL(", ").join(cols))
            order = sql.SQL("1, {}").format(sql.SQL(", ").join(cols))
        return sql.SQL("SELECT {bucket}, {keys}{texts}, {hash} FROM {table} WHERE {where} "
                       "ORDER BY {order}").format(
            bucket=bucket, keys=self.key_list(), texts=texts, hash=self.row_hash(),
            table=self.table, where=where, order=order), bparams + params

    def keys_query(self, within: KeyRange, limit: int) -> tuple[sql.Composed, list[Any]]:
        where, params = self.range_where(within)
        return sql.SQL("SELECT {keys} FROM {table} WHERE {where} ORDER BY {order} LIMIT %s").format(
            keys=self.key_list(), table=self.table, where=where, order=self.order_by()
        ), [*params, limit]

    def boundaries_query(self, within: KeyRange, every: int) -> tuple[sql.Composed, list[Any]]:
        """Every `every`-th key of a range, in key order: the cut points of its sub-ranges."""
        where, params = self.range_where(within)
        return sql.SQL(
            "SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {order}) AS rn "
            "FROM {table} WHERE {where}) s WHERE rn %% %s = 0 ORDER BY {order}"
        ).format(keys=self.key_list(), order=self.order_by(), table=self.table, where=where), \
            [*params, every]

    def int_span_query(self, with_count: bool = True) -> sql.Composed:
        """min and max of an integer key (from the index) and, unless known, the row count."""
        k = sql.Identifier(self.primary_key[0])
        count = sql.SQL("count(*)") if with_count else sql.SQL("NULL::bigint")
        return sql.SQL("SELECT min({k}), max({k}), {n} FROM {t}").format(k=k, n=count,
                                                                          t=self.table)

    def _keys_in(self, keys: Sequence[Key]) -> tuple[sql.Composable, list[Any]]:
        if not keys:  # `IN ()` is a syntax error; no key matches no row
            return sql.SQL("false"), []
        values = []
        params: list[Any] = []
        for key in keys:  # equality: the same under every deterministic collation, and the
            v, p = self._key_value(key)  # index (in the key's own collation) serves it
            values.append(v if len(self.primary_key) > 1 else sql.SQL("({})").format(v))
            params += p
        lhs = sql.SQL("({})").format(self.key_list()) if len(self.primary_key) > 1 \
            else sql.Identifier(self.primary_key[0])
        return sql.SQL("{} IN ({})").format(lhs, sql.SQL(", ").join(values)), params

    def column_tokens_query(self, keys: Sequence[Key]) -> tuple[sql.Composed, list[Any]]:
        """Per key: every column's hash and its text."""
        cond, params = self._keys_in(keys)
        tokens = [sql.SQL("hash_record_extended(ROW({}), 0)").format(self._hash_input(c))
                  for c in self.columns]
        texts = [self.text_expr(c) for c in self.columns]
        return sql.SQL("SELECT {keys}, {tokens}, {texts} FROM {table} WHERE {cond}").format(
            keys=self.key_list(), tokens=sql.SQL(", ").join(tokens),
            texts=sql.SQL(", ").join(texts), table=self.table, cond=cond), params

    def rows_query(self, keys: Sequence[Key]) -> tuple[sql.Composed, list[Any]]:
        cond, params = self._keys_in(keys)
        return sql.SQL("SELECT {cols} FROM {table} WHERE {cond}").format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in self.columns),
            table=self.table, cond=cond), params

    def key_hashes_query(self, keys: Sequence[Key], versions: bool = False,
                         ) -> tuple[sql.Composed, list[Any]]:
        """Key columns, the row hash and (with `versions`) the row version of the rows `keys`.

        The version is the row's `xmin`: every UPDATE writes a new row version with the
        writing transaction's id, so an unchanged `xmin` proves the row was not written in
        between — even when it was written back to an equal value."""
        cond, params = self._keys_in(keys)
        version = sql.SQL(", xmin::text") if versions else sql.SQL("")
        return sql.SQL("SELECT {keys}{version}, {hash} FROM {table} WHERE {cond}").format(
            keys=self.key_list(), version=version, hash=self.row_hash(), table=self.table,
            cond=cond), params

    def range_versions_query(self, within: KeyRange | None) -> tuple[sql.Composed, list[Any]]:
        """(rows, data digest, version digest) of a range, or of the whole table (None).

        The data digest is the one the target is compared with (bit_xor of row hashes over a
        range, the order-free sum for a table without primary key); the version digest folds
        each row's (xmin, ctid), unique per row version, so any write in the range moves it."""
        where, params = self.range_where(within) if within is not None \
            else (sql.SQL("true"), [])
        fold = sql.SQL("sum") if within is None else sql.SQL("bit_xor")
        return sql.SQL(
            "SELECT count(*), coalesce({fold}(h), 0), coalesce(bit_xor(v), 0) FROM (SELECT "
            "{hash} AS h, hashtextextended(xmin::text || ctid::text, 0) AS v FROM {table} "
            "WHERE {where}) s").format(fold=fold, hash=self.row_hash(), table=self.table,
                                       where=where), params

    def count_query(self) -> sql.Composed:
        return sql.SQL("SELECT count(*) FROM {}").format(self.table)

    def whole_table_query(self) -> sql.Composed:
        """Tables without a primary key: a count and an order-free SUM of row hashes."""
        return sql.SQL("SELECT count(*), coalesce(sum(h), 0) FROM (SELECT {hash} AS h FROM {t}) s"
                       ).format(hash=self.row_hash(), t=self.table)


def open_connection(conninfo: str, what: str,
                    statement_timeout_seconds: float | None = None) -> psycopg.Connection:
    """A read-only REPEATABLE READ session with the settings value texts depend on; the
    server cancels a statement running longer than `statement_timeout_seconds` (a bound that
    holds where a Prefect timeout cannot interrupt a task's blocking call)."""
    conn = pg.connect(conninfo, what, autocommit=True)
    with pg.translated(what):
        conn.execute(SESSION_SETTINGS)
        if statement_timeout_seconds:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(
                sql.Literal(int(statement_timeout_seconds * 1000))))
        version = conn.info.server_version
        if version < 140000:
            conn.close()
            raise PermanentError(f"{what}: validation needs PostgreSQL 14 or newer "
                                 f"(hash_record_extended, bit_xor); server is {version}")
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
    return conn


class PostgresSide(Side):
    """A PostgreSQL table as one side of a comparison; one snapshot for its whole life."""

    def __init__(self, conn: psycopg.Connection, dialect: PostgresDialect, label: str) -> None:
        self.conn = conn
        self.d = dialect
        self.label = label
        self.what = f"{label} {dialect.info.qualified}"
        self.cursors = 0  # server-side cursors opened (their names differ within a session)

    def _run(self, query: sql.Composed | sql.SQL,
             params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with pg.translated(self.what):
            return self.conn.execute(query, params).fetchall()

    def bucket_digests(self, bounds: Sequence[Key],
                       within: KeyRange | Sequence[KeyRange]) -> dict[int, Digest]:
        query, params = self.d.bucket_query(bounds, within)
        return {int(b): (int(n), int(h)) for b, n, h in self._run(query, params)}

    def row_digests(self, within: KeyRange) -> dict[Key, int]:
        return self.row_digests_in([within], []).get(0, {})

    def row_digests_in(self, ranges: Sequence[KeyRange],
                       bounds: Sequence[Key]) -> dict[int, dict[Key, int]]:
        """Row hashes of several ranges in one query, by bucket of `bounds`."""
        query, params = self.d.row_digest_query(ranges, bounds)
        n = len(self.d.primary_key)
        out: dict[int, dict[Key, int]] = {}
        for r in self._run(query, params):
            out.setdefault(int(r[0]), {})[tuple(r[1:n + 1])] = int(r[n + 1])
        return out

    def boundaries_in(self, ranges: Sequence[KeyRange], bounds: Sequence[Key],
                      every: Sequence[int]) -> dict[int, list[Key]]:
        """Cut points per bucket of `bounds`: every `every[b]`-th key, in key order."""
        query, params = self.d.boundaries_in_query(ranges, bounds, every)
        out: dict[int, list[Key]] = {}
        for r in self._run(query, params):
            out.setdefault(int(r[0]), []).append(tuple(r[1:]))
        return out

    def merge_rows(self, ranges: Sequence[KeyRange], bounds: Sequence[Key],
                   batch_rows: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of `ranges` in merge order (`PostgresDialect.merge_query`), a batch at a
        time through a server-side cursor in this side's snapshot: memory holds one batch,
        however many rows the ranges hold. Close the iterator to close the cursor."""
        query, params = self.d.merge_query(ranges, bounds)
        # binary rows load faster; keys of other types stay text (as every other query reads
        # them: a key must come back as the same value whichever query read it)
        return self.batches(query, params, batch_rows, binary=self.d.py_ordered)

    def batches(self, query: sql.Composed, params: Sequence[Any], batch_rows: int,
                binary: bool = False) -> Generator[list[tuple[Any, ...]], None, None]:
        """A query's rows a batch at a time through a server-side cursor in this side's
        snapshot: memory holds one batch. Close the iterator to close the cursor."""
        self.cursors += 1
        cur = self.conn.cursor(name=f"migwatch_rows_{self.cursors}", binary=binary)
        try:
            with pg.translated(self.what):
                cur.execute(query, params)
            while True:
                with pg.translated(self.what):
                    rows = cur.fetchmany(batch_rows)
                if not rows:
                    return
                yield rows
        finally:
            with suppress(psycopg.Error):
                cur.close()

    @property
    def estimated_rows(self) -> int:
        """The planner's row estimate (pg_class.reltuples); 0 when never analyzed."""
        return self.d.info.estimated_rows

    def keys(self, within: KeyRange, limit: int) -> list[Key]:
        query, params = self.d.keys_query(within, limit)
        return [tuple(r) for r in self._run(query, params)]

    def boundaries(self, within: KeyRange, every: int) -> list[Key]:
        query, params = self.d.boundaries_query(within, max(1, every))
        return [tuple(r) for r in self._run(query, params)]

    def int_span(self, with_count: bool = True) -> tuple[int | None, int | None, int | None]:
        row = self._run(self.d.int_span_query(with_count))[0]
        return row[0], row[1], None if row[2] is None else int(row[2])

    def whole_table(self) -> Digest:
        n, h = self._run(self.d.whole_table_query())[0]
        return int(n), int(h)

    def rows(self, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        """Whole rows by key, as psycopg returns them (for value-by-value comparison)."""
        out: dict[Key, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            query, params = self.d.rows_query(keys[i:i + 500])
            for r in self._run(query, params):
                row = dict(zip(self.d.columns, r, strict=True))
                out[tuple(row[k] for k in self.d.primary_key)] = row
        return out

    def column_tokens(self, keys: Sequence[Key]) -> dict[Key, dict[str, tuple[Any, str | None]]]:
        if not keys:
            return {}
        out: dict[Key, dict[str, tuple[Any, str | None]]] = {}
        n, m = len(self.d.primary_key), len(self.d.columns)
        for i in range(0, len(keys), 500):
            query, params = self.d.column_tokens_query(keys[i:i + 500])
            for r in self._run(query, params):
                out[tuple(r[:n])] = {c: (r[n + j], r[n + m + j])
                                     for j, c in enumerate(self.d.columns)}
        return out

    # --- re-checking while the source moves ------------------------------------------------
    def new_snapshot(self) -> None:
        """End this side's snapshot: the next query sees the data as it is then."""
        with pg.translated(self.what):
            self.conn.rollback()

    def key_versions(self, keys: Sequence[Key]) -> dict[Key, tuple[str, int]]:
        """Per present key: (row version, row hash), in this side's snapshot."""
        n = len(self.d.primary_key)
        out: dict[Key, tuple[str, int]] = {}
        for i in range(0, len(keys), 500):
            query, params = self.d.key_hashes_query(keys[i:i + 500], versions=True)
            for r in self._run(query, params):
                out[tuple(r[:n])] = (str(r[n]), int(r[n + 1]))
        return out

    def key_hashes(self, keys: Sequence[Key]) -> dict[Key, int]:
        n = len(self.d.primary_key)
        out: dict[Key, int] = {}
        for i in range(0, len(keys), 500):
            query, params = self.d.key_hashes_query(keys[i:i + 500])
            for r in self._run(query, params):
                out[tuple(r[:n])] = int(r[n])
        return out

    def range_versions(self, within: KeyRange | None) -> tuple[int, int, int]:
        """(rows, data digest, version digest) of a range (None: the whole table)."""
        query, params = self.d.range_versions_query(within)
        n, h, v = self._run(query, params)[0]
        return int(n), int(h), int(v)

    def count(self) -> int:
        return int(self._run(self.d.count_query())[0][0])

    def insert_lsn(self) -> tuple[str, int]:
        """The WAL insert position now: past the commit record of every transaction visible in
        this side's snapshot (a commit is inserted before it becomes visible, even with
        synchronous_commit off, when the write position may still be behind it)."""
        row = self._run(sql.SQL("SELECT pg_current_wal_insert_lsn()::text, "
                                "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"))[0]
        return str(row[0]), int(row[1])

    def current_lsn(self) -> tuple[str, int]:
        """The source's WAL insert position now, as text and as a number (pg_lsn - '0/0')."""
        row = self._run(sql.SQL("SELECT pg_current_wal_lsn()::text, "
                                "(pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"))[0]
        return str(row[0]), int(row[1])

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


# ----------------------------------------------------------------------------- opening
def describe(conn: Any, qualified: str, what: str) -> pg.TableInfo:
    schema, name = split_qualified(qualified)
    with pg.translated(what):
        info = pg.describe_table(conn, schema, name)
    if info is None:
        raise PermanentError(f"{what}: table {qualified} does not exist")
    return info


def collations(conn: Any, info: pg.TableInfo, what: str) -> tuple[set[str], set[str]]:
    """The key columns with a collation, and those already ordered bytewise (no COLLATE)."""
    with pg.translated(what):
        return byte_ordered_keys(conn, info)
