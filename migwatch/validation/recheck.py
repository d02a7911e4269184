"""Re-checking pending differences while the source keeps moving (AWS DMS's pending revalidation).

One attempt on a set of keys K of one table:
  1. source: the rows K — each row's version (`xmin`) and hash — then, in the same snapshot,
     the WAL insert position L1: every change visible in that snapshot lies before L1;
  2. wait (bounded) until the target has applied this table up to L1 (`AppliedThrough`:
     Debezium has handed everything up to L1 to Kafka, and the table's own position passed L1
     or its topic has nothing unapplied — an idle table's own LSN stays old although it is
     fully caught up);
  3. target: the rows K, read after that;
  4. source: the rows K again, and L2.
A key whose source row kept its version from 1 to 4 was not written while the target caught up
past L1, so the target must now hold it exactly: resolved if it does, mismatched — a real
difference — if not. A key written in between is still changing: pending again at L2, for the
next round; when the rounds run out it stays pending (never mismatched for moving), with a note.
A range check (more differing rows than `pending_keys`, or rows never located; a table without
primary key) does the same with the range's digests and a digest of row versions; a range still
changing is located again and continues as keys once its differing rows fit the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from migwatch.positions import AppliedThrough
from migwatch.validation.base import Digest, Key, KeyRange, Side
from migwatch.validation.compare import CompareOptions, TableComparer, digest_of
from migwatch.validation.model import (
    RANGE_MISMATCHED,
    RANGE_PENDING,
    RANGE_RESOLVED,
    RangeCheck,
    TableResult,
    decode_key,
    display_key,
    encode_key,
    now_iso,
)
from migwatch.validation.postgres import PostgresSide

MISSING, EXTRA, CHANGED = "missing", "extra", "changed"
STILL_CHANGING = "still changing on the source"


# ----------------------------------------------------------------------------- one table
@dataclass
class RoundOutcome:
    """What one re-check round of a table did, for the caller's notes."""

    rechecked: int = 0
    not_rechecked: str | None = None  # why (the applier did not pass L1 in time)
    position_unknown: bool = False
    changing: int = 0  # rows (or ranges) found still changing


@dataclass
class _Reads:
    """Everything read in the four steps, per key and per range."""

    s1: dict[Key, tuple[str, int]] = field(default_factory=dict)
    s2: dict[Key, tuple[str, int]] = field(default_factory=dict)
    t: dict[Key, int] = field(default_factory=dict)
    src_tok: dict[Key, dict[str, tuple[Any, str | None]]] = field(default_factory=dict)
    tgt_tok: dict[Key, dict[str, tuple[Any, str | None]]] = field(default_factory=dict)
    r1: list[tuple[int, int, int]] = field(default_factory=list)
    r2: list[tuple[int, int, int]] = field(default_factory=list)
    rt: list[Digest] = field(default_factory=list)


