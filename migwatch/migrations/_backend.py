"""What a target engine offers to run versioned migrations (`Backend`), and the small types a
backend and the runner share: kept apart from the runner so a backend never imports it (each
target engine's backend lives with its engine, `migwatch.targets`)."""

from __future__ import annotations

import getpass
import socket
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from migwatch.migrations._model import HistoryRow, Kind, RepairPlan, Step


@dataclass(frozen=True)
class LockInfo:
    owner: str
    acquired_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class LockAttempt:
    """`acquired`; else `holder` is who has it. A stale lock taken over sets `previous`."""

    acquired: bool
    holder: LockInfo | None = None
    previous: LockInfo | None = None


class ScriptFailed(Exception):
    """Raised by a backend when a script fails (after its transaction rolled back, if any)."""

    def __init__(self, error_type: str, message: str, *, transient: bool,
                 in_transaction: bool) -> None:
        self.error_type = error_type
        self.message = message
        self.transient = transient
        self.in_transaction = in_transaction
        super().__init__(f"{error_type}: {message}")


class Progress:
    """`progress(collection, count)` for MongoDB scripts: counts documents touched per collection.

    Inside a transaction the counts wait for the commit (a rollback touched nothing); without
    one they reach `mongodb_migration_documents_total` at once, since the writes are real.
    """

    def __init__(self, version: str, counter: Any | None) -> None:
        self.version = version
        self._counter = counter
        self._buffered = False
        self._pending: dict[str, int] = defaultdict(int)
        self.totals: dict[str, int] = defaultdict(int)

    def begin(self, in_transaction: bool) -> None:
        self._buffered = in_transaction
        self._pending.clear()

    def __call__(self, collection: str, count: int = 1) -> None:
        if not isinstance(collection, str) or not isinstance(count, int) or count < 0:
            raise TypeError("progress(collection: str, count: int >= 0)")
        if self._buffered:
            self._pending[collection] += count
        else:
            self._publish(collection, count)

    def commit(self) -> None:
        for collection, count in self._pending.items():
            self._publish(collection, count)
        self._pending.clear()

    def discard(self) -> None:
        self._pending.clear()

    def _publish(self, collection: str, count: int) -> None:
        self.totals[collection] += count
        if self._counter is not None:
            self._counter.labels(self.version, collection).inc(count)


class Backend(Protocol):
    """What a target server must offer to run versioned migrations."""

    kind: Kind
    #: its scripts report the documents they touch (`progress`)
    counts_documents: bool

    def describe(self) -> str:
        """The target without secrets, for messages and logs."""
        ...

    def close(self) -> None: ...

    def history(self) -> list[HistoryRow]:
        """Every history row; empty when the history does not exist yet (nothing is created)."""
        ...

    def ensure_storage(self) -> None:
        """Create the history and lock storage if missing (safe to race)."""
        ...

    def lock_holder(self) -> LockInfo | None: ...

    def try_lock(self, owner: str, ttl_seconds: float) -> LockAttempt:
        """Take the lock if free, expired, or already `owner`'s; never waits."""
        ...

    def renew_lock(self, owner: str, ttl_seconds: float) -> bool:
        """Push the expiry forward; False when `owner` no longer holds the lock."""
        ...

    def release_lock(self, owner: str) -> None: ...

    def execute(self, step: Step, row_for: Any, progress: Progress) -> bool:
        """Run the step's script; in the same transaction (if any) upsert `row_for(in_tx)` (up)
        or delete the version's row (down). Returns whether a transaction was used; raises
        ScriptFailed after rolling back."""
        ...

    def record(self, row: HistoryRow) -> None:
        """Upsert one history row on its own (a failure, after the rollback)."""
        ...

    def repair(self, plan: RepairPlan) -> None: ...


def applied_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
