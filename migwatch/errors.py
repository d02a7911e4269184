"""The exception tree of migwatch.

    MigwatchError                 root: everything migwatch raises on purpose
    ├── ConfigError               bad spec or setting; names the field (never retried)
    ├── TransientError            a server is unreachable or timed out (retried with backoff)
    │   ├── MigrationLocked       another run held the migrations lock past the wait; names it
    │   └── ApplierExited         a local applier exited before it joined; its cause and log tail
    ├── PermanentError            auth, missing table, schema mismatch (never retried)
    │   ├── PreflightError        a pre-flight check failed; lists every failed check
    │   ├── TargetNotEmpty        a fresh migration would load into target tables holding rows
    │   ├── ConnectorFailed       the Debezium connector or its task is FAILED; carries the trace
    │   ├── UnsupportedValue      a value the target cannot hold; names the column
    │   ├── MigrationFailed       a versioned migration failed; names version and script
    │   └── MigrationChanged      an applied migration's script was edited (checksum)
    ├── StackError                a local stack component failed to install or start
    ├── ValidationFailed(report)  the target does not hold the source's data
    ├── GateFailed(reason)        the monitor gate did not pass (timeout or hard maximum)
    ├── NoGo(reasons)             the report's verdict is no-go; lists what blocks the cutover
    └── CutoverError              the cutover did not switch
        ├── CutoverRefused(reasons)   a precondition failed (nothing was frozen)
        ├── HookFailed(step)      a user hook exited non-zero, was unreachable or timed out
        └── CutoverAborted(step)  a step between the freeze and the switch failed; undone

Connectors translate driver exceptions into this tree in one place each (`raise X(...) from exc`),
so callers never see a driver's traceback and tasks can retry on `TransientError` alone.
"""

from __future__ import annotations

from typing import Any


class MigwatchError(Exception):
    """Root of every error migwatch raises on purpose."""

    #: exit code the CLI maps this error class to
    exit_code: int = 2


class ConfigError(MigwatchError):
    """The migration spec or a setting is wrong; `field` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class TransientError(MigwatchError):
    """A server was unreachable or timed out; the same call may succeed later."""


class ApplierExited(TransientError):
    """A local applier process exited before it joined its consumer group.

    The first line names the cause (the last error line of its log), because a run record or a
    report keeps only that line; the rest is the log tail. Transient: a broker or target that was
    briefly away also makes it exit, and a retry starts it again."""

    def __init__(self, migration_id: str, pid: int, log_tail: str) -> None:
        self.migration_id = migration_id
        self.pid = pid
        self.log_tail = log_tail
        lines = [ln.rstrip() for ln in log_tail.splitlines() if ln.strip()]
        self.cause = _last_error_line(lines) or "its log is empty"
        text = (f"applier for {migration_id} (pid {pid}) exited before it joined its consumer "
                f"group: {self.cause}")
        if lines:
            text += "\n  log tail:\n    " + "\n    ".join(lines[-20:])
        super().__init__(text)


def _last_error_line(lines: list[str]) -> str:
    """What says best why a process ended, as one line: from the last `SomeError: ...` line (a
    Python traceback's end, or migwatch's own `error:` line) to the end of the log — an error's
    message may span lines (pydantic names the field on the next one) — else the last line."""
    for i in range(len(lines) - 1, -1, -1):
        text = lines[i].strip()
        head = text.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "error")):
            return " ".join(ln.strip() for ln in lines[i:i + 6])[:300]
    return lines[-1].strip()[:300] if lines else ""


class PermanentError(MigwatchError):
    """Retrying will not help: wrong credentials, a missing table, a schema mismatch."""


class PreflightError(PermanentError):
    """One or more pre-flight checks failed; `failures` lists each, named."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        super().__init__("pre-flight failed: " + "; ".join(self.failures))


class TargetNotEmpty(PermanentError):
    """A migration starting afresh (no connector, no slot) found rows in its target tables;
    `tables` names them. Loading on top would mix old rows with the new snapshot, so it is
    refused unless the run is told to empty them first (`--reset-target`)."""

    def __init__(self, migration_id: str, tables: list[str]) -> None:
        self.migration_id = migration_id
        self.tables = list(tables)
        super().__init__(
            f"migration {migration_id} starts afresh, but target table(s) already hold rows: "
            f"{', '.join(self.tables)}; empty them first with `migwatch run --reset-target` "
            "(flow parameter reset_target=True), or migrate into an empty target")


