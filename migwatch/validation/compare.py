"""Comparing one table: range digests on both sides, bisection of differing ranges, located rows.

    0. a table the planner estimates at most `whole_first_rows` rows is first digested whole —
       one plain aggregate per side, no grouping; equal tables (the usual case) stop there;
    1. otherwise, cut the source's primary key into ranges of about `chunk_rows` rows (even
       steps of an integer key; every n-th key otherwise) and digest every range on both sides
       at once (`width_bucket` groups, `segment_ranges` ranges per query);
    2. all differing ranges of one level are cut again together — one query per side per level
       (integer keys cut arithmetically over the span of BOTH sides' keys, others at every n-th
       key of the side holding more rows) — until a range holds at most `leaf_rows` rows or is
       missing/extra entirely on one side;
    3. leaf ranges are compared row by row (key → row hash), again in batches: missing on target,
       extra on target, changed — and for a sample of changed rows, column by column;
    3'. a range that bisection cannot narrow down is instead *merged*: both sides stream its rows
       in key order (server-side cursors, a batch at a time) and migwatch compares row hashes
       while merging, in bounded memory. That is a range whose cut stopped shrinking it (keys
       one side does not have, e.g. beyond the other side's largest key), one past `max_depth`
       levels, a sub-range of a range whose sub-ranges mostly differ (dense differences: one
       read beats further levels), and the leaves past `locate_limit` rows;
    4. every differing leaf becomes a `RangeCheck`, pending (moving source) with the source LSN
       read after the comparison, for `revalidate` to re-check later: with the keys of its
       differing rows (up to `pending_keys` per table), else with its range only.
Every level reads at most each side's table once and levels are bounded, so a comparison ends
in bounded time whatever the differences. Keys order bytewise on both sides (`postgres.py`).
A MongoDB side cannot digest sub-ranges cheaply, so steps 0 and 2 are skipped: it keeps the rows
of the differing ranges in one more pass and step 3 runs on them, confirming every hash
difference value by value (rows mapped exactly as the applier maps them) — two passes and one
source query per differing range, without recursion.

`TableComparer` builds on `comparison.py` (options, leaves, both sides, step 4) and
`merge.py` (step 3'); this module holds the steps that decide what to digest, cut and fetch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from migwatch.validation.base import (
    EVERYTHING,
    Digest,
    Key,
    KeyRange,
    Side,
    layout,
    sub_ranges,
)
from migwatch.validation.comparison import (
    INT_KINDS,
    CompareOptions,
    Item,
    Leaf,
    ProgressFn,
)
from migwatch.validation.merge import StreamedMerge
from migwatch.validation.model import (
    RANGE_MISMATCHED,
    RANGE_PENDING,
    RowDiff,
    TableResult,
)
from migwatch.validation.postgres import PostgresSide

__all__ = ["CompareOptions", "Leaf", "ProgressFn", "TableComparer", "digest_of"]


class TableComparer(StreamedMerge):
    """Compares one table between a PostgreSQL source and a target side."""

    # --- step 1 ------------------------------------------------------------------------------
    def top_bounds(self, count: int | None = None) -> tuple[list[Key], int]:
        """Cut points of the top-level ranges, and the source's row count (or estimate)."""
        if self._int_key:
            lo, hi, counted = self.source.int_span(with_count=count is None)
            count = counted if count is None else count
            assert count is not None
            self._union_span(lo, hi)
            if lo is None or hi is None or count == 0:
                return [], count
            n = max(1, math.ceil(count / self.o.chunk_rows))
            step = max(1, math.ceil((hi - lo + 1) / n))
            return [(lo + i * step,) for i in range(1, n) if lo + i * step <= hi], count
        bounds = self.source.boundaries(EVERYTHING, self.o.chunk_rows)
        return bounds, (len(bounds) + 1) * self.o.chunk_rows

    @property
    def _int_key(self) -> bool:
        return len(self.primary_key) == 1 and self.key_kinds[0] in INT_KINDS

    def _union_span(self, lo: int | None, hi: int | None) -> None:
        """`key_span`: the smallest and largest integer key of EITHER side (`lo`, `hi`: the
        source's), so that arithmetic cuts also divide keys only the target holds."""
        spans = [(lo, hi)]
        if isinstance(self.target, PostgresSide):
            spans.append(self.target.int_span(with_count=False)[:2])
        los = [a for a, _ in spans if a is not None]
        his = [b for _, b in spans if b is not None]
        self.key_span = (min(los) if los else None, max(his) if his else None)
        self._span_read = True

    def _phase(self, name: str, since: float) -> float:
        now = time.perf_counter()
        timings = self.result.timings
        timings[name] = round(timings.get(name, 0.0) + now - since, 4)
        return now

    def _whole_first(self) -> tuple[Digest, Digest] | None:
        """Step 0: both sides' digest of the whole table, when it is small enough to stream
        in one query without progress (and a second pass costs little if it differs)."""
        if not (self.target.can_split and isinstance(self.source, PostgresSide)
                and self.source.estimated_rows <= self.o.whole_first_rows):
            return None
        sd, td = self._both("bucket_digests", [], EVERYTHING)
        self._count_ranges(1)
        return sd.get(0, (0, 0)), td.get(0, (0, 0))

    def run(self) -> TableResult:
        started = time.perf_counter()
        r = self.result
        whole = self._whole_first()
        if whole is not None and whole[0] == whole[1]:
            r.source_rows, r.target_rows = whole[0][0], whole[1][0]
            r.rows_compared = r.source_rows
            if self.progress is not None:
                self.progress(r.table, r.source_rows, r.source_rows)
            self._phase("digest", started)
            r.settle_status()
            r.seconds = round(time.perf_counter() - started, 3)
            return r
        bounds, expected = self.top_bounds(whole[0][0] if whole is not None else None)
        ranges = sub_ranges(bounds, EVERYTHING)
        mark = self._phase("digest", started)
        leaves: list[Leaf] = []
        if whole is not None and self._dense(ranges, whole, leaves):
            r.source_rows, r.target_rows = whole[0][0], whole[1][0]
            r.rows_compared = r.source_rows
        else:
            differing = self._top_pass(ranges, bounds, expected)
            r.rows_compared = r.source_rows
            mark = self._phase("digest", mark)
            self._locate_into(differing, leaves, probe=whole is None)
        leaves = self._finish(leaves)
        lsn, lsn_num = self.source.current_lsn()
        mark = self._phase("locate", mark)
        state = RANGE_PENDING if self.o.moving_source else RANGE_MISMATCHED
        checks = self.checks(leaves, lsn, lsn_num, state)
        self._phase("sample", mark)
        for check in checks:
            r.ranges.append(check)
            r.missing += check.missing
            r.extra += check.extra
            r.changed += check.changed
            r.sample.extend(RowDiff(**d) for d in check.keys)
        del r.sample[self.o.sample_cap:]
        r.sample_truncated = r.mismatched_rows > len(r.sample)
        if any(not lf.located for lf in leaves):
            r.warnings.append("some differing ranges were not located row by row "
                              f"(over {self.o.locate_limit} rows fetched)")
        r.settle_status()
        r.seconds = round(time.perf_counter() - started, 3)
        return r

    def _top_pass(self, ranges: Sequence[KeyRange], bounds: Sequence[Key],
                  expected: int) -> list[Item]:
        """Step 1: every top range digested on both sides (`segment_ranges` per query); the
        differing ones, less those a probe located already."""
        r = self.result
        seg = self.o.segment_ranges if self.target.can_split else len(ranges)
        differing: list[Item] = []
        self.progress_total = self.progress_done + expected
        for a in range(0, len(ranges), seg):
            part = ranges[a:a + seg]
            within = KeyRange(part[0].lo, part[-1].hi)
            cut = bounds[a:a + len(part) - 1]
            sd, td = self._both("bucket_digests", cut, within)
            self._count_ranges(len(part))
            for i, rng in enumerate(part):
                s, t = sd.get(i, (0, 0)), td.get(i, (0, 0))
                r.source_rows += s[0]
                r.target_rows += t[0]
                if s != t and a + i not in self.located_top:
                    differing.append((rng, s, t, (a + i,)))
            self._tick(sum(n for n, _ in sd.values()))
        self.progress_total = self.progress_done + sum(s[0] + t[0] for _, s, t, _ in differing)
        return differing

    def _dense(self, ranges: Sequence[KeyRange], whole: tuple[Digest, Digest],
               leaves: list[Leaf]) -> bool:
        """Tables whose whole digests differ: the middle top range is merged to tell whether
        their differences are dense — then every other range is merged too (no range digests,
        no bisection: about one read of each table). Else that range is located already."""
        if len(ranges) < 4 or not self.target.can_split:
            return False
        mid = len(ranges) // 2
        self.progress_total = whole[0][0] + whole[1][0]
        self.located_top.add(mid)
        if not self._probe((ranges[mid], (0, 0), (0, 0), (mid,)), leaves):
            return False
        self._merge([(rng, (0, 0), (0, 0), (i,)) for i, rng in enumerate(ranges) if i != mid],
                    leaves)
        return True

    def _probe(self, item: Item, leaves: list[Leaf]) -> bool:
        """Merge one range (its leaves into `leaves`); whether at least one row in `leaf_rows`
        differs there — where bisection would fetch most rows row by row anyway."""
        rows, diffs = self._merge([item], leaves)
        return rows > 0 and diffs * self.o.leaf_rows >= rows

    def locate(self, differing: Sequence[tuple[KeyRange, Digest, Digest]]) -> list[Leaf]:
        """The differing rows of differing ranges, as leaves (reconciled across leaves)."""
        leaves: list[Leaf] = []
        self._locate_into([(rng, s, t, (i,)) for i, (rng, s, t) in enumerate(differing)],
                          leaves)
        return self._finish(leaves)

    def _finish(self, leaves: list[Leaf]) -> list[Leaf]:
        """Leaves in key order, reconciled, those that differ."""
        leaves.sort(key=lambda lf: lf.path)  # key order, as the database orders keys
        self._reconcile(leaves)
        return [lf for lf in leaves
                if lf.missing_count or lf.extra_count or lf.changed_count or not lf.located]

    def _locate_into(self, items: Sequence[Item], leaves: list[Leaf], probe: bool = False,
                     ) -> None:
        """Steps 2, 3 and 3' for the differing top ranges `items`; with `probe`, their middle
        one is merged first, and when its differences are dense all of them are merged."""
        if not items:
            return
        if self.target.can_split:
            level = list(items)
            merge_next: set[tuple[int, ...]] = set()  # paths the last split marked for merging
            if probe and len(level) >= 4 and self._probe(level.pop(len(level) // 2), leaves):
                merge_next = {item[3] for item in level}
            depth = 0
            while level:
                fetch, merge, split = [], [], []
                for item in level:
                    _, s, t, path = item
                    if s[0] == 0 or t[0] == 0:  # whole range on one side only: counts suffice
                        fetch.append(item)
                    elif path in merge_next or depth >= self.o.max_depth:
                        merge.append(item)
                    elif max(s[0], t[0]) <= self.o.leaf_rows:
                        fetch.append(item)
                    else:
                        split.append(item)
                merge += self._leaves(fetch, leaves)
                self._merge(merge, leaves)
                level, merge_next = self._split(split)
                depth += 1
        else:
            # a side that reads whole passes: the rows of the differing ranges that fit in
            # `locate_limit` are kept in one pass; the ranges past it stay unlocated
            kept, budget = [], self.o.locate_limit - self.located_rows
            for rng, s, t, _ in items:
                if s[0] and t[0] and s[0] + t[0] <= budget:
                    kept.append(rng)
                    budget -= s[0] + t[0]
            self.target.prefetch(kept)
            for rng, s, t, path in items:
                if s[0] and t[0] and rng not in kept:
                    self._unlocated(Leaf(rng, s, path=path), s, t, leaves)
                else:
                    self._leaf(rng, s, t, leaves, path)

    # --- steps 2 and 3 -----------------------------------------------------------------------
    def _arithmetic(self) -> bool:
        """Whether ranges are cut arithmetically (an integer key whose span is known)."""
        if not self._int_key:
            return False
        if not self._span_read:  # re-checking: no top-level pass read the span
            lo, hi, _ = self.source.int_span(with_count=False)
            self._union_span(lo, hi)
        return self.key_span[0] is not None and self.key_span[1] is not None

    def _cuts(self, items: Sequence[Item]) -> list[list[Key]]:
        """Cut points of each range, about `leaf_rows` rows apart (at most `fanout` parts)."""
        parts = [min(self.o.fanout, math.ceil(max(s[0], t[0]) / self.o.leaf_rows))
                 for _, s, t, _ in items]
        if self._arithmetic():
            lo_all, hi_all = self.key_span
            assert lo_all is not None and hi_all is not None
            out = []
            for (rng, _, _, _), n in zip(items, parts, strict=True):
                lo = rng.lo[0] if rng.lo is not None else lo_all
                hi = rng.hi[0] if rng.hi is not None else hi_all + 1
                step = max(1, math.ceil((hi - lo) / n))
                out.append([(lo + i * step,) for i in range(1, n) if lo + i * step < hi])
            return out
        # other keys: every n-th key, read from the side holding more rows of each range
        out = [[] for _ in items]
        for side in (self.source, self.target):
            mine = [i for i, (_, s, t, _) in enumerate(items)
                    if (side is self.source) == (s[0] >= t[0])]
            if not mine:
                continue
            bounds, owners = layout([(items[i][0], ()) for i in mine])
            every = [1] * len(owners)
            for b, owner in enumerate(owners):
                if owner is not None:
                    _, s, t, _ = items[mine[owner[0]]]
                    every[b] = max(1, math.ceil(max(s[0], t[0]) / parts[mine[owner[0]]]))
            found = side.boundaries_in([items[i][0] for i in mine], bounds,  # type: ignore[attr-defined]
                                       every)
            for b, keys in found.items():
                owner = owners[b]
                if owner is not None:
                    out[mine[owner[0]]] = keys
        return out

    def _split(self, items: Sequence[Item]) -> tuple[list[Item], set[tuple[int, ...]]]:
        """Step 2 for all `items` at once: the differing sub-ranges, in key order, and the paths
        of those to merge rather than cut again — where the cut stopped shrinking the range
        (keys cut at one side's keys cannot divide keys only the other side holds), or where
        most sub-ranges of a range differ (dense differences)."""
        if not items:
            return [], set()
        arithmetic = self._arithmetic()
        cuts = self._cuts(items)
        found: list[Item] = []
        merge: set[tuple[int, ...]] = set()
        for a in range(0, len(items), self.o.segment_ranges):
            group = list(range(a, min(a + self.o.segment_ranges, len(items))))
            bounds, owners = layout([(items[i][0], cuts[i]) for i in group])
            ranges = [items[i][0] for i in group]
            sd, td = self._both("bucket_digests", bounds, ranges)
            subs = [sub_ranges(cuts[i], items[i][0]) for i in group]
            self._count_ranges(sum(len(x) for x in subs))
            per: dict[tuple[int, int], tuple[Digest, Digest]] = {}
            for b, owner in enumerate(owners):
                if owner is not None:
                    per[owner] = (sd.get(b, (0, 0)), td.get(b, (0, 0)))
            for gi, parts in enumerate(subs):
                _, ps, pt, path = items[group[gi]]
                kids = []
                for j, sub in enumerate(parts):
                    s, t = per.get((gi, j), ((0, 0), (0, 0)))
                    if s != t:
                        kids.append((sub, s, t, (*path, j)))
                dense = len(parts) >= 4 and len(kids) >= self.o.dense_fraction * len(parts)
                for kid in kids:
                    # arithmetic cuts narrow the key span whatever the rows; key cuts must
                    # narrow the rows
                    stuck = len(parts) == 1 or (not arithmetic and max(kid[1][0], kid[2][0])
                                                >= max(ps[0], pt[0]))
                    if dense or stuck:
                        merge.add(kid[3])
                found.extend(kids)
        return found, merge

    def _leaves(self, items: Sequence[Item], leaves: list[Leaf]) -> list[Item]:
        """Step 3 for all `items`: whole-range cases at once, the rest row by row in batches
        of about `batch_rows` rows per query — up to `locate_limit` rows; the items past it are
        returned, to be merged (streamed) instead."""
        fetch: list[Item] = []
        over: list[Item] = []
        for rng, s, t, path in items:
            if s[0] == 0 or t[0] == 0:
                self._leaf(rng, s, t, leaves, path)
            elif self.located_rows + s[0] + t[0] > self.o.locate_limit:
                over.append((rng, s, t, path))
            else:
                fetch.append((rng, s, t, path))
                self.located_rows += s[0] + t[0]
        batch: list[Item] = []
        rows = 0
        for item in fetch:
            batch.append(item)
            rows += max(item[1][0], item[2][0])
            if rows >= self.o.batch_rows or len(batch) >= self.o.segment_ranges:
                self._fetch_leaves(batch, leaves)
                batch, rows = [], 0
        if batch:
            self._fetch_leaves(batch, leaves)
        return over

    def _fetch_leaves(self, batch: Sequence[Item], leaves: list[Leaf]) -> None:
        bounds, owners = layout([(rng, ()) for rng, _, _, _ in batch])
        src, tgt = self._both("row_digests_in", [rng for rng, _, _, _ in batch], bounds)
        self._tick(sum(len(rows) for rows in (*src.values(), *tgt.values())))
        for b, owner in enumerate(owners):
            if owner is None:
                continue
            rng, s, _, path = batch[owner[0]]
            self._compare_rows(Leaf(rng, s, path=path), src.get(b, {}), tgt.get(b, {}), leaves)

    def _compare_rows(self, leaf: Leaf, src: dict[Key, int], tgt: dict[Key, int],
                      leaves: list[Leaf]) -> None:
        leaf.missing = sorted(k for k in src if k not in tgt)
        leaf.extra = sorted(k for k in tgt if k not in src)
        leaf.changed = sorted(k for k, h in src.items() if k in tgt and tgt[k] != h)
        leaf.missing_count, leaf.extra_count = len(leaf.missing), len(leaf.extra)
        leaf.changed_count = len(leaf.changed)
        self.kept += leaf.missing_count + leaf.extra_count + leaf.changed_count
        leaf.hashes = {"source": {k: src[k] for k in leaf.missing},
                       "target": {k: tgt[k] for k in leaf.extra}}
        if leaf.missing_count or leaf.extra_count or leaf.changed:
            leaves.append(leaf)

    def _leaf(self, rng: KeyRange, s: Digest, t: Digest, leaves: list[Leaf],
              path: tuple[int, ...] = ()) -> None:
        leaf = Leaf(rng, s, path=path)
        cap = max(self.o.sample_cap, 1)
        if t[0] == 0:  # nothing of this range on the target
            leaf.missing_count = s[0]
            leaf.missing = self.source.keys(rng, cap) if self._want_keys() else []
        elif s[0] == 0:  # nothing of this range on the source
            leaf.extra_count = t[0]
            leaf.extra = self.target.keys(rng, cap) if self._want_keys() else []
        elif self.located_rows >= self.o.locate_limit:
            self._unlocated(leaf, s, t, leaves)
            return
        else:
            src, tgt = self._both("row_digests", rng)
            self.located_rows += len(src) + len(tgt)
            self._compare_rows(leaf, src, tgt, leaves)
            return
        self.sampled += len(leaf.missing) + len(leaf.extra)
        leaves.append(leaf)

    @staticmethod
    def _unlocated(leaf: Leaf, s: Digest, t: Digest, leaves: list[Leaf]) -> None:
        """A differing range past `locate_limit`: its counts only."""
        leaf.located = False
        leaf.missing_count = max(0, s[0] - t[0])
        leaf.extra_count = max(0, t[0] - s[0])
        leaves.append(leaf)

    def _want_keys(self) -> bool:
        """Whole ranges missing or extra: their keys are fetched only while the sample needs
        more (their counts come from the digests)."""
        return self.sampled < self.o.sample_cap


def digest_of(side: Side, rng: KeyRange) -> Digest:
    """(rows, hash) of one range on a side (MongoDB: from its prefetched rows)."""
    if side.can_split:
        return side.bucket_digests([], rng).get(0, (0, 0))
    rows = side.row_digests(rng)
    h = 0
    for v in rows.values():
        h ^= v
    return len(rows), h
