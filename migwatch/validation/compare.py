"""Comparing one table: range digests on both sides, bisection of differing ranges, located rows.

    0. a table the planner estimates at most `whole_first_rows` rows is first digested whole —
       one plain aggregate per side, no grouping; equal tables (the usual case) stop there;
    1. otherwise, cut the source's primary key into ranges of about `chunk_rows` rows (even
       steps of an integer key; every n-th key otherwise) and digest every range on both sides
       at once (`width_bucket` groups, `segment_ranges` ranges per query);
    2. all differing ranges of one level are cut again together — one query per side per level
       (integer keys cut arithmetically, others at every n-th key) — until a range holds at most
       `leaf_rows` rows or is missing/extra entirely on one side;
    3. leaf ranges are compared row by row (key → row hash), again in batches: missing on target,
       extra on target, changed — and for a sample of changed rows, column by column;
    4. every differing leaf becomes a `RangeCheck`, pending (moving source) with the source LSN
       read after the comparison, for `revalidate` to re-check later: with the keys of its
       differing rows (up to `pending_keys` per table), else with its range only.
A MongoDB side cannot digest sub-ranges cheaply, so steps 0 and 2 are skipped: it keeps the rows
of the differing ranges in one more pass and step 3 runs on them, confirming every hash
difference value by value (rows mapped exactly as the applier maps them).
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from migwatch.validation.base import (
    EVERYTHING,
    Digest,
    Key,
    KeyRange,
    Side,
    layout,
    sub_ranges,
)
from migwatch.validation.model import (
    RANGE_MISMATCHED,
    RANGE_PENDING,
    REDACTED,
    RangeCheck,
    RowDiff,
    TableResult,
    display_key,
    encode_key,
    now_iso,
)
from migwatch.validation.postgres import PostgresSide

#: progress callback: (table, rows done, rows expected)
ProgressFn = Callable[[str, int, int], None]
#: a differing range being located: (range, source digest, target digest, path in key order)
Item = tuple[KeyRange, Digest, Digest, tuple[int, ...]]

INT_KINDS = {"int"}


@dataclass
class CompareOptions:
    """Knobs of one comparison; the spec's `validation` section sets the public ones."""

    chunk_rows: int = 10_000
    sample_cap: int = 20
    show_values: bool = False
    moving_source: bool = True
    leaf_rows: int = 1024
    fanout: int = 64
    segment_ranges: int = 100
    locate_limit: int = 200_000
    whole_first_rows: int = 10_000_000
    batch_rows: int = 50_000  # rows of leaf ranges fetched per query
    #: differing rows of a table recorded (and re-checked) by key; past it, by leaf range
    pending_keys: int = 10_000


@dataclass
class Leaf:
    """What one differing leaf range holds."""

    range: KeyRange
    source_digest: Digest
    missing: list[Key] = field(default_factory=list)
    extra: list[Key] = field(default_factory=list)
    changed: list[Key] = field(default_factory=list)
    missing_count: int = 0
    extra_count: int = 0
    located: bool = True
    hashes: dict[str, dict[Key, int]] = field(default_factory=dict)
    path: tuple[int, ...] = ()  # position in key order: top range, sub-range, ...


