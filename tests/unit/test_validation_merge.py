"""Validation without servers: the streamed merge that locates rows bisection cannot narrow
down, and the byte-order (`COLLATE "C"`) SQL both sides use for text keys."""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from typing import Any

from migwatch.connectors.postgres import Column, TableInfo
from migwatch.validation.base import Key, KeyRange, sub_ranges
from migwatch.validation.compare import CompareOptions, TableComparer
from migwatch.validation.model import TableResult
from migwatch.validation.postgres import (
    PostgresDialect,
    PostgresSide,
    coalesced,
)


def _info(*columns: tuple[str, str], pk: tuple[str, ...] = ("id",)) -> TableInfo:
    return TableInfo(schema="public", name="t",
                     columns=tuple(Column(n, t, n in pk) for n, t in columns), primary_key=pk)


# ----------------------------------------------------------------------------- SQL
def test_text_keys_are_compared_in_byte_order_unless_their_collation_already_is() -> None:
    info = _info(("w", "text"), ("n", "integer"), pk=("w", "n"))
    d = PostgresDialect(info, ["w", "n"], ["w", "n"])
    where, _ = d.range_where(KeyRange(("a", 1), None))
    assert 'ROW("w" COLLATE "C", "n") >=' in where.as_string(None)
    assert '"w" COLLATE "C", "n"' in d.keys_query(KeyRange(), 5)[0].as_string(None)
    # bounds of a composite key's width_bucket carry the collation of the key's record
    query, params = d.bucket_query([("m", 1)], KeyRange())
    text = query.as_string(None)
    assert 'width_bucket(k, ARRAY[ROW(%s::text COLLATE "C", %s::integer)])' in text
    assert params == ["m", 1]
    # equality (re-reading rows by key) stays in the column's collation: its index serves it
    keys, _ = d.key_hashes_query([("a", 1)])
    assert "COLLATE" not in keys.as_string(None)

    # a column already ordered bytewise: no COLLATE where an index must serve the range...
    bytewise = PostgresDialect(info, ["w", "n"], ["w", "n"], collated={"w"},
                               byte_ordered={"w"})
    assert "COLLATE" not in bytewise.range_where(KeyRange(("a", 1), None))[0].as_string(None)
    assert "COLLATE" not in bytewise.order_by().as_string(None)
    # ...but the same record collation in width_bucket as on the other side
    assert bytewise.bucket_key().as_string(None) == 'ROW("w" COLLATE "C", "n")'
    # keys of types without collation are unaffected
    ints = PostgresDialect(_info(("id", "bigint")), ["id"], ["id"], collated=set())
    assert "COLLATE" not in ints.merge_query([KeyRange((1,), (9,))], [(5,)])[0].as_string(None)


def test_merge_query_orders_by_key_or_by_key_text_where_python_orders_otherwise() -> None:
    d = PostgresDialect(_info(("id", "bigint"), ("v", "text")), ["id", "v"], ["id"])
    query, params = d.merge_query([KeyRange((1,), (5,)), KeyRange((5,), (9,))], [(5,)])
    text = query.as_string(None)
    assert d.py_ordered
    assert text.startswith('SELECT width_bucket("id", %s::bigint[]), "id", hash_record_extended')
    assert text.endswith('ORDER BY "id"')
    assert text.count('"id" >=') == 1 and params == [[5], 1, 9]  # adjacent ranges joined
    # a float key: Python's order of floats is not PostgreSQL's (NaN): merged by key text
    f = PostgresDialect(_info(("x", "double precision")), ["x"], ["x"])
    ftext = f.merge_query([KeyRange()], [])[0].as_string(None)
    assert not f.py_ordered
    assert ', "x"::text COLLATE "C", hash_record_extended' in ftext
    assert ftext.endswith('ORDER BY 1, "x"::text COLLATE "C"')
    # citext orders case-insensitively whatever the collation
    assert not PostgresDialect(_info(("k", "citext")), ["k"], ["k"]).py_ordered


def test_coalesced_joins_only_adjacent_ranges() -> None:
    a, b, c = KeyRange(None, (3,)), KeyRange((3,), (7,)), KeyRange((8,), None)
    assert coalesced([a, b, c]) == [KeyRange(None, (7,)), c]
    assert coalesced([]) == []


