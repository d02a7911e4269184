"""What every step of a table comparison shares: its options, the leaves it finds, both sides
queried at once with progress counted — and step 4, turning differing leaves into RangeChecks.

A base class of its own so that the algorithm (`compare.py`) and the streamed merge (`merge.py`)
each fit a readable module while `TableComparer` stays one object; `recheck.py` re-uses step 4
through it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from migwatch.validation.base import Digest, Key, KeyRange, Side
from migwatch.validation.model import (
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
    #: rows located by fetching leaves whole (key → hash maps); past it, leaves are merged
    locate_limit: int = 200_000
    whole_first_rows: int = 10_000_000
    batch_rows: int = 50_000  # rows of leaf ranges fetched per query
    #: differing rows of a table recorded (and re-checked) by key; past it, by leaf range
    pending_keys: int = 10_000
    #: bisection levels below the top ranges before the ranges still differing are merged
    max_depth: int = 12
    #: a range with at least this share of its sub-ranges differing has its sub-ranges merged
    dense_fraction: float = 0.5
    merge_batch: int = 10_000  # rows per fetch of a merge's server-side cursors


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
    changed_count: int = 0  # the lists hold keys only while the table's key budget lasts
    located: bool = True
    hashes: dict[str, dict[Key, int]] = field(default_factory=dict)
    path: tuple[int, ...] = ()  # position in key order: top range, sub-range, ...


class Comparison:
    """One table comparison's state, shared by its steps (see `TableComparer`)."""

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
        self.kept = 0  # differing keys held in leaves (capped: memory stays bounded)
        self.keep_cap = max(options.pending_keys, options.sample_cap)
        self.progress_done = 0  # rows digested, then rows located (progress reports)
        self.progress_total = 0
        self._span_read = False
        self.located_top: set[int] = set()  # top ranges a probe merged already
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

    def _tick(self, rows: int) -> None:
        """Progress of locating: `rows` more rows compared row by row."""
        self.progress_done += rows
        if self.progress is not None:
            self.progress(self.result.table, self.progress_done,
                          max(self.progress_done, self.progress_total))

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
                        leaf.changed_count += 1
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
                and len(lf.extra) == lf.extra_count and len(lf.changed) == lf.changed_count
            n = lf.missing_count + lf.extra_count + lf.changed_count
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
                changed=lf.changed_count, keys=[d.__dict__ for d in diffs],
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