class ConnectorFailed(PermanentError):
    """The Debezium connector (or one of its tasks) is FAILED; `trace` is the worker's trace."""

    def __init__(self, connector: str, trace: str) -> None:
        self.connector = connector
        self.trace = trace
        first = trace.strip().splitlines()[0] if trace.strip() else "no trace"
        super().__init__(f"connector {connector!r} failed: {first}")


class UnsupportedValue(PermanentError):
    """A source value the target cannot hold (NaN, nested array, dotted key); names the column."""

    def __init__(self, column: str, reason: str) -> None:
        self.column = column
        self.reason = reason
        super().__init__(f"column {column!r}: {reason}")


class MigrationLocked(TransientError):
    """Another run holds the target's migrations lock and did not release it in time."""

    def __init__(self, holder: str, expires_at: Any, waited_seconds: float) -> None:
        self.holder = holder
        self.expires_at = expires_at
        self.waited_seconds = waited_seconds
        super().__init__(
            f"migrations lock is held by {holder!r} (expires {expires_at}); waited "
            f"{waited_seconds:.1f}s (migrations.lock_timeout_seconds)")


class MigrationFailed(PermanentError):
    """A versioned migration failed; earlier ones stay applied. Names the version and script."""

    exit_code = 1

    def __init__(self, version: str, script: str, error_type: str, message: str) -> None:
        self.version = version
        self.script = script
        self.error_type = error_type
        super().__init__(f"migration {version} ({script}) failed: {error_type}: {message}")


class MigrationChanged(PermanentError):
    """Applied migrations whose script changed since; `changed` lists (version, path)."""

    exit_code = 1

    def __init__(self, changed: list[tuple[str, str]]) -> None:
        self.changed = list(changed)
        names = "; ".join(f"version {v} ({path})" for v, path in self.changed)
        super().__init__(
            f"applied migration script changed since it ran: {names}; restore the file, or run "
            "`migwatch migrations repair` to accept the new checksum deliberately")


class StackError(MigwatchError):
    """A local stack component failed to install or start; says which, how, and its log tail."""

    def __init__(self, component: str, message: str, command: str = "", log_tail: str = "") -> None:
        self.component = component
        self.command = command
        self.log_tail = log_tail
        text = f"{component}: {message}"
        if command:
            text += f"\n  command: {command}"
        if log_tail:
            text += "\n  log tail:\n    " + "\n    ".join(log_tail.splitlines()[-20:])
        super().__init__(text)


class ValidationFailed(MigwatchError):
    """The target does not hold the source's data; `report` says where."""

    exit_code = 1

    def __init__(self, report: Any, message: str = "validation failed") -> None:
        self.report = report
        super().__init__(message)


class GateFailed(MigwatchError):
    """The caught-up gate did not pass; `reason` is one line a person can act on."""

    exit_code = 1

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NoGo(MigwatchError):
    """The run's report says no-go; `reasons` are the verdict's blocking problems."""

    exit_code = 1

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("no-go: " + ("; ".join(self.reasons) or "see the report"))


class RunFailed(NoGo):
    """The run could not do its work — the migrate stage failed (a wrong spec or setting, a
    server that refused or was away) — so its report is no-go and the answer is "could not
    tell", not a finding about the data: exit 2."""

    exit_code = 2


def is_transient(exc: BaseException) -> bool:
    """True when a retry may help: the predicate tasks give Prefect's `retry_condition_fn`."""
    return isinstance(exc, TransientError)


class CutoverError(MigwatchError):
    """The cutover did not switch the application to the target."""

    exit_code = 1


class CutoverRefused(CutoverError):
    """A precondition of the cutover failed; nothing was frozen. `reasons` lists each."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("cutover refused: " + "; ".join(self.reasons))


class HookFailed(CutoverError):
    """A user hook of the cutover failed: non-zero exit, unreachable URL, an answer other than
    2xx, or its timeout. `step` names the hook; the message never holds the URL's path."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"hook {step!r} failed: {reason}")


class CutoverAborted(CutoverError):
    """A step between the freeze and the switch failed: the freeze was undone (`undone` says
    what), CDC keeps running, nothing was lost."""

    def __init__(self, step: str, reason: str, undone: list[str]) -> None:
        self.step = step
        self.reason = reason
        self.undone = list(undone)
        super().__init__(f"cutover aborted at {step}: {reason}; undone: "
                         f"{', '.join(self.undone) or 'nothing to undo'} — the source is "
                         "writable again and CDC keeps running")
