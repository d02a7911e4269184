"""The one interface every engine implements for validation: a table on one side.

A *side* answers questions about a primary-key range, never the whole table at once:
  - `bucket_digests(bounds, within)`: (rows, hash) per bucket of `within`, cut at `bounds`
    exactly like PostgreSQL's `width_bucket` (bucket i: bounds[i-1] <= key < bounds[i]);
  - `row_digests(within)`: key → row hash, for a small range;
  - `column_tokens(keys)`: per key, per column, a token equal across sides when the values are
    equal, and the canonical text to show when the spec allows showing values;
  - `keys(within, limit)`: a few keys of a range, ordered;
  - `key_hashes(keys)`: row hashes of given keys (revalidation re-reads only those rows).
The hash of a row is a signed 64-bit integer; a range's digest XORs them (keys are unique).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Key = tuple[Any, ...]
Digest = tuple[int, int]  # (rows, xor of row hashes)


@dataclass(frozen=True)
class KeyRange:
    """Keys with lo <= key < hi; None is unbounded on that side."""

    lo: Key | None = None
    hi: Key | None = None

    def contains(self, key: Key) -> bool:
        return (self.lo is None or key >= self.lo) and (self.hi is None or key < self.hi)


EVERYTHING = KeyRange()


def sub_ranges(bounds: Sequence[Key], within: KeyRange) -> list[KeyRange]:
    """The len(bounds)+1 ranges `bounds` cut `within` into, in bucket order."""
    edges: list[Key | None] = [within.lo, *bounds, within.hi]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(bounds) + 1)]


Owner = tuple[int, int] | None  # (range index, sub-range index), None for a gap


def layout(cuts: Sequence[tuple[KeyRange, Sequence[Key]]]) -> tuple[list[Key], list[Owner]]:
    """One bucket layout for several disjoint ranges, each cut at its own points.

    `cuts` lists (range, its cut points) in key order. Returns the bounds for one bucket query
    (`width_bucket`) over all of them, and for each bucket 0..len(bounds) its owner: which
    range and which of its sub-ranges, or None for the gap between two ranges. Keys are only
    tested for equality here, never ordered: the database's collation orders them."""
    bounds: list[Key] = []
    owners: list[Owner] = []
    current: Owner = None  # owner of the bucket being built (it ends at the next bound)
    for i, (rng, points) in enumerate(cuts):
        if rng.lo is not None and not (bounds and bounds[-1] == rng.lo and current is None):
            bounds.append(rng.lo)
            owners.append(current)
        current = (i, 0)
        for j, point in enumerate(points):
            bounds.append(point)
            owners.append(current)
            current = (i, j + 1)
        if rng.hi is not None:
            bounds.append(rng.hi)
            owners.append(current)
            current = None
    owners.append(current)
    return bounds, owners


class Side(ABC):
    """One table on one engine, opened for a comparison; `close()` releases the connection."""

    label: str
    #: whether this side can digest sub-ranges cheaply (an index); MongoDB reads whole passes
    can_split: bool = True
    #: rows whose key maps back to no source key (a MongoDB `_id`), as read by the last pass
    unreadable: Sequence[str] = ()

    @abstractmethod
    def bucket_digests(self, bounds: Sequence[Key], within: KeyRange) -> dict[int, Digest]: ...

    @abstractmethod
    def row_digests(self, within: KeyRange) -> dict[Key, int]: ...

    @abstractmethod
    def column_tokens(self, keys: Sequence[Key]) -> dict[Key, dict[str, tuple[Any, str | None]]]:
        ...

    @abstractmethod
    def keys(self, within: KeyRange, limit: int) -> list[Key]: ...

    def key_hashes(self, keys: Sequence[Key]) -> dict[Key, int]:
        """Row hash of each present key of `keys` (re-checking pending keys), read now."""
        raise NotImplementedError

    def count(self) -> int:
        """Rows of the whole table, counted now."""
        raise NotImplementedError

    def new_snapshot(self) -> None:
        """Forget what was read: the next question is answered from the data as it is then."""
        return None

    def prefetch(self, ranges: Sequence[KeyRange]) -> None:
        """Load rows of several ranges in one pass (sides that cannot seek by key)."""
        return None

    def close(self) -> None:
        """Release the connection."""
        return None