# ----------------------------------------------------------------------------- merge
class FakeSide(PostgresSide):
    """Rows in memory, streamed as the database would: (bucket, key, hash) in key order."""

    def __init__(self, rows: dict[int, int], label: str) -> None:
        super().__init__(None, PostgresDialect(_info(("id", "bigint")), ["id"], ["id"]),  # type: ignore[arg-type]
                         label)
        self.data = rows
        self.streamed = 0

    def merge_rows(self, ranges: Sequence[KeyRange], bounds: Sequence[Key],
                   batch_rows: int) -> Iterator[list[tuple[Any, ...]]]:
        rows = [(bisect.bisect_right(bounds, (k,)), k, h) for k, h in sorted(self.data.items())
                if any(r.contains((k,)) for r in ranges)]
        for i in range(0, len(rows), batch_rows):
            self.streamed += len(rows[i:i + batch_rows])
            yield rows[i:i + batch_rows]

    def column_tokens(self, keys: Sequence[Key]) -> dict[Key, dict[str, tuple[Any, str | None]]]:
        return {k: {"id": (k[0], None)} for k in keys if k[0] in self.data}


def _merge(source: dict[int, int], target: dict[int, int], ranges: list[KeyRange],
           **options: Any) -> tuple[TableComparer, list[Any], tuple[int, int]]:
    result = TableResult(table="public.t", target="public.t", primary_key=["id"])
    comparer = TableComparer(FakeSide(source, "source"), FakeSide(target, "target"), result,
                             CompareOptions(merge_batch=7, **options), ["int"])
    leaves: list[Any] = []
    items = [(rng, (0, 0), (0, 0), (i,)) for i, rng in enumerate(ranges)]
    counts = comparer._merge(items, leaves)
    return comparer, comparer._finish(leaves), counts


def test_merge_finds_every_difference_and_cuts_leaves_every_leaf_rows() -> None:
    rng = random.Random(7)
    source = {k: rng.getrandbits(63) for k in range(0, 2000, 2)}
    target = dict(source)
    missing = sorted(rng.sample(sorted(source), 60))
    changed = sorted(rng.sample(sorted(set(source) - set(missing)), 50))
    extra = sorted({*rng.sample(range(1, 2000, 2), 40), *range(5001, 5031)})  # and past the end
    for k in missing:
        del target[k]
    for k in changed:
        target[k] ^= 1
    for k in extra:
        target[k] = 42
    ranges = sub_ranges([(500,), (1500,)], KeyRange())
    comparer, leaves, (rows, diffs) = _merge(source, target, ranges, leaf_rows=100)
    comparer.close()

    assert rows == len(set(source) | set(target)) and diffs == 60 + 50 + len(extra)
    assert sorted(k for lf in leaves for (k,) in lf.missing) == missing
    assert sorted(k for lf in leaves for (k,) in lf.changed) == changed
    assert sorted(k for lf in leaves for (k,) in lf.extra) == extra
    # leaves tile their items in key order, each about leaf_rows merged rows
    assert all(a.range.hi is not None and a.range.hi <= b.range.lo
               for a, b in zip(leaves, leaves[1:], strict=False))
    assert len(leaves) > 10 and leaves[0].range.lo is None and leaves[-1].range.hi is None
    for lf in leaves:  # the source digest of a leaf is its rows' count and hash
        inside = [h for k, h in source.items() if lf.range.contains((k,))]
        xor = 0
        for h in inside:
            xor ^= h
        assert lf.source_digest == (len(inside), xor)
        assert all(lf.range.contains(k) for k in (*lf.missing, *lf.extra, *lf.changed))
    assert comparer.source.streamed == len(source)  # type: ignore[attr-defined]
    assert comparer.result.timings["merge"] >= 0


def test_merge_holds_at_most_the_key_budget_and_counts_the_rest() -> None:
    source = {k: k for k in range(1000)}
    target = {k: -k - 1 for k in range(1000)}  # every row changed
    comparer, leaves, _ = _merge(source, target, [KeyRange()], pending_keys=30, sample_cap=5)
    assert sum(lf.changed_count for lf in leaves) == 1000
    assert sum(len(lf.changed) for lf in leaves) == 30
    try:
        checks = comparer.checks(leaves, "0/1", 1, "mismatched")
    finally:
        comparer.close()
    assert sum(c.changed for c in checks) == 1000
    keyed = [c for c in checks if c.row_keys is not None]
    assert sum(len(c.row_keys or []) for c in keyed) <= 30  # the rest: re-checked by range
    assert any(c.row_keys is None for c in checks)
