"""Step 3' of a table comparison, the streamed merge: both sides stream a range's rows in key
order (server-side cursors, the next batch read ahead in the pool) and row hashes are compared
while merging, in bounded memory.

Apart from the bisection (`compare.py`) because it is the one step that reads unbounded row
counts, with bookkeeping of its own: `_Segment` cuts merged rows into leaves, `_ReadAhead` keeps
one batch in flight per side.
"""

from __future__ import annotations

import bisect
import functools
import operator
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from migwatch.validation.base import Key, KeyRange, layout
from migwatch.validation.comparison import Comparison, Item, Leaf
from migwatch.validation.postgres import PostgresSide


class StreamedMerge(Comparison):
    """The merge steps of `TableComparer`: ranges bisection cannot narrow down."""

    # --- step 3': the streamed merge -----------------------------------------------------------
    def _refill(self, stream: _ReadAhead) -> tuple[list[tuple[Any, ...]], int, bool]:
        """The next batch of a merge stream (empty when it ended), its index, whether more may
        follow."""
        batch = stream.next_batch()
        if batch is None:
            return [], 0, False
        self._tick(len(batch))
        return batch, 0, True

    def _merge(self, items: Sequence[Item], leaves: list[Leaf]) -> tuple[int, int]:
        """Step 3' for `items` (`segment_ranges` ranges per pair of streams): the rows merged
        and how many of them differ."""
        if not items:
            return 0, 0
        started = time.perf_counter()
        ordered = sorted(items, key=lambda item: item[3])  # key order
        rows = diffs = 0
        for a in range(0, len(ordered), self.o.segment_ranges):
            seg = self._merge_group(ordered[a:a + self.o.segment_ranges], leaves)
            rows, diffs = rows + seg.merged, diffs + seg.differing
        timings = self.result.timings
        timings["merge"] = round(timings.get("merge", 0.0) + time.perf_counter() - started, 4)
        return rows, diffs

    def _merge_group(self, items: Sequence[Item], leaves: list[Leaf]) -> _Segment:
        """Both sides' rows of `items` streamed in one order and compared while merging.

        Each row comes with its bucket (which item holds it), so rows are told apart by
        (bucket, key) — by (bucket, key text) where Python does not order the keys as the
        database does. Differences are kept as leaves of about `leaf_rows` merged rows (one per
        item when keys are compared by their text: a run of text-ordered keys is no key
        range)."""
        source = self.source
        target = self.target
        assert isinstance(target, PostgresSide)
        bounds, owners = layout([(rng, ()) for rng, _, _, _ in items])
        ranges = [rng for rng, _, _, _ in items]
        n = len(self.primary_key)
        native = source.d.py_ordered and target.d.py_ordered
        cols = range(1, n + 1) if native else range(n + 1, 2 * n + 1)
        order = operator.itemgetter(0, *cols)
        streams = [_ReadAhead(self.pool, side.merge_rows(ranges, bounds, self.o.merge_batch))
                   for side in (source, target)]
        seg = _Segment(self, items, owners, native, n)
        try:
            src: list[tuple[Any, ...]] = []
            tgt: list[tuple[Any, ...]] = []
            i = j = 0
            more = [True, True]  # whether each stream may hold more batches
            while True:
                if i == len(src) and more[0]:
                    src, i, more[0] = self._refill(streams[0])
                if j == len(tgt) and more[1]:
                    tgt, j, more[1] = self._refill(streams[1])
                ns, nt = len(src), len(tgt)
                if i == ns and j == nt:
                    break
                start = i  # a run of rows equal on both sides, hash included: the usual case
                while i < ns and j < nt and src[i] == tgt[j]:
                    i += 1
                    j += 1
                if i > start:
                    seg.same(src, start, i)
                    continue
                ka = order(src[i]) if i < ns else None
                kb = order(tgt[j]) if j < nt else None
                if kb is None or (ka is not None and ka < kb):
                    a = src[i]
                    seg.row(a[0], a[1:n + 1], a[-1], None)
                    i += 1
                elif ka is None or kb < ka:
                    b = tgt[j]
                    seg.row(b[0], b[1:n + 1], None, b[-1])
                    j += 1
                else:  # the same key, another hash
                    a, b = src[i], tgt[j]
                    seg.row(a[0], a[1:n + 1], a[-1], b[-1])
                    i += 1
                    j += 1
            seg.flush(None)
        finally:
            for stream in streams:
                stream.close()
        leaves.extend(seg.leaves)
        self._count_ranges(len(items))
        return seg


_HASH = operator.itemgetter(-1)  # a merged row's hash: its last column
_BUCKET = operator.itemgetter(0)  # ...and its bucket: the first