class TableRecheck:
    """One round of re-checking a table's pending checks, and its row counts."""

    def __init__(self, source: PostgresSide, target: Side, result: TableResult,
                 options: CompareOptions, key_kinds: Sequence[str], whole_table: bool,
                 applied: AppliedThrough) -> None:
        self.source = source
        self.target = target
        self.result = result
        self.o = options
        self.whole = whole_table
        self.applied = applied
        self.comparer = TableComparer(source, target, result, options, key_kinds)

    def close(self) -> None:
        self.comparer.close()

    # --- the four steps ----------------------------------------------------------------------
    def run(self, checks: Sequence[RangeCheck], wait_seconds: float, unknown_seconds: float,
            ) -> RoundOutcome:
        out = RoundOutcome()
        keys = list(dict.fromkeys(k for c in checks if c.row_keys is not None
                                  for k in c.decoded_keys()))
        ranged = [c for c in checks if c.row_keys is None]
        ranges = [self._range_of(c) for c in ranged]
        reads = _Reads()
        # 1. source rows, count, then L1 — one snapshot
        self.source.new_snapshot()
        reads.s1 = self.source.key_versions(keys) if keys else {}
        reads.r1 = [self.source.range_versions(r) for r in ranges]
        source_rows = self.source.count()
        lsn1, lsn1_num = self.source.insert_lsn()
        self.source.new_snapshot()
        # 2. the applier past L1 for this table
        why, unknown = self.applied.wait(self.result.table, lsn1_num, wait_seconds,
                                              unknown_seconds)
        if why is not None:
            out.not_rechecked, out.position_unknown = why, unknown
            for c in checks:
                c.note = f"not re-checked: {why}"
            return out
        # 3. the target's rows and count, read after the applier passed L1
        self.target.new_snapshot()
        if keys:
            reads.t = self.target.key_hashes(keys)
            both = [k for k in keys if k in reads.s1 and k in reads.t
                    and reads.s1[k][1] != reads.t[k]]
            reads.tgt_tok = self.target.column_tokens(self._token_keys(both))
        if ranges:
            self.target.prefetch([r for r in ranges if r is not None])
            reads.rt = [self._target_digest(r) for r in ranges]
        target_rows = self._target_count()
        # 4. source again, L2 (and the source side of changed columns, same snapshot)
        self.source.new_snapshot()
        reads.s2 = self.source.key_versions(keys) if keys else {}
        reads.r2 = [self.source.range_versions(r) for r in ranges]
        stable = [k for k in keys if k in reads.s2 and k in reads.t
                  and reads.s1.get(k) == reads.s2[k] and reads.s2[k][1] != reads.t[k]]
        reads.src_tok = self.source.column_tokens(self._token_keys(stable))
        lsn2, lsn2_num = self.source.insert_lsn()
        self.source.new_snapshot()

        r = self.result
        r.source_rows, r.target_rows = source_rows, target_rows
        r.counts_lsn, r.counted_at = lsn1, now_iso()
        new: dict[int, list[RangeCheck]] = {}
        for c in checks:
            out.rechecked += 1
            c.checked_at = now_iso()
            if c.row_keys is not None:
                new[id(c)] = self._decide_keys(c, reads, lsn1, (lsn2, lsn2_num), out)
        for i, c in enumerate(ranged):
            new[id(c)] = self._decide_range(c, ranges[i], reads.r1[i], reads.r2[i], reads.rt[i],
                                            lsn1, (lsn2, lsn2_num), out)
        r.ranges = [n for c in r.ranges for n in new.get(id(c), [c])]
        return out

    def _range_of(self, c: RangeCheck) -> KeyRange | None:
        """The range a check covers; None is the whole table (a table without primary key)."""
        return None if self.whole else KeyRange(decode_key(c.lo), decode_key(c.hi))

    def _token_keys(self, keys: list[Key]) -> list[Key]:
        """Keys whose columns are read: those the sample can show."""
        return keys[:max(self.o.sample_cap, 1)]

    def _target_digest(self, rng: KeyRange | None) -> Digest:
        if rng is None:
            return self.target.whole_table()  # type: ignore[attr-defined, no-any-return]
        return digest_of(self.target, rng)

    def _target_count(self) -> int:
        return int(self.target.count())

    # --- deciding --------------------------------------------------------------------------
    def _same(self, key: Key, reads: _Reads) -> bool:
        """Whether the source row (as read the second time) equals the target's row."""
        s, t = reads.s2.get(key), reads.t.get(key)
        if s is None or t is None:
            return s is None and t is None
        return s[1] == t

    @staticmethod
    def _kind(key: Key, reads: _Reads, before: str) -> str:
        s, t = key in reads.s2, key in reads.t
        if s and not t:
            return MISSING
        if t and not s:
            return EXTRA
        return CHANGED if s and t and reads.s2[key][1] != reads.t[key] else before

    def _decide_keys(self, c: RangeCheck, reads: _Reads, lsn1: str, at2: tuple[str, int],
                     out: RoundOutcome) -> list[RangeCheck]:
        keys = c.decoded_keys()
        before = [MISSING] * c.missing + [EXTRA] * c.extra + [CHANGED] * c.changed
        before += [CHANGED] * (len(keys) - len(before))
        parts: dict[str, list[tuple[Key, str]]] = {RANGE_RESOLVED: [], RANGE_MISMATCHED: [],
                                                    RANGE_PENDING: []}
        for key, was in zip(keys, before, strict=False):
            if reads.s1.get(key) != reads.s2.get(key):
                parts[RANGE_PENDING].append((key, self._kind(key, reads, was)))
            elif self._same(key, reads):
                parts[RANGE_RESOLVED].append((key, was))
            else:
                parts[RANGE_MISMATCHED].append((key, self._kind(key, reads, was)))
        out.changing += len(parts[RANGE_PENDING])
        made = []
        for state, found in parts.items():
            if not found:
                continue
            part = self._key_check(c, state, found, reads)
            part.attempts += 1
            if state == RANGE_MISMATCHED:
                part.note = (f"differs on the target after the applier passed {lsn1}, while "
                             "the source row did not change")
            elif state == RANGE_PENDING:
                part.lsn, part.lsn_num = at2
                part.note = f"{STILL_CHANGING} while re-checked (last seen at {at2[0]})"
            else:
                part.note = ""
            made.append(part)
        return made

    def _key_check(self, c: RangeCheck, state: str, found: list[tuple[Key, str]],
                   reads: _Reads) -> RangeCheck:
        """A copy of `c` for some of its keys, in a new state, with their counts and sample."""
        order = {MISSING: 0, EXTRA: 1, CHANGED: 2}
        found = sorted(found, key=lambda kv: order[kv[1]])
        kinds = [k for _, k in found]
        sample = []
        if state != RANGE_RESOLVED:
            for key, kind in found[:self.o.sample_cap]:
                sample.append(self.comparer.row_diff(kind, key, reads.src_tok.get(key),
                                                     reads.tgt_tok.get(key)).__dict__)
        else:  # what was seen, kept for the record of what resolved
            shown = [display_key(key, self.comparer.primary_key) for key, _ in found]
            sample = [d for d in c.keys if d.get("key") in shown]
        return replace(c, state=state, row_keys=[encode_key(k) or [] for k, _ in found],
                       missing=kinds.count(MISSING), extra=kinds.count(EXTRA),
                       changed=kinds.count(CHANGED), keys=sample)

    def _decide_range(self, c: RangeCheck, rng: KeyRange | None, a: tuple[int, int, int],
                      b: tuple[int, int, int], t: Digest, lsn1: str, at2: tuple[str, int],
                      out: RoundOutcome) -> list[RangeCheck]:
        data: Digest = (b[0], b[1])
        if a == b and data == t:
            return [replace(c, state=RANGE_RESOLVED, attempts=c.attempts + 1, note="")]
        changing_note = f"{STILL_CHANGING} while re-checked (last seen at {at2[0]})"
        found = self._locate(c, rng, data, t, at2)
        if a == b and found:  # the source range did not move, yet the target differs: real
            note = (f"differs on the target after the applier passed {lsn1}, while the source "
                    "range did not change")
            return [self._as_range(c, found, data, RANGE_MISMATCHED, note)]
        if a == b:  # nothing differs any more, though the target's digest did: look again
            return [replace(c, attempts=c.attempts + 1, lsn=at2[0], lsn_num=at2[1],
                            note="the target moved while re-checked")]
        out.changing += 1
        if found and all(f.row_keys is not None for f in found):  # continue as keys
            return [replace(f, attempts=c.attempts + 1, note=changing_note) for f in found]
        moved = self._as_range(c, found, data, RANGE_PENDING, changing_note) if found \
            else replace(c, attempts=c.attempts + 1, note=changing_note)
        return [replace(moved, lsn=at2[0], lsn_num=at2[1])]

    def _locate(self, c: RangeCheck, rng: KeyRange | None, s: Digest, t: Digest,
                at2: tuple[str, int]) -> list[RangeCheck]:
        """The range's differing rows as they are now (pending checks at L2): with their keys
        while they fit what is left of the table's key budget."""
        if rng is None:  # no primary key: only counts can tell
            if s == t:
                return []
            return [replace(c, missing=max(0, s[0] - t[0]), extra=max(0, t[0] - s[0]),
                            changed=0 if s[0] != t[0] else 1, source_digest=list(s))]
        self.source.new_snapshot()
        self.target.new_snapshot()
        leaves = self.comparer.locate([(rng, s, t)])
        used = sum(len(x.row_keys or []) for x in self.result.ranges
                   if x is not c and x.state != RANGE_RESOLVED)
        found = self.comparer.checks(leaves, at2[0], at2[1], RANGE_PENDING,
                                     key_budget=max(0, self.o.pending_keys - used))
        self.source.new_snapshot()
        return found

    def _as_range(self, c: RangeCheck, found: list[RangeCheck], s: Digest, state: str,
                  note: str) -> RangeCheck:
        """`c` (still one range) in `state`, with the counts and sample located in it now."""
        return replace(c, state=state, attempts=c.attempts + 1, note=note, source_digest=list(s),
                       missing=sum(f.missing for f in found), extra=sum(f.extra for f in found),
                       changed=sum(f.changed for f in found),
                       keys=[k for f in found for k in f.keys][:self.o.sample_cap])

