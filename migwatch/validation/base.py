"""The one interface every engine implements for validation: a table on one side.

A *side* answers questions about a primary-key range, never the whole table at once:
  - `bucket_digests(bounds, within)`: (rows, hash) per bucket of `within`, cut at `bounds`
    exactly like PostgreSQL's `width_bucket` (bucket i: bounds[i-1] <= key < bounds[i]);
  - `row_digests(within)`: key → row hash, for a small range;
  - `column_tokens(keys)`: per key, per column, a token equal across sides when the values are
    equal, and the canonical text to show when the spec allows showing values;
  - `keys(within, limit)`: a few keys of a range, ordered.
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


class Side(ABC):
    """One table on one engine, opened for a comparison; `close()` releases the connection."""

    label: str
    #: whether this side can digest sub-ranges cheaply (an index); MongoDB reads whole passes
    can_split: bool = True

    @abstractmethod
    def bucket_digests(self, bounds: Sequence[Key], within: KeyRange) -> dict[int, Digest]: ...

    @abstractmethod
    def row_digests(self, within: KeyRange) -> dict[Key, int]: ...

    @abstractmethod
    def column_tokens(self, keys: Sequence[Key]) -> dict[Key, dict[str, tuple[Any, str | None]]]:
        ...

    @abstractmethod
    def keys(self, within: KeyRange, limit: int) -> list[Key]: ...

    def prefetch(self, ranges: Sequence[KeyRange]) -> None:
        """Load rows of several ranges in one pass (sides that cannot seek by key)."""
        return None

    def close(self) -> None:
        """Release the connection."""
        return None