class _Segment:
    """The leaves a merge makes, row by merged row: the rows of one item, cut every
    `leaf_rows` merged rows where keys are ranges in Python's order too (`native`)."""

    def __init__(self, comparer: Comparison, items: Sequence[Item],
                 owners: Sequence[Any], native: bool, key_columns: int) -> None:
        self.c = comparer
        self.items = items
        self.owners = owners
        self.native = native
        self.n = key_columns
        self.leaves: list[Leaf] = []
        self.merged = 0  # rows merged (keys of either side)
        self.differing = 0  # of them, missing, extra or changed
        self.item = -1  # index of the item whose rows come now
        self.part = 0
        self._start(None)

    def _start(self, lo: Key | None) -> None:
        self.leaf = Leaf(KeyRange(lo, None), (0, 0), hashes={"source": {}, "target": {}})
        self.rows = 0
        self.count = 0
        self.xor = 0

    def row(self, bucket: int, key: Key, source_hash: int | None,
            target_hash: int | None) -> None:
        """One merged row: its hash on the source and on the target (None: absent there)."""
        owner = self.owners[bucket]
        if owner is None:  # between the ranges: the query does not read such rows
            return
        if owner[0] != self.item:
            self.flush(None)
            self.item, self.part = owner[0], 0
            self._start(self.items[self.item][0].lo)
        elif self.native and self.rows >= self.c.o.leaf_rows and source_hash != target_hash:
            self.flush(key)  # a leaf ends where a difference comes after `leaf_rows` rows
            self.part += 1
            self._start(key)
        self.rows += 1
        self.merged += 1
        leaf = self.leaf
        if source_hash is not None:
            self.count += 1
            self.xor ^= source_hash
        keep = self.c.kept < self.c.keep_cap
        if target_hash is None:
            leaf.missing_count += 1
            if keep:
                leaf.missing.append(key)
                leaf.hashes["source"][key] = source_hash  # type: ignore[assignment]
        elif source_hash is None:
            leaf.extra_count += 1
            if keep:
                leaf.extra.append(key)
                leaf.hashes["target"][key] = target_hash
        elif source_hash != target_hash:
            leaf.changed_count += 1
            if keep:
                leaf.changed.append(key)
        else:
            return
        self.differing += 1
        if keep:
            self.c.kept += 1

    def same(self, rows: Sequence[tuple[Any, ...]], start: int, end: int) -> None:
        """Rows `start:end` of a batch, equal on both sides (bucket, key and hash): counted
        in bulk, bucket by bucket (a batch is ordered by bucket)."""
        while start < end:
            bucket = rows[start][0]
            owner = self.owners[bucket]
            if owner is None or owner[0] != self.item:  # the first row of another item
                r = rows[start]
                self.row(bucket, r[1:self.n + 1], r[-1], r[-1])
                start += 1
                continue
            stop = end if rows[end - 1][0] == bucket else bisect.bisect_right(
                rows, bucket, start, end, key=_BUCKET)
            self.rows += stop - start
            self.merged += stop - start
            self.count += stop - start
            self.xor ^= functools.reduce(operator.xor, map(_HASH, rows[start:stop]), 0)
            start = stop

    def flush(self, hi: Key | None) -> None:
        """End the current leaf at `hi` (None: where its item's range ends)."""
        if self.item < 0:
            return
        leaf = self.leaf
        if leaf.missing_count or leaf.extra_count or leaf.changed_count:
            rng, _, _, path = self.items[self.item]
            leaf.range = KeyRange(leaf.range.lo, hi if hi is not None else rng.hi)
            leaf.source_digest = (self.count, self.xor)
            leaf.path = (*path, self.part)
            self.leaves.append(leaf)


class _ReadAhead:
    """One side's batches of a merge, the next one read in the pool while this one is used."""

    def __init__(self, pool: ThreadPoolExecutor,
                 batches: Iterator[list[tuple[Any, ...]]]) -> None:
        self.pool = pool
        self.batches = batches
        self.pending: Future[list[tuple[Any, ...]] | None] | None = pool.submit(
            next, batches, None)

    def next_batch(self) -> list[tuple[Any, ...]] | None:
        if self.pending is None:
            return None
        batch = self.pending.result()
        self.pending = self.pool.submit(next, self.batches, None) if batch is not None \
            else None
        return batch

    def close(self) -> None:
        """Wait for a read under way, then close the cursor."""
        if self.pending is not None:
            with suppress(Exception):  # the merge's own error is the one to see
                self.pending.result()
            self.pending = None
        self.batches.close()  # type: ignore[attr-defined]
