"""The pure part of versioned migrations: versions, discovery, checksums, plans and status.

Nothing here talks to a server, so the rules (what is pending, what changed, what `up` or `down`
would run) are the same for every backend and are tested without one.

A script is `V<version>__<description>.<sql|py>`; an SQL undo script is
`U<version>__<description>.sql`. Version parts are split on `.` or `_` and compared as numbers,
so 1.10 comes after 1.9; trailing zero parts do not count (1 and 1.0 are the same version).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from migwatch.errors import ConfigError, MigrationChanged, MigrationFailed, PermanentError

Kind = Literal["sql", "mongodb"]

SUFFIX: dict[str, str] = {"sql": ".sql", "mongodb": ".py"}

_VERSION_RE = re.compile(r"^\d+(?:[._]\d+)*$")
_SCRIPT_RE = re.compile(r"^(?P<prefix>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<desc>[^/]+)$")


@dataclass(frozen=True)
class Version:
    """A migration version: numeric parts, ordered part by part."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        """`1.10`, `1_10`, `2` → Version; anything else is a ConfigError."""
        text = str(text).strip()
        if text.startswith(("V", "v")):
            text = text[1:]
        if not _VERSION_RE.match(text):
            raise ConfigError(f"{text!r} is not a version (digits split by '.' or '_', e.g. 1.10)",
                              field="version")
        return cls(tuple(int(p) for p in re.split(r"[._]", text)))

    @property
    def key(self) -> tuple[int, ...]:
        """The comparison key: trailing zero parts dropped, so 1 == 1.0."""
        parts = list(self.parts)
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __le__(self, other: Version) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Version) -> bool:
        return self.key > other.key

    def __ge__(self, other: Version) -> bool:
        return self.key >= other.key


def checksum(path: Path) -> str:
    """sha256 of the file's bytes, hex: any edit to an applied script is noticed."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Migration:
    """One versioned script found in the folder (with its undo script for SQL, if any)."""

    version: Version
    description: str
    path: Path
    checksum: str
    undo_path: Path | None = None

    @property
    def script(self) -> str:
        return self.path.name


def _describe(raw: str) -> str:
    return raw.replace("_", " ").strip()


def discover(folder: Path, kind: Kind) -> list[Migration]:
    """Every migration in `folder`, ordered by version.

    Files with another suffix (README, __init__.py) are ignored; a file that looks like a script
    but does not parse, or two scripts for one version, is a ConfigError naming the files, so a
    typo never silently skips a migration.
    """
    if not folder.is_dir():
        raise ConfigError(f"folder {folder.resolve()} does not exist", field="migrations.folder")
    suffix = SUFFIX[kind]
    found: dict[Version, Path] = {}
    undo: dict[Version, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix != suffix or path.name.startswith(("_", ".")):
            continue
        m = _SCRIPT_RE.match(path.stem)
        if m is None:
            if re.match(r"^[VU]\d", path.name):
                raise ConfigError(
                    f"{path.name} looks like a migration but is not named "
                    f"V<version>__<description>{suffix}", field="migrations.folder")
            continue
        version = Version.parse(m["version"])
        if m["prefix"] == "U" and kind != "sql":
            raise ConfigError(f"{path.name}: undo files are for SQL; a MongoDB module defines "
                              "down()", field="migrations.folder")
        bucket = found if m["prefix"] == "V" else undo
        if version in bucket:
            raise ConfigError(f"version {version} appears twice: {bucket[version].name} and "
                              f"{path.name}", field="migrations.folder")
        bucket[version] = path
    for version, path in undo.items():
        if version not in found:
            raise ConfigError(f"{path.name} undoes version {version}, which has no V script",
                              field="migrations.folder")
    out = []
    for version, path in found.items():
        m = _SCRIPT_RE.match(path.stem)
        assert m is not None
        out.append(Migration(version, _describe(m["desc"]), path, checksum(path),
                             undo.get(version)))
    return sorted(out, key=lambda mig: mig.version)


@dataclass(frozen=True)
class HistoryRow:
    """One row of the target's migration history (one per version)."""

    version: str
    description: str
    script: str
    checksum: str
    applied_at: datetime | None
    duration_ms: int
    status: Literal["success", "failed"]
    applied_by: str
    in_transaction: bool
    error_type: str | None = None

    @property
    def parsed(self) -> Version:
        return Version.parse(self.version)


class State(StrEnum):
    APPLIED = "applied"
    PENDING = "pending"
    FAILED = "failed"
    CHANGED = "changed"  # applied, but its file was edited since
    MISSING = "missing"  # applied, but its file is gone


@dataclass(frozen=True)
class StatusRow:
    version: str
    description: str
    script: str
    state: State
    applied_at: datetime | None = None
    duration_ms: int | None = None
    applied_by: str | None = None
    in_transaction: bool | None = None
    has_undo: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "description": self.description, "script": self.script,
            "state": self.state.value,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "duration_ms": self.duration_ms, "applied_by": self.applied_by,
            "in_transaction": self.in_transaction, "has_undo": self.has_undo,
        }


def _by_version(history: Iterable[HistoryRow]) -> dict[Version, HistoryRow]:
    return {row.parsed: row for row in history}


