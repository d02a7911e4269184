"""Running a plan against a backend: the lock, one transaction per step, history, metrics, logs.

A backend (each target engine's, `migwatch.targets`) owns connections and speaks its server's
language; everything a user can observe — the order, the lock wait, the history rows, the
metrics, the log lines — is decided here once, so both backends behave alike.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from migwatch import metrics
from migwatch.config import MigrationSpec
from migwatch.errors import (
    ConfigError,
    MigrationFailed,
    MigrationLocked,
    TransientError,
)
from migwatch.migrations._backend import (
    Backend,
    LockInfo,
    Progress,
    ScriptFailed,
    applied_by,
)
from migwatch.migrations._model import (
    HistoryRow,
    Kind,
    Migration,
    RepairPlan,
    StatusRow,
    Step,
    Version,
    discover,
    plan_down,
    plan_repair,
    plan_up,
    status,
)
from migwatch.targets import engine_for

log = logging.getLogger("migwatch.migrations")

#: how long a lock lives without renewal; the holder renews every third of it
DEFAULT_LOCK_TTL_SECONDS = 60.0
_LOCK_POLL_SECONDS = 0.25


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StepOutcome:
    version: str
    description: str
    direction: Literal["up", "down"]
    status: Literal["success", "failed"]
    duration_ms: int
    in_transaction: bool
    documents: dict[str, int] = field(default_factory=dict)
    error_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "description": self.description,
                "direction": self.direction, "status": self.status,
                "duration_ms": self.duration_ms, "in_transaction": self.in_transaction,
                "documents": dict(self.documents), "error_type": self.error_type}


@dataclass(frozen=True)
class StepEvent:
    """Reported while a run goes: `start` before step `index` of `total`, `end` after it with
    its outcome (status success or failed), so a CLI or a task can show progress live."""

    phase: Literal["start", "end"]
    step: Step
    index: int
    total: int
    outcome: StepOutcome | None = None


OnStep = Callable[[StepEvent], None]


@dataclass
class RunResult:
    """What `up`/`down` planned and did; plain data for tasks, the CLI and reports."""

    kind: Kind
    direction: Literal["up", "down"]
    dry_run: bool
    planned: list[Step] = field(default_factory=list)
    outcomes: list[StepOutcome] = field(default_factory=list)
    lock_wait_seconds: float = 0.0
    #: owner of a stale (expired) lock this run took over, if any
    lock_taken_over_from: str | None = None

    @property
    def versions_done(self) -> list[str]:
        return [o.version for o in self.outcomes if o.status == "success"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "direction": self.direction, "dry_run": self.dry_run,
                "planned": [s.to_dict() for s in self.planned],
                "outcomes": [o.to_dict() for o in self.outcomes],
                "lock_wait_seconds": round(self.lock_wait_seconds, 3),
                "lock_taken_over_from": self.lock_taken_over_from}


@dataclass
class StatusReport:
    kind: Kind
    target: str
    rows: list[StatusRow]
    lock: LockInfo | None

    def to_dict(self) -> dict[str, Any]:
        lock = None
        if self.lock is not None:
            lock = {"owner": self.lock.owner,
                    "expires_at": self.lock.expires_at.isoformat()
                    if self.lock.expires_at else None}
        return {"kind": self.kind, "target": self.target,
                "rows": [r.to_dict() for r in self.rows], "lock": lock}


@dataclass
class RepairResult:
    kind: Kind
    dry_run: bool
    plan: RepairPlan

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "dry_run": self.dry_run, **self.plan.to_dict()}


# --------------------------------------------------------------------------- the lock


def default_owner() -> str:
    """Who holds the lock: user@host, pid and a run token (two runs in one process differ)."""
    return f"{applied_by()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _HeldLock:
    """The migrations lock while held: renewed in the background, released on exit."""

    def __init__(self, backend: Backend, owner: str, ttl: float) -> None:
        self.backend = backend
        self.owner = owner
        self.ttl = ttl
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread = threading.Thread(target=self._renew, name="migwatch-lock-renewal",
                                        daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.backend.renew_lock(self.owner, self.ttl):
                    self._lost = "another run took it over after it expired"
                    return
            except Exception as exc:  # keep trying until the expiry passes
                log.warning("migrations lock renewal failed owner=%s error_type=%s",
                            self.owner, type(exc).__name__)

    def check(self) -> None:
        """Between steps: stop if the lock was lost, rather than run unprotected."""
        if self._lost:
            raise TransientError(f"migrations lock of {self.owner!r} was lost: {self._lost}")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._lost is not None:
            return
        try:
            self.backend.release_lock(self.owner)
        except Exception as exc:  # never hide the run's own error; the lock expires anyway
            log.warning("migrations lock release failed owner=%s error_type=%s", self.owner,
                        type(exc).__name__)


def acquire_lock(backend: Backend, owner: str, ttl: float,
                 timeout: float) -> tuple[_HeldLock, float, str | None]:
    """Wait up to `timeout` seconds for the lock; a lock past its expiry is taken over.

    Returns the held lock, the seconds waited and the owner of a stale lock taken over.
    """
    start = time.monotonic()
    told = False
    while True:
        attempt = backend.try_lock(owner, ttl)
        waited = time.monotonic() - start
        if attempt.acquired:
            stale = None
            if attempt.previous is not None and attempt.previous.owner != owner:
                stale = attempt.previous.owner
                log.warning("migrations lock taken over from %s (expired %s) target=%s",
                            attempt.previous.owner, attempt.previous.expires_at,
                            backend.describe())
            held = _HeldLock(backend, owner, ttl)
            held._thread.start()
            return held, waited, stale
        if not told:
            told = True
            log.info("migrations lock held by %s (expires %s); waiting up to %.1fs target=%s",
                     attempt.holder.owner if attempt.holder else "unknown",
                     attempt.holder.expires_at if attempt.holder else None, timeout,
                     backend.describe())
        if waited >= timeout:
            holder = attempt.holder
            raise MigrationLocked(holder.owner if holder else "unknown",
                                  holder.expires_at if holder else None, waited)
        time.sleep(min(_LOCK_POLL_SECONDS, max(timeout - waited, 0.01)))


# --------------------------------------------------------------------------- observing


def _metrics_for(kind: Kind) -> tuple[Any, Any]:
    if kind == "sql":
        return metrics.SQL_MIGRATION_DURATION, metrics.SQL_MIGRATION_ERRORS
    return metrics.MONGO_MIGRATION_DURATION, metrics.MONGO_MIGRATION_ERRORS


def _log_fields(kind: Kind, step: Step, **more: Any) -> dict[str, Any]:
    return {"kind": kind, "version": step.version, "direction": step.direction,
            "description": step.migration.description, **more}


def _line(event: str, fields: dict[str, Any]) -> str:
    return event + " " + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    return f'"{text}"' if " " in text or not text else text


def _run_step(backend: Backend, step: Step, who: str,
              notify: Callable[[StepOutcome | None], None] | None = None) -> StepOutcome:
    """One script: its transaction, its history row, its metrics and its two log lines.

    `notify(None)` is called when it starts and `notify(outcome)` when it ends, failed or not.
    """
    kind = backend.kind
    duration, errors = _metrics_for(kind)
    mig = step.migration
    progress = Progress(step.version, metrics.MONGO_MIGRATION_DOCUMENTS
                        if backend.counts_documents else None)
    fields = _log_fields(kind, step, script=(mig.undo_path if step.direction == "down" and
                                             mig.undo_path else mig.path).name)
    log.info(_line("migration.start", fields), extra={"migration": fields})
    if notify is not None:
        notify(None)
    applied_at = datetime.now(UTC)
    start = time.perf_counter()

    def elapsed_ms() -> int:
        return int((time.perf_counter() - start) * 1000)

    def row_for(in_transaction: bool, status: Literal["success", "failed"] = "success",
                error_type: str | None = None) -> HistoryRow:
        return HistoryRow(str(mig.version), mig.description, mig.script, mig.checksum,
                          applied_at, elapsed_ms(), status, who, in_transaction, error_type)

    ok_status, failed_status = ("success", "failed") if step.direction == "up" else (
        "reverted", "revert_failed")
    try:
        in_tx = backend.execute(step, row_for, progress)
    except ScriptFailed as exc:
        seconds = time.perf_counter() - start
        duration.labels(step.version, failed_status).observe(seconds)
        errors.labels(step.version, exc.error_type).inc()
        end = {**fields, "status": failed_status, "duration_ms": int(seconds * 1000),
               "in_transaction": exc.in_transaction, "error_type": exc.error_type}
        log.error(_line("migration.end", end), extra={"migration": end})
        if step.direction == "up" or not exc.in_transaction:
            # an up always leaves a failed row; a down only when nothing rolled it back
            try:
                backend.record(row_for(exc.in_transaction, "failed", exc.error_type))
            except Exception as rec:  # the server may be gone; the raised error says enough
                log.error("migration.history_write_failed version=%s error_type=%s",
                          step.version, type(rec).__name__)
        if notify is not None:
            notify(StepOutcome(step.version, mig.description, step.direction, "failed",
                               int(seconds * 1000), exc.in_transaction,
                               dict(progress.totals), exc.error_type))
        if exc.transient:
            raise TransientError(f"migration {step.version} ({mig.script}) interrupted: "
                                 f"{exc}") from exc
        raise MigrationFailed(step.version, fields["script"], exc.error_type,
                              exc.message) from exc
    seconds = time.perf_counter() - start
    duration.labels(step.version, ok_status).observe(seconds)
    documents = dict(progress.totals)
    end = {**fields, "status": ok_status, "duration_ms": int(seconds * 1000),
           "in_transaction": in_tx}
    if backend.counts_documents:
        end["documents"] = sum(documents.values())
    log.info(_line("migration.end", end), extra={"migration": end})
    outcome = StepOutcome(step.version, mig.description, step.direction, "success",
                          int(seconds * 1000), in_tx, documents)
    if notify is not None:
        notify(outcome)
    return outcome


# --------------------------------------------------------------------------- entry points


def resolve_kind(spec: MigrationSpec) -> Kind:
    """The backend a spec asks for: `migrations.kind`, else the target's kind."""
    if spec.migrations is None:
        raise ConfigError("the spec has no migrations section", field="migrations")
    target = engine_for(spec)
    implied: Kind = target.migrations_kind  # type: ignore[assignment]
    kind = spec.migrations.kind or implied
    if kind != implied:
        raise ConfigError(f"{kind!r} migrations cannot run on a {spec.target.kind} target",
                          field="migrations.kind")
    return kind