class TableComparer:
    """Compares one table between a PostgreSQL source and a target side."""

    def __init__(self, source: PostgresSide, target: Side, result: TableResult,
                 options: CompareOptions, key_kinds: Sequence[str],
                 progress: ProgressFn | None = None,
                 on_ranges: Callable[[int], None] | None = None) -> None:
        self.source = source
        self.target = target
        self.result = result
        self.o = options
        self.key_kinds = list(key_kinds)
        self.progress = progress
        self.on_ranges = on_ranges
        self.primary_key = tuple(result.primary_key)
        self.located_rows = 0
        self.sampled = 0  # keys fetched for whole missing/extra ranges
        self.key_span: tuple[int | None, int | None] = (None, None)
        self.hash_only = 0  # rows whose hashes differ but values are equal (MongoDB side)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mw-side")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    # --- both sides at once ------------------------------------------------------------------
    def _both(self, fn: str, *args: Any) -> tuple[Any, Any]:
        """`fn(*args)` on both sides at once, each in a copy of the caller's context (so a
        progress callback sees, e.g., the task run it reports for)."""
        fs = self.pool.submit(contextvars.copy_context().run, getattr(self.source, fn), *args)
        ft = self.pool.submit(contextvars.copy_context().run, getattr(self.target, fn), *args)
        return fs.result(), ft.result()

    def _count_ranges(self, n: int) -> None:
        self.result.ranges_checked += n
        if self.on_ranges is not None:
            self.on_ranges(n)

    # --- step 1 ------------------------------------------------------------------------------
    def top_bounds(self, count: int | None = None) -> tuple[list[Key], int]:
        """Cut points of the top-level ranges, and the source's row count (or estimate)."""
        if self._int_key:
            lo, hi, counted = self.source.int_span(with_count=count is None)
            count = counted if count is None else count
            assert count is not None
            self.key_span = (lo, hi)
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
        seg = self.o.segment_ranges if self.target.can_split else len(ranges)
        differing: list[tuple[KeyRange, Digest, Digest]] = []
        done = 0
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
                if s != t:
                    differing.append((rng, s, t))
            done += sum(n for n, _ in sd.values())
            if self.progress is not None:
                self.progress(r.table, done, max(done, expected))
        r.rows_compared = r.source_rows
        mark = self._phase("digest", started)
        leaves = self.locate(differing)
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
        if self.hash_only:
            r.warnings.append(f"{self.hash_only} row(s) hashed differently but hold equal values "
                              "(formatting the target cannot keep, e.g. jsonb 1.50 as 1.5)")
        r.settle_status()
        r.seconds = round(time.perf_counter() - started, 3)
        return r

    def locate(self, differing: Sequence[tuple[KeyRange, Digest, Digest]]) -> list[Leaf]:
        """The differing rows of differing ranges, as leaves (reconciled across leaves)."""
        leaves: list[Leaf] = []
        if not differing:
            return leaves
        if self.target.can_split:
            level: list[Item] = [(rng, s, t, (i,)) for i, (rng, s, t) in enumerate(differing)]
            while level:
                self._leaves([d for d in level if self._is_leaf(*d[:3])], leaves)
                level = self._split([d for d in level if not self._is_leaf(*d[:3])])
            leaves.sort(key=lambda lf: lf.path)  # key order, as the database orders keys
        else:
            self.target.prefetch([rng for rng, s, t in differing if t[0]])
            for rng, s, t in differing:
                self._leaf(rng, s, t, leaves)
        self._reconcile(leaves)
        return [lf for lf in leaves
                if lf.missing_count or lf.extra_count or lf.changed or not lf.located]

    # --- steps 2 and 3 -----------------------------------------------------------------------
    def _is_leaf(self, rng: KeyRange, s: Digest, t: Digest) -> bool:
        return (s[0] == 0 or t[0] == 0 or max(s[0], t[0]) <= self.o.leaf_rows
                or self.located_rows >= self.o.locate_limit)

    def _cuts(self, items: Sequence[Item]) -> list[list[Key]]:
        """Cut points of each range, about `leaf_rows` rows apart (at most `fanout` parts)."""
        parts = [min(self.o.fanout, math.ceil(max(s[0], t[0]) / self.o.leaf_rows))
                 for _, s, t, _ in items]
        if self._int_key and self.key_span[0] is not None and self.key_span[1] is not None:
            out = []
            for (rng, _, _, _), n in zip(items, parts, strict=True):
                lo = rng.lo[0] if rng.lo is not None else self.key_span[0]
                hi = rng.hi[0] if rng.hi is not None else self.key_span[1] + 1
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

    def _split(self, items: Sequence[Item]) -> list[Item]:
        """Step 2 for all `items` at once: the differing sub-ranges, in key order."""
        if not items:
            return []
        cuts = self._cuts(items)
        found: list[Item] = []
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
                for j, sub in enumerate(parts):
                    s, t = per.get((gi, j), ((0, 0), (0, 0)))
                    if s != t:
                        found.append((sub, s, t, (*items[group[gi]][3], j)))
        return found

    def _leaves(self, items: Sequence[Item], leaves: list[Leaf]) -> None:
        """Step 3 for all `items`: whole-range cases at once, the rest row by row in batches
        of about `batch_rows` rows per query."""
        fetch: list[Item] = []
        for rng, s, t, path in items:
            if s[0] == 0 or t[0] == 0 or self.located_rows >= self.o.locate_limit:
                self._leaf(rng, s, t, leaves, path)
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

    def _fetch_leaves(self, batch: Sequence[Item], leaves: list[Leaf]) -> None:
        bounds, owners = layout([(rng, ()) for rng, _, _, _ in batch])
        src, tgt = self._both("row_digests_in", [rng for rng, _, _, _ in batch], bounds)
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
        if not self.target.can_split and leaf.changed:
            leaf.changed = self._confirm(leaf.changed)
        leaf.missing_count, leaf.extra_count = len(leaf.missing), len(leaf.extra)
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
            leaf.located = False
            leaf.missing_count = max(0, s[0] - t[0])
            leaf.extra_count = max(0, t[0] - s[0])
        else:
            src, tgt = self._both("row_digests", rng)
            self.located_rows += len(src) + len(tgt)
            self._compare_rows(leaf, src, tgt, leaves)
            return
        self.sampled += len(leaf.missing) + len(leaf.extra)
        leaves.append(leaf)

    def _want_keys(self) -> bool:
        """Whole ranges missing or extra: their keys are fetched only while the sample needs
        more (their counts come from the digests)."""
        return self.sampled < self.o.sample_cap

    def _confirm(self, keys: list[Key]) -> list[Key]:
        """Keep the keys whose values really differ (a hash can differ where values are equal)."""
        src, tgt = self._both("column_tokens", keys)
        out = []
        for k in keys:
            a, b = src.get(k), tgt.get(k)
            if a is None or b is None or any(a[c][0] != b[c][0] for c in a):
                out.append(k)
        self.hash_only += len(keys) - len(out)
        return out

    # --- step 4 ------------------------------------------------------------------------------
    def _reconcile(self, leaves: list[Leaf]) -> None:
        """A key missing in one leaf and extra in another (collations that order keys
        differently) is one row: equal if its hashes match, else changed."""
        missing = {k: (leaf, leaf.hashes.get("source", {}).get(k)) for leaf in leaves
                   for k in leaf.missing}
        for leaf in leaves:
            for k in list(leaf.extra):
                if k in missing and missing[k][1] is not None:
                    other, h = missing[k]
                    if leaf.hashes.get("target", {}).get(k) != h:
                        leaf.changed.append(k)
                    leaf.extra.remove(k)
                    leaf.extra_count -= 1
                    other.missing.remove(k)
                    other.missing_count -= 1

    def checks(self, leaves: Sequence[Leaf], lsn: str, lsn_num: int, state: str,
               key_budget: int | None = None) -> list[RangeCheck]:
        """One RangeCheck per differing leaf, with a sample of its rows (capped). A leaf whose
        rows were all located carries their keys, while the table's `pending_keys` budget
        lasts (leaves in key order); the others only their range."""
        changed_sample = [k for lf in leaves for k in lf.changed][:self.o.sample_cap]
        src_tok, tgt_tok = self._both("column_tokens", changed_sample) if changed_sample \
            else ({}, {})
        budget = self.o.pending_keys if key_budget is None else key_budget
        out = []
        for lf in leaves:
            row_keys: list[list[Any]] | None = None
            complete = lf.located and len(lf.missing) == lf.missing_count \
                and len(lf.extra) == lf.extra_count
            n = lf.missing_count + lf.extra_count + len(lf.changed)
            if complete and n <= budget:
                budget -= n
                row_keys = [encode_key(k) or [] for k in (*lf.missing, *lf.extra, *lf.changed)]
            diffs: list[RowDiff] = []
            for kind, keys in (("missing", lf.missing), ("extra", lf.extra),
                               ("changed", lf.changed)):
                for k in keys[:max(0, self.o.sample_cap - len(diffs))]:
                    diffs.append(self.row_diff(kind, k, src_tok.get(k), tgt_tok.get(k)))
            out.append(RangeCheck(
                lo=encode_key(lf.range.lo), hi=encode_key(lf.range.hi), lsn=lsn,
                lsn_num=lsn_num, state=state, missing=lf.missing_count, extra=lf.extra_count,
                changed=len(lf.changed), keys=[d.__dict__ for d in diffs],
                source_digest=list(lf.source_digest), checked_at=now_iso(),
                row_keys=row_keys))
        return out

    def row_diff(self, kind: str, key: Key, src: dict[str, Any] | None,
                  tgt: dict[str, Any] | None) -> RowDiff:
        """One differing row for the sample: its key, and for a changed row the columns that
        differ (values only when the spec shows them)."""
        diff = RowDiff(kind=kind, key=display_key(key, self.primary_key))
        if kind != "changed" or src is None or tgt is None:
            return diff
        diff.columns = [c for c in src if c in tgt and src[c][0] != tgt[c][0]]
        if self.o.show_values:
            diff.source = {c: src[c][1] for c in diff.columns}
            diff.target = {c: tgt[c][1] for c in diff.columns}
        else:
            diff.source = {c: REDACTED for c in diff.columns}
            diff.target = {c: REDACTED for c in diff.columns}
        return diff


def digest_of(side: Side, rng: KeyRange) -> Digest:
    """(rows, hash) of one range on a side (MongoDB: from its prefetched rows)."""
    if side.can_split:
        return side.bucket_digests([], rng).get(0, (0, 0))
    rows = side.row_digests(rng)
    h = 0
    for v in rows.values():
        h ^= v
    return len(rows), h