def status(migrations: Sequence[Migration], history: Iterable[HistoryRow]) -> list[StatusRow]:
    """State of every version known from the folder or the history, ordered by version."""
    rows = _by_version(history)
    files = {m.version: m for m in migrations}
    out: list[StatusRow] = []
    for version in sorted(set(rows) | set(files)):
        mig, row = files.get(version), rows.get(version)
        if row is None:
            assert mig is not None
            out.append(StatusRow(str(version), mig.description, mig.script, State.PENDING,
                                 has_undo=mig.undo_path is not None))
            continue
        if row.status == "failed":
            state = State.FAILED
        elif mig is None:
            state = State.MISSING
        elif mig.checksum != row.checksum:
            state = State.CHANGED
        else:
            state = State.APPLIED
        out.append(StatusRow(
            row.version, mig.description if mig else row.description,
            mig.script if mig else row.script, state, row.applied_at, row.duration_ms,
            row.applied_by, row.in_transaction, has_undo=bool(mig and mig.undo_path),
        ))
    return out


def check_unchanged(migrations: Sequence[Migration], history: Iterable[HistoryRow]) -> None:
    """Refuse to run when an applied script was edited; names each version and file."""
    files = {m.version: m for m in migrations}
    changed = [
        (row, files[row.parsed]) for row in history
        if row.status == "success" and row.parsed in files
        and files[row.parsed].checksum != row.checksum
    ]
    if changed:
        raise MigrationChanged([(row.version, str(mig.path)) for row, mig in changed])


@dataclass(frozen=True)
class Step:
    """One migration a plan runs, in one direction."""

    migration: Migration
    direction: Literal["up", "down"]

    @property
    def version(self) -> str:
        return str(self.migration.version)

    def to_dict(self) -> dict[str, Any]:
        script = self.migration.undo_path if self.direction == "down" and \
            self.migration.undo_path else self.migration.path
        return {"version": self.version, "description": self.migration.description,
                "direction": self.direction, "script": script.name}


def plan_up(migrations: Sequence[Migration], history: Iterable[HistoryRow],
            target: Version | None = None) -> list[Step]:
    """Pending migrations up to `target` (inclusive), in version order.

    Refused: an edited applied script (MigrationChanged); a pending version older than the
    newest applied one (out of order); a migration that failed outside a transaction
    (MigrationFailed: it may be half applied — fix the data, then `repair`). A failure inside a
    transaction was rolled back and is retried.
    """
    history = list(history)
    check_unchanged(migrations, history)
    rows = _by_version(history)
    for row in rows.values():
        if row.status == "failed" and not row.in_transaction:
            # a failure like any other for the caller (exit 1), not bad input
            raise MigrationFailed(
                row.version, row.script, row.error_type or "unknown",
                "on an earlier run, outside a transaction, so it may be partly applied; put the "
                "data right, then run `migwatch migrations repair`")
    applied = [v for v, r in rows.items() if r.status == "success"]
    newest = max(applied, default=None)
    steps = []
    for mig in migrations:
        done = rows.get(mig.version)
        if done is not None and done.status == "success":
            continue
        if target is not None and mig.version > target:
            break
        if newest is not None and mig.version < newest:
            raise PermanentError(
                f"version {mig.version} ({mig.script}) is pending but the newer version {newest} "
                "is already applied; out-of-order migrations are refused — give it a version "
                "above the newest applied one")
        steps.append(Step(mig, "up"))
    return steps


def plan_down(migrations: Sequence[Migration], history: Iterable[HistoryRow], kind: Kind,
              target: Version | None = None) -> list[Step]:
    """Applied migrations to revert, newest first: the newest one, or every one above `target`.

    SQL needs an undo script for each; the whole plan is refused before anything runs if one is
    missing, so a partial revert never starts.
    """
    history = list(history)
    check_unchanged(migrations, history)
    files = {m.version: m for m in migrations}
    applied = sorted((r.parsed for r in history if r.status == "success"), reverse=True)
    chosen = applied[:1] if target is None else [v for v in applied if v > target]
    steps = []
    for version in chosen:
        mig = files.get(version)
        if mig is None:
            raise PermanentError(f"version {version} is applied but its script is no longer in "
                                 "the folder; cannot revert it")
        if kind == "sql" and mig.undo_path is None:
            raise PermanentError(
                f"version {version} ({mig.script}) has no undo script "
                f"U{version}__<description>.sql; SQL down runs only where one exists")
        steps.append(Step(mig, "down"))
    return steps


@dataclass
class RepairPlan:
    """What `repair` changes: applied rows whose checksum it accepts, failed rows it clears."""

    accept_checksums: list[Migration] = field(default_factory=list)
    clear_failed: list[HistoryRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"checksums_accepted": [str(m.version) for m in self.accept_checksums],
                "failed_cleared": [r.version for r in self.clear_failed]}


def plan_repair(migrations: Sequence[Migration], history: Iterable[HistoryRow]) -> RepairPlan:
    files = {m.version: m for m in migrations}
    plan = RepairPlan()
    for row in history:
        if row.status == "failed":
            plan.clear_failed.append(row)
        elif row.parsed in files and files[row.parsed].checksum != row.checksum:
            plan.accept_checksums.append(files[row.parsed])
    return plan