def open_backend(spec: MigrationSpec) -> Backend:
    resolve_kind(spec)
    backend: Backend = engine_for(spec).migrations_backend()
    return backend


def load_migrations(spec: MigrationSpec) -> list[Migration]:
    """The spec's folder, discovered (`load_spec` made a relative folder absolute)."""
    kind = resolve_kind(spec)
    assert spec.migrations is not None
    return discover(Path(spec.migrations.folder).expanduser(), kind)


def _parse_target(target_version: str | None) -> Version | None:
    if target_version is None:
        return None
    try:
        return Version.parse(target_version)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix("version: "), field="target_version") from None


class Runner:
    """Runs status/up/down/repair for one spec; the backend is opened per call and closed."""

    def __init__(self, spec: MigrationSpec, *, owner: str | None = None,
                 lock_ttl_seconds: float = DEFAULT_LOCK_TTL_SECONDS,
                 on_step: OnStep | None = None) -> None:
        self.spec = spec
        self.kind = resolve_kind(spec)
        assert spec.migrations is not None
        self.lock_timeout = spec.migrations.lock_timeout_seconds
        self.owner = owner or default_owner()
        self.lock_ttl = lock_ttl_seconds
        self.on_step = on_step

    def status(self) -> StatusReport:
        migrations = load_migrations(self.spec)
        backend = open_backend(self.spec)
        try:
            return StatusReport(self.kind, backend.describe(),
                                status(migrations, backend.history()), backend.lock_holder())
        finally:
            backend.close()

    def up(self, target_version: str | None = None, dry_run: bool = False) -> RunResult:
        target = _parse_target(target_version)
        return self._run("up", lambda migs, hist: plan_up(migs, hist, target), dry_run)

    def down(self, target_version: str | None = None, dry_run: bool = False) -> RunResult:
        target = _parse_target(target_version)
        return self._run("down", lambda migs, hist: plan_down(migs, hist, self.kind, target),
                         dry_run)

    def repair(self, dry_run: bool = False) -> RepairResult:
        migrations = load_migrations(self.spec)
        backend = open_backend(self.spec)
        try:
            if dry_run:
                return RepairResult(self.kind, True, plan_repair(migrations, backend.history()))
            backend.ensure_storage()
            held, _, _ = acquire_lock(backend, self.owner, self.lock_ttl, self.lock_timeout)
            try:
                plan = plan_repair(migrations, backend.history())
                backend.repair(plan)
            finally:
                held.release()
            log.info(_line("migration.repair", {"kind": self.kind, **plan.to_dict()}))
            return RepairResult(self.kind, False, plan)
        finally:
            backend.close()

    def _run(self, direction: Literal["up", "down"], make_plan: Any,
             dry_run: bool) -> RunResult:
        migrations = load_migrations(self.spec)
        backend = open_backend(self.spec)
        try:
            result = RunResult(self.kind, direction, dry_run)
            # planned first without the lock: a refusal (changed checksum) needs no lock
            result.planned = make_plan(migrations, backend.history())
            if dry_run:
                return result
            backend.ensure_storage()
            held, result.lock_wait_seconds, result.lock_taken_over_from = acquire_lock(
                backend, self.owner, self.lock_ttl, self.lock_timeout)
            try:
                # re-planned under the lock: another run may have applied some meanwhile
                result.planned = make_plan(migrations, backend.history())
                who = applied_by()
                total = len(result.planned)
                for index, step in enumerate(result.planned, 1):
                    held.check()
                    result.outcomes.append(_run_step(backend, step, who,
                                                     self._notifier(step, index, total)))
            finally:
                held.release()
            return result
        finally:
            backend.close()


    def _notifier(self, step: Step, index: int,
                  total: int) -> Callable[[StepOutcome | None], None] | None:
        on_step = self.on_step
        if on_step is None:
            return None

        def notify(outcome: StepOutcome | None) -> None:
            try:
                on_step(StepEvent("start" if outcome is None else "end", step, index, total,
                                  outcome))
            except Exception as exc:  # a display problem never stops a migration half way
                log.warning("migrations on_step callback failed error_type=%s",
                            type(exc).__name__)

        return notify


def run_status(spec: MigrationSpec) -> StatusReport:
    """Applied / pending / failed / changed / missing per version, and the lock holder."""
    return Runner(spec).status()


def run_up(spec: MigrationSpec, target_version: str | None = None, dry_run: bool = False,
           **options: Any) -> RunResult:
    """Apply every pending migration (or up to `target_version`); `dry_run` only plans."""
    return Runner(spec, **options).up(target_version, dry_run)


def run_down(spec: MigrationSpec, target_version: str | None = None, dry_run: bool = False,
             **options: Any) -> RunResult:
    """Revert the newest applied migration, or every one above `target_version`."""
    return Runner(spec, **options).down(target_version, dry_run)


def run_repair(spec: MigrationSpec, dry_run: bool = False, **options: Any) -> RepairResult:
    """Accept edited scripts' new checksums and clear failed rows so they can be retried."""
    return Runner(spec, **options).repair(dry_run)


